"""The Dataflow jobs that `./launch.sh dataflow` would submit, built offline by Beam's own runner code.

Each test takes the exact command launch.sh prints under DRY_RUN, builds that
job with `deploy.dataflow_job` (DataflowRunner translation, `--dry_run`, no
staging) with no network at all, and asserts what the job would carry.
"""

import json
import os

import pytest
from apache_beam.portability import common_urns

from deploy import dataflow_job
from tests.deploy.helpers import REPO, SETTINGS, launch, printed_command

pytestmark = pytest.mark.slow

ACCELERATOR = 'type:nvidia-l4;count:1;install-nvidia-driver'
EXAMPLE = os.path.join(REPO, 'models', 'penguins', 'example', 'penguins.csv')


def _job(bundle, monkeypatch, **settings):
  """The job launch.sh would submit with these settings, described offline."""
  command = printed_command(launch('dataflow', f'--input={EXAMPLE}', f'--model={bundle.path}',
                                   '--output=gs://my-bucket/predictions', env={**SETTINGS, **settings}))
  assert command[1:3] == ['-m', 'pipelines.run'], command
  monkeypatch.chdir(REPO)  # launch.sh runs from the repository root (setup_file=./setup.py)
  job = dataflow_job.describe_job(command[3:], bundle=bundle)
  return job, json.loads(job.json())


def _pool(body):
  pool, = body['environment']['workerPools']
  return pool


def _options(body):
  return body['environment']['sdkPipelineOptions']['options']


def test_gpu_job__carries_accelerator_image_and_shared_model(penguin_bundle, monkeypatch, offline):
  _, body = _job(penguin_bundle, monkeypatch, DEVICE='gpu')
  env, pool, options = body['environment'], _pool(body), _options(body)

  assert env['serviceOptions'] == [f'worker_accelerator={ACCELERATOR}']
  assert pool['machineType'] == 'g2-standard-4'
  assert pool['autoscalingSettings']['maxNumWorkers'] == 4
  images = {image['containerImage'] for image in pool['sdkHarnessContainerImages']}
  assert images == {SETTINGS['IMAGE']}
  assert env['tempStoragePrefix'].startswith('storage.googleapis.com/my-bucket/tmp/')
  assert env['serviceAccountEmail'] == SETTINGS['SERVICE_ACCOUNT']
  # Packaging is the image: no setup.py sdist is staged for the workers to install.
  assert 'setup_file' not in options
  assert 'workflow.tar.gz' not in [p['name'] for p in pool['packages']]
  # One model copy per GPU: an SDK process per vCPU, the model shared across them.
  assert 'use_multiple_sdk_containers' in env['experiments']
  assert 'no_use_multiple_sdk_containers' not in env['experiments']
  assert options['share_model_across_processes'] is True
  assert options['device'] == 'gpu'
  assert options['project'] == 'my-project' and options['region'] == 'europe-west4'
  assert body['type'] == 'JOB_TYPE_BATCH'


def test_cpu_job_without_image__ships_the_package_with_setup_py(penguin_bundle, monkeypatch, offline):
  _, body = _job(penguin_bundle, monkeypatch, IMAGE='')
  env, pool, options = body['environment'], _pool(body), _options(body)

  assert 'serviceOptions' not in env
  assert pool['machineType'] == 'n2-standard-4'
  assert options['device'] == 'cpu'
  assert options['share_model_across_processes'] is True  # the default for a SavedModel, chosen at launch
  assert options['setup_file'] == './setup.py'
  assert 'workflow.tar.gz' in [p['name'] for p in pool['packages']]
  images = {image['containerImage'] for image in pool['sdkHarnessContainerImages']}
  assert all('beam_python3' in image and image.endswith(':2.77.0') for image in images), images


def test_gpu_on_predict_only__hints_the_accelerator_on_the_predict_step(penguin_bundle, monkeypatch, offline):
  job, body = _job(penguin_bundle, monkeypatch, DEVICE='gpu', GPU_SCOPE='predict')
  assert 'serviceOptions' not in body['environment']

  components = job.proto_pipeline.components
  urn = common_urns.resource_hints.ACCELERATOR.urn
  hinted = {label: components.environments[t.environment_id].resource_hints.get(urn)
            for label, t in ((t.unique_name, t) for t in components.transforms.values()) if t.environment_id}
  in_predict = lambda label: label == 'Predict' or label.startswith('Predict/')  # noqa: E731
  predict = {label: hint for label, hint in hinted.items() if in_predict(label)}
  others = {label: hint for label, hint in hinted.items() if not in_predict(label)}
  assert predict and all(hint == ACCELERATOR.encode() for hint in predict.values()), predict
  assert others and not any(others.values()), {k: v for k, v in others.items() if v}


def test_one_sdk_process_per_vm__loads_the_model_in_that_process(penguin_bundle, monkeypatch, offline):
  _, body = _job(penguin_bundle, monkeypatch, DEVICE='gpu', ONE_SDK_PROCESS_PER_VM='1')
  env, options = body['environment'], _options(body)
  assert 'no_use_multiple_sdk_containers' in env['experiments']
  assert 'use_multiple_sdk_containers' not in env['experiments']
  assert options['share_model_across_processes'] is False


def test_describe_job__refuses_a_local_temp_location_before_beam_looks_for_a_bucket(penguin_bundle, offline):
  with pytest.raises(ValueError, match='--temp_location must be a gs:// path'):
    dataflow_job.describe_job([f'--input={EXAMPLE}', f'--model={penguin_bundle.path}', '--output=gs://b/o',
                               '--project=my-project', '--region=us-central1'], bundle=penguin_bundle)


def test_main__writes_the_job_file(penguin_bundle, tmp_path, monkeypatch, offline, capsys):
  monkeypatch.chdir(REPO)
  job_file = tmp_path / 'job.json'
  code = dataflow_job.main([f'--input={EXAMPLE}', f'--model={penguin_bundle.path}', '--output=gs://my-bucket/o',
                            '--project=my-project', '--region=us-central1', '--temp_location=gs://my-bucket/tmp',
                            f'--sdk_container_image={SETTINGS["IMAGE"]}', '--job_name=nightly',
                            f'--dataflow_job_file={job_file}'])
  assert code == 0
  body = json.loads(job_file.read_text())
  assert body['name'] == 'nightly'
  assert 'not submitted' in capsys.readouterr().out


def test_main__without_a_job_file__says_which_flag_is_missing(capsys):
  assert dataflow_job.main(['--input=x']) == 2
  assert '--dataflow_job_file' in capsys.readouterr().err


def _top_level_steps(proto) -> set[str]:
  return {t.unique_name for t in proto.components.transforms.values() if t.unique_name.count('/') == 0}


@pytest.mark.parametrize('source', ['--input=bq://my-project.sales.observations',
                                    '--input_query=SELECT * FROM `my-project.sales.observations` WHERE day = @d'])
def test_bigquery_job__is_described_without_contacting_google_cloud(penguin_bundle, monkeypatch, offline, source):
  """Tables in and out: no table is checked, no query runs, no read session opens (the `offline`
  fixture refuses every connection), and the job still ends in its own count-and-publish steps."""
  monkeypatch.chdir(REPO)
  job = dataflow_job.describe_job(
      [source, f'--model={penguin_bundle.path}', '--output=bq://my-project.sales.predictions', '--key_column=id',
       '--passthrough_columns=region', '--bq_temp_dataset=my-project.tmp', '--project=my-project',
       '--region=us-central1', '--temp_location=gs://my-bucket/tmp', '--run_id=nightly'], bundle=penguin_bundle)
  steps = _top_level_steps(job.proto_pipeline)
  assert {'Read', 'Validate', 'Features', 'Predict', 'WritePredictions', 'WriteDeadLetters', 'Count',
          'Finish'} <= steps
  labels = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
  assert 'Finish/Publish' in labels and 'Read/Source/Streams' in labels


def test_same_final_steps__on_the_direct_runner_and_in_the_dataflow_job(penguin_bundle, monkeypatch, offline):
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions

  from pipelines.graph.batch_inference import build_pipeline
  from pipelines.launcher.resolve import resolve

  monkeypatch.chdir(REPO)
  argv = [f'--input={EXAMPLE}', f'--model={penguin_bundle.path}', '--output=gs://my-bucket/o', '--project=my-project',
          '--region=us-central1', '--temp_location=gs://my-bucket/tmp', '--run_id=same']
  described = _top_level_steps(dataflow_job.describe_job(argv, bundle=penguin_bundle).proto_pipeline)
  options = PipelineOptions(argv)
  plan, _ = resolve(options, offline=True, bundle=penguin_bundle)
  pipeline = beam.Pipeline(options=options)
  build_pipeline(pipeline, plan)
  direct = _top_level_steps(pipeline.to_runner_api())
  assert {'Count', 'Finish'} <= direct and direct == described


def test_rollout_flags__are_described_offline_with_their_steps(penguin_bundle, monkeypatch, offline):
  """--challenger, --gate and --only_unscored build into the Dataflow job without contacting Google Cloud."""
  monkeypatch.chdir(REPO)
  argv = [f'--input={EXAMPLE}', f'--model={penguin_bundle.path}', '--output=gs://my-bucket/o', '--project=my-project',
          '--region=us-central1', '--temp_location=gs://my-bucket/tmp', '--run_id=rollout',
          f'--challenger={penguin_bundle.path}', '--segment_column=island', '--gate=agreement>=0.97,rejected_rate<=0.01',
          '--key_column=island', '--only_unscored']
  proto = dataflow_job.describe_job(argv, bundle=penguin_bundle).proto_pipeline
  assert {'CompareModels', 'Digest', 'Count', 'Finish'} <= _top_level_steps(proto)
  labels = {t.unique_name for t in proto.components.transforms.values()}  # skipping is the read step's, and so on
  assert {'Read/ScoredKeys', 'Read/SkipScored', 'WritePredictions/WriteKeysScored'} <= labels
