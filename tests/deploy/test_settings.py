"""deploy/settings.py: the settings read from the environment and .env, their defaults and checks,
and the launch environment spelled three ways from one table."""

import dataclasses
import datetime
import os
import subprocess

import pytest

from deploy import settings as deploy_settings
from deploy.settings import Settings, SettingsError
from tests.deploy.helpers import REPO


def _load(tmp_path, text, environ=None):
  env_file = tmp_path / '.env'
  env_file.write_text(text)
  warnings = []
  return deploy_settings.load(environ or {}, str(env_file), warn=warnings.append), warnings


def test_env_file__reads_name_value_lines_as_written(tmp_path):
  settings, warnings = _load(tmp_path, (
      '# a comment\n'
      '\n'
      'PROJECT="my-project"\n'
      "BUCKET='my-bucket'\n"
      'SCHEDULE="30 1 * * 1-5"\n'
      'IMAGE=europe-docker.pkg.dev/p/r/batch-inference:1=x\n'
      'SERVICE_ACCOUNT="runner@p.iam.gserviceaccount.com\'\n'  # one quote off each end, whichever
      'REGION=\n'  # empty: the next value or the default counts
      'REGION=europe-west4\n'
      'MAX_WORKERS=9\n'
      'MAX_WORKERS=12\n'  # the first value counts
      'OTHER=x\n'
      'export DEVICE=gpu\n'  # not a setting name: nothing of .env is executed
      'TIME_ZONE'  # no '=' and no final newline
  ))
  assert settings.project == 'my-project' and settings.bucket == 'my-bucket'
  assert settings.schedule == '30 1 * * 1-5'
  assert settings.image == 'europe-docker.pkg.dev/p/r/batch-inference:1=x'
  assert settings.service_account == 'runner@p.iam.gserviceaccount.com'
  assert settings.region == 'europe-west4'
  assert settings.max_workers == '9'
  assert settings.device == 'cpu' and settings.time_zone == 'Etc/UTC'
  env_file = tmp_path / '.env'
  assert warnings == [f'{env_file}: ignoring unknown setting OTHER',
                      f'{env_file}: ignoring unknown setting export DEVICE',
                      f"{env_file}: ignoring 'TIME_ZONE', which is not NAME=VALUE"]


def test_environment__wins_over_env_file_unless_empty(tmp_path):
  settings, _ = _load(tmp_path, 'PROJECT=from-file\nBUCKET=file-bucket\nDEVICE=gpu\n',
                      environ={'PROJECT': 'from-env', 'BUCKET': '', 'UNRELATED': 'x'})
  assert (settings.project, settings.bucket, settings.device) == ('from-env', 'file-bucket', 'gpu')


def test_missing_env_file__leaves_the_environment_and_defaults(tmp_path):
  settings = deploy_settings.load({'PROJECT': 'p'}, str(tmp_path / 'none.env'))
  assert settings == Settings.from_values({'PROJECT': 'p'})


def test_defaults__machine_follows_device_and_template_follows_bucket():
  cpu = Settings.from_values({})
  assert (cpu.region, cpu.device, cpu.gpu_type, cpu.machine_type, cpu.max_workers, cpu.gpu_scope,
          cpu.one_sdk_process_per_vm, cpu.schedule, cpu.time_zone) == (
              'us-central1', 'cpu', 'nvidia-l4', 'n2-standard-4', '4', 'job', '0', '0 2 * * *', 'Etc/UTC')
  assert cpu.template == 'gs://BUCKET/templates/batch-inference.json'
  gpu = Settings.from_values({'DEVICE': 'gpu', 'BUCKET': 'b'})
  assert gpu.machine_type == 'g2-standard-4'
  assert gpu.template == 'gs://b/templates/batch-inference.json'
  given = Settings.from_values({'DEVICE': 'gpu', 'MACHINE_TYPE': 'n1-standard-8', 'TEMPLATE': 'gs://t/x.json'})
  assert (given.machine_type, given.template) == ('n1-standard-8', 'gs://t/x.json')
  assert deploy_settings.NAMES == tuple(Settings.from_values({}).as_environment())
  assert 'ONE_SDK_PROCESS_PER_VM' in deploy_settings.NAMES


@pytest.mark.parametrize('values, message', [
    ({'DEVICE': 'tpu'}, 'DEVICE must be cpu or gpu, not tpu'),
    ({'GPU_SCOPE': 'step'}, 'GPU_SCOPE must be job or predict, not step'),
    ({'PROJECT': 'p\nBUCKET=elsewhere'}, 'PROJECT holds a line break; a setting is one line'),
])
def test_invalid_value__is_refused_with_the_reason(values, message):
  with pytest.raises(SettingsError, match=f'^{message}$'):
    Settings.from_values(values)


def test_require__names_every_missing_setting_and_where_to_set_it():
  settings = Settings.from_values({'BUCKET': 'b'})
  with pytest.raises(SettingsError) as raised:
    settings.require('PROJECT', 'BUCKET', 'IMAGE')
  assert str(raised.value) == ('set PROJECT IMAGE in the environment or in .env '
                               '(./launch.sh help lists the settings)')
  settings.require('BUCKET', 'REGION')  # set, or defaulted
  with pytest.raises(SettingsError, match='^DEVICE=gpu needs IMAGE: GPU workers run the project image'):
    Settings.from_values({'PROJECT': 'p', 'BUCKET': 'b', 'DEVICE': 'gpu'}).require_dataflow()
  Settings.from_values({'PROJECT': 'p', 'BUCKET': 'b', 'DEVICE': 'gpu', 'IMAGE': 'i'}).require_dataflow()


def test_launch_environment__one_table_three_spellings():
  settings = Settings.from_values({'BUCKET': 'b', 'SERVICE_ACCOUNT': 'sa@p', 'MAX_WORKERS': '7'})
  beam, gcloud, api = (deploy_settings.launch_environment(settings, spelling) for spelling in ('beam', 'gcloud', 'api'))
  assert beam == [('temp_location', 'gs://b/tmp'), ('staging_location', 'gs://b/staging'),
                  ('service_account_email', 'sa@p'), ('machine_type', 'n2-standard-4'), ('max_num_workers', '7')]
  assert gcloud == [('temp-location', 'gs://b/tmp'), ('staging-location', 'gs://b/staging'),
                    ('service-account-email', 'sa@p'), ('worker-machine-type', 'n2-standard-4'), ('max-workers', '7')]
  assert api == [('tempLocation', 'gs://b/tmp'), ('stagingLocation', 'gs://b/staging'),
                 ('serviceAccountEmail', 'sa@p'), ('machineType', 'n2-standard-4'), ('maxWorkers', '7')]
  without_account = dataclasses.replace(settings, service_account='')
  assert [name for name, _ in deploy_settings.launch_environment(without_account, 'api')] == [
      'tempLocation', 'stagingLocation', 'machineType', 'maxWorkers']
  with pytest.raises(ValueError):
    deploy_settings.launch_environment(settings, 'terraform')


@pytest.mark.parametrize('values, expected', [
    ({}, ['setup_file=./setup.py', 'device=cpu']),  # sharing: the flag's default, by device and model
    ({'DEVICE': 'gpu', 'IMAGE': 'img'},
     ['sdk_container_image=img', 'device=gpu',
      'dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver']),
    ({'DEVICE': 'gpu', 'IMAGE': 'img', 'GPU_SCOPE': 'predict', 'GPU_TYPE': 'nvidia-tesla-t4'},
     ['sdk_container_image=img', 'device=gpu',
      'inference_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver']),
    ({'ONE_SDK_PROCESS_PER_VM': '1'},
     ['setup_file=./setup.py', 'device=cpu', 'experiments=no_use_multiple_sdk_containers',
      'share_model_across_processes=false']),
])
def test_worker_options__image_accelerator_and_model_sharing(values, expected):
  options = deploy_settings.worker_options(Settings.from_values({'BUCKET': 'b', **values}))
  assert [f'{name}={value}' for name, value in options] == expected
  flags = deploy_settings.beam_flags(Settings.from_values({'BUCKET': 'b', **values}))
  assert flags[0] == '--temp_location=gs://b/tmp' and flags[-len(expected):] == [f'--{o}' for o in expected]


def test_template_parameters__worker_options_then_the_flags_given():
  settings = Settings.from_values({'BUCKET': 'b', 'IMAGE': 'img'})
  parameters = deploy_settings.template_parameters(settings, ['--input=gs://in/*.csv', '--passthrough_columns=a,b'])
  assert parameters == [('sdk_container_image', 'img'), ('device', 'cpu'), ('wait_for_job', 'false'),
                        ('input', 'gs://in/*.csv'), ('passthrough_columns', 'a,b')]
  assert deploy_settings.gcloud_parameters(parameters[-2:]) == (
      '--parameters=^~^input=gs://in/*.csv~passthrough_columns=a,b')
  for bad in ('--input', 'input=x', '-i=x'):
    with pytest.raises(SettingsError, match=f'^pass template parameters as --name=value, not {bad}$'):
      deploy_settings.template_parameters(settings, [bad])


def test_launch_request__environment_fields_as_the_api_types_them():
  settings = Settings.from_values({'PROJECT': 'p', 'BUCKET': 'b', 'MAX_WORKERS': '12'})
  request = deploy_settings.launch_request(settings, 'nightly', [('input', 'gs://in'), ('device', 'cpu')])
  assert request == {'launchParameter': {
      'jobName': 'nightly', 'containerSpecGcsPath': 'gs://b/templates/batch-inference.json',
      'environment': {'tempLocation': 'gs://b/tmp', 'stagingLocation': 'gs://b/staging',
                      'machineType': 'n2-standard-4', 'maxWorkers': 12},
      'parameters': {'input': 'gs://in', 'device': 'cpu'}}}


def test_job_name__is_unique_to_the_second_in_utc():
  moment = datetime.datetime(2026, 11, 29, 2, 3, 4, tzinfo=datetime.timezone.utc)
  assert deploy_settings.job_name(moment) == 'batch-inference-20261129-020304'


def _cli(*args, env):
  """Runs the script as launch.sh does, from the repository; -S: with the standard library only."""
  clean = {'PATH': os.environ['PATH'], **env}
  return subprocess.run(['python3', '-S', 'deploy/settings.py', *args], cwd=REPO, env=clean, capture_output=True,
                        text=True, timeout=60, check=False)


def test_cli__resolves_the_env_file_and_the_views_read_the_environment(tmp_path):
  env_file = tmp_path / 'settings.env'
  env_file.write_text('PROJECT=p\nBUCKET=b\nDEVICE=gpu\nOTHER=x\n')
  resolved = _cli('resolve', env={'ENV_FILE': str(env_file), 'IMAGE': 'img'})
  assert resolved.returncode == 0, resolved.stderr
  environment = dict(line.split('=', 1) for line in resolved.stdout.splitlines())
  assert list(environment) == list(deploy_settings.NAMES)
  assert environment['PROJECT'] == 'p' and environment['MACHINE_TYPE'] == 'g2-standard-4'
  assert environment['SCHEDULE'] == '0 2 * * *'
  assert resolved.stderr == f'{env_file}: ignoring unknown setting OTHER\n'
  # What launch.sh exports; the views then read no file at all.
  flags = _cli('beam-flags', env={**environment, 'ENV_FILE': '/nonexistent'})
  assert flags.returncode == 0 and flags.stderr == ''
  assert '--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver' in (
      flags.stdout.splitlines())
  gcloud = _cli('launch-environment', 'gcloud', env=environment).stdout.splitlines()
  assert _cli('gcloud-parameters', '--input=gs://in', env=environment).stdout.startswith(
      '--parameters=^~^sdk_container_image=img~device=gpu~')
  assert gcloud == ['--temp-location=gs://b/tmp', '--staging-location=gs://b/staging',
                    '--worker-machine-type=g2-standard-4', '--max-workers=4']
  missing = _cli('require', '--dataflow', 'SERVICE_ACCOUNT', env={**environment, 'IMAGE': ''})
  assert missing.returncode == 2 and missing.stderr.startswith('DEVICE=gpu needs IMAGE')
  refused = _cli('resolve', env={'DEVICE': 'tpu', 'ENV_FILE': os.devnull})
  assert refused.returncode == 2 and refused.stderr == 'DEVICE must be cpu or gpu, not tpu\n'
  bad = _cli('gcloud-parameters', '--input', env=environment)
  assert bad.returncode == 2 and bad.stdout == '' and '--name=value' in bad.stderr



def test_describe__names_every_setting_with_the_default_it_takes():
  text = deploy_settings.describe()
  defaults = Settings.from_values({})
  gpu = Settings.from_values({'DEVICE': 'gpu', 'BUCKET': 'b'})
  for name, value in defaults.as_environment().items():
    assert name in text, name
    if value and name not in ('MACHINE_TYPE', 'TEMPLATE'):  # those two depend on other settings
      assert value in text, (name, value)
  assert f'{gpu.machine_type} with a GPU, {defaults.machine_type} without' in text
  assert gpu.template.replace('gs://b/', 'gs://$BUCKET/') in text
  help_text = subprocess.run([os.path.join(REPO, 'launch.sh'), 'help'], capture_output=True, text=True, check=True).stdout
  assert ' '.join(text.split()) in ' '.join(help_text.split())  # ./launch.sh help shows it, wrapped
