"""launch.sh: lint-clean, a usage text per verb, settings from the environment or .env, and the
exact cloud commands it would run (DRY_RUN=1 prints them; nothing is called)."""

import json
import os
import subprocess

import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from deploy import template_metadata
from tests.deploy.helpers import REPO, SETTINGS, launch, printed_command, tool

CLOUD_VERBS = ('dataflow', 'image', 'template', 'run-template', 'schedule', 'k8s')
# Beam options that launches pass without the template declaring them.
BEAM_PARAMETERS = {'sdk_container_image', 'dataflow_service_options', 'experiments'}


def test_launch_sh__passes_shellcheck():
  result = subprocess.run([tool('shellcheck'), '--severity=style', os.path.join(REPO, 'launch.sh')],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize('verb', CLOUD_VERBS)
def test_every_cloud_verb__has_its_own_usage(verb):
  result = launch(verb, '--help', dry_run=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith(f'Usage: ./launch.sh {verb}'), result.stdout


def test_help__lists_every_verb_and_setting():
  result = launch('help', dry_run=False)
  for word in (*CLOUD_VERBS, 'demo', 'test', *SETTINGS, 'DEVICE', 'GPU_TYPE', 'MAX_WORKERS', 'DRY_RUN'):
    assert word in result.stdout, word


@pytest.mark.parametrize('verb', ['dataflow', 'image', 'template', 'run-template', 'schedule'])
def test_cloud_verbs__name_the_missing_settings(verb):
  result = launch(verb, env={'BUCKET': 'my-bucket'})
  assert result.returncode == 2
  assert 'PROJECT' in result.stderr and '.env' in result.stderr


def test_gpu_without_image__is_refused_with_a_reason():
  result = launch('dataflow', '--input=x', env={'PROJECT': 'p-1', 'BUCKET': 'my-bucket', 'DEVICE': 'gpu'})
  assert result.returncode == 2
  assert 'DEVICE=gpu needs IMAGE' in result.stderr


def test_settings__come_from_env_file_and_the_environment_wins(tmp_path):
  env_file = tmp_path / 'settings.env'
  env_file.write_text('# comment\nPROJECT="from-file"\nBUCKET=file-bucket\nMAX_WORKERS=9\nOTHER=x\n')
  result = launch('dataflow', '--input=x', env={'ENV_FILE': str(env_file), 'PROJECT': 'from-env'})
  command = printed_command(result)
  assert '--project=from-env' in command
  assert '--temp_location=gs://file-bucket/tmp' in command
  assert '--max_num_workers=9' in command
  assert 'ignoring unknown setting OTHER' in result.stderr


def _parameters(command: list[str]) -> dict[str, str]:
  flag, = [arg for arg in command if arg.startswith('--parameters=')]
  spec = flag[len('--parameters='):]
  assert spec.startswith('^~^')
  return dict(item.split('=', 1) for item in spec[3:].split('~'))


def test_run_template__passes_settings_as_launch_flags_and_parameters():
  command = printed_command(launch(
      'run-template', '--input=gs://in/*.parquet', '--model=gs://m/penguins', '--output=gs://out',
      '--passthrough_columns=species,year', env={**SETTINGS, 'DEVICE': 'gpu'}))
  assert command[:4] == ['gcloud', 'dataflow', 'flex-template', 'run']
  assert '--template-file-gcs-location=gs://my-bucket/templates/batch-inference.json' in command
  assert '--worker-machine-type=g2-standard-4' in command
  assert '--temp-location=gs://my-bucket/tmp' in command
  assert f'--service-account-email={SETTINGS["SERVICE_ACCOUNT"]}' in command
  params = _parameters(command)
  assert params['dataflow_service_options'] == 'worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver'
  assert params['sdk_container_image'] == SETTINGS['IMAGE']
  assert params['passthrough_columns'] == 'species,year'
  assert params['device'] == 'gpu'
  assert params['wait_for_job'] == 'false'  # the launcher returns once the job is submitted
  declared = {p['name'] for p in template_metadata.parameters()}
  assert set(params) <= declared | BEAM_PARAMETERS
  # Every parameter is an option the launcher's Beam parser knows.
  parsed = PipelineOptions([f'--{k}={v}' for k, v in params.items()]).get_all_options(retain_unknown_options=True)
  assert parsed['input'] == 'gs://in/*.parquet' and parsed['sdk_container_image'] == SETTINGS['IMAGE']


def test_run_template__rejects_a_flag_without_value():
  result = launch('run-template', '--input', 'gs://x', env=SETTINGS)
  assert result.returncode == 2
  assert '--name=value' in result.stderr


def test_schedule__creates_a_scheduler_job_that_posts_the_launch_request():
  command = printed_command(launch('schedule', '--cron=30 1 * * 1-5', '--input=gs://in/*.csv',
                                   '--model=gs://m/penguins', '--output=gs://out', env={**SETTINGS, 'DEVICE': 'gpu'}))
  assert command[:5] == ['gcloud', 'scheduler', 'jobs', 'create', 'http']
  assert '--schedule=30 1 * * 1-5' in command
  assert ('--uri=https://dataflow.googleapis.com/v1b3/projects/my-project/locations/europe-west4/'
          'flexTemplates:launch') in command
  assert f'--oauth-service-account-email={SETTINGS["SERVICE_ACCOUNT"]}' in command
  body_flag, = [arg for arg in command if arg.startswith('--message-body-from-file=')]
  with open(os.path.join(REPO, body_flag.split('=', 1)[1]), encoding='utf-8') as f:
    launch_parameter = json.load(f)['launchParameter']
  assert launch_parameter['containerSpecGcsPath'] == 'gs://my-bucket/templates/batch-inference.json'
  assert launch_parameter['environment'] == {
      'tempLocation': 'gs://my-bucket/tmp', 'stagingLocation': 'gs://my-bucket/staging',
      'serviceAccountEmail': SETTINGS['SERVICE_ACCOUNT'], 'machineType': 'g2-standard-4', 'maxWorkers': 4}
  params = launch_parameter['parameters']
  assert params['input'] == 'gs://in/*.csv' and params['device'] == 'gpu'
  assert params['wait_for_job'] == 'false'
  assert params['dataflow_service_options'].startswith('worker_accelerator=type:nvidia-l4;count:1')
  assert 'run_id' not in params  # each scheduled run makes its own


@pytest.mark.parametrize('kind', ['job', 'cronjob'])
def test_k8s__renders_a_gpu_pod_with_workload_identity_and_the_flags(kind):
  result = launch('k8s', kind, '--input=gs://in/*.parquet', '--output=gs://out', '--passthrough_columns=a,b',
                  env={**SETTINGS, 'SCHEDULE': '0 4 * * *'}, dry_run=False)
  assert result.returncode == 0, result.stderr
  account, workload = yaml.safe_load_all(result.stdout)
  assert account['metadata']['annotations']['iam.gke.io/gcp-service-account'] == SETTINGS['SERVICE_ACCOUNT']
  job_spec = workload['spec']['jobTemplate']['spec'] if kind == 'cronjob' else workload['spec']
  pod = job_spec['template']['spec']
  container, = pod['containers']
  assert pod['serviceAccountName'] == account['metadata']['name']
  assert pod['nodeSelector'] == {'cloud.google.com/gke-accelerator': 'nvidia-l4'}
  assert container['image'] == SETTINGS['IMAGE']
  assert container['resources']['limits']['nvidia.com/gpu'] == '1'
  assert container['command'] == ['python', '-m', 'pipelines.run']
  assert container['args'][-3:] == ['--input=gs://in/*.parquet', '--output=gs://out', '--passthrough_columns=a,b']
  assert '--device=gpu' in container['args']
  if kind == 'cronjob':
    assert workload['spec']['schedule'] == '0 4 * * *'
    assert workload['spec']['concurrencyPolicy'] == 'Forbid'


def test_k8s__names_a_missing_setting():
  result = launch('k8s', 'job', '--input=x', env={'IMAGE': 'img'}, dry_run=False)
  assert result.returncode == 2
  assert 'SERVICE_ACCOUNT' in result.stderr


def test_status__reads_the_summary_a_run_published_and_says_when_there_is_none(tmp_path):
  from transforms.files import publish
  summary = {'run_id': 'r1', 'attempt': publish.new_attempt(), 'model': {'name': 'm', 'version': '1', 'path': 'b'},
             'input': 'in', 'output': 'out', 'dead_letter': 'out', 'runner': 'DataflowRunner', 'state': 'DONE',
             'started_at': '2026-11-29T02:00:00+00:00', 'wall_seconds': 60.0, 'rows_read': 10, 'rows_predicted': 9,
             'rows_rejected': 1, 'rejected_by_reason': {'missing_value': 1}, 'files_read': 1}
  publish.switch_pointer(str(tmp_path), 'r1', summary)
  done = launch('status', 'r1', f'--output={tmp_path}', dry_run=False)
  assert done.returncode == 0, done.stderr
  assert 'Run r1: DONE on DataflowRunner' in done.stdout and 'read = predicted + rejected: yes' in done.stdout
  missing = launch('status', 'r2', f'--output={tmp_path}', dry_run=False)
  assert missing.returncode == 2 and f'no run r2 under {tmp_path}' in missing.stderr
  assert launch('status', dry_run=False).returncode == 2
