"""The cloud verbs' settings: read, checked, and spelled for each way of launching a job.

Standard library only, like render.py, so `./launch.sh` runs it with the system python3 and
the cloud verbs need no virtualenv.

  python3 deploy/settings.py resolve                          # every setting, NAME=VALUE a line
  python3 deploy/settings.py require [--dataflow] [NAME...]   # fails, naming what is missing
  python3 deploy/settings.py beam-flags                       # --option=value for DataflowRunner
  python3 deploy/settings.py launch-environment gcloud|api    # the same, as gcloud flags or API fields
  python3 deploy/settings.py gcloud-parameters [--name=value...]
  python3 deploy/settings.py launch-request JOB_NAME [--name=value...]   # Cloud Scheduler's body
  python3 deploy/settings.py job-name
  python3 deploy/settings.py describe                         # the settings and defaults, for ./launch.sh help

`resolve` reads the environment, then the `.env` file (ENV_FILE, default .env; the
environment wins), fills in the defaults and checks them; launch.sh exports what it prints,
so every other command reads the settings from the environment alone.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
import textwrap
from typing import Callable, Mapping, Optional, Sequence


class SettingsError(ValueError):
  """A setting is missing or invalid; the message says which and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Settings:
  """Where and on what a job runs. Each field is the setting named by its name in capitals."""
  project: str = ''
  region: str = 'us-central1'
  bucket: str = ''
  image: str = ''
  service_account: str = ''
  device: str = dataclasses.field(default='cpu', metadata={'choices': 'cpu|gpu'})
  gpu_type: str = 'nvidia-l4'
  machine_type: str = dataclasses.field(default='', metadata={'default': 'g2-standard-4 with a GPU, n2-standard-4 without'})
  max_workers: str = '4'
  gpu_scope: str = dataclasses.field(default='job', metadata={'choices': 'job|predict'})
  one_sdk_process_per_vm: str = dataclasses.field(default='0', metadata={'choices': '0|1'})
  template: str = dataclasses.field(default='', metadata={'default': 'gs://$BUCKET/templates/batch-inference.json'})
  schedule: str = dataclasses.field(default='0 2 * * *', metadata={'quoted': True})
  time_zone: str = 'Etc/UTC'

  @classmethod
  def from_values(cls, values: Mapping[str, str]) -> Settings:
    """The settings in `values` (by NAME); an empty or missing one takes its default."""
    given = {f.name: values.get(f.name.upper()) or f.default for f in dataclasses.fields(cls)}
    if not given['machine_type']:
      given['machine_type'] = 'g2-standard-4' if given['device'] == 'gpu' else 'n2-standard-4'
    if not given['template']:
      given['template'] = f'gs://{given["bucket"] or "BUCKET"}/templates/batch-inference.json'
    settings = cls(**given)
    for name, value in settings.as_environment().items():
      if '\n' in value:
        raise SettingsError(f'{name} holds a line break; a setting is one line')
    if settings.device not in ('cpu', 'gpu'):
      raise SettingsError(f'DEVICE must be cpu or gpu, not {settings.device}')
    if settings.gpu_scope not in ('job', 'predict'):
      raise SettingsError(f'GPU_SCOPE must be job or predict, not {settings.gpu_scope}')
    return settings

  def as_environment(self) -> dict[str, str]:
    """NAME: value for every setting."""
    return {name.upper(): value for name, value in dataclasses.asdict(self).items()}

  def require(self, *names: str) -> None:
    """Fails, naming every one of `names` that is not set."""
    values = self.as_environment()
    missing = [name for name in names if not values[name]]
    if missing:
      raise SettingsError(f'set {" ".join(missing)} in the environment or in .env '
                          '(./launch.sh help lists the settings)')

  def require_dataflow(self) -> None:
    """Fails unless a Dataflow job can be launched with these settings."""
    self.require('PROJECT', 'BUCKET')
    if self.device == 'gpu' and not self.image:
      raise SettingsError('DEVICE=gpu needs IMAGE: GPU workers run the project image (./launch.sh image builds it)')


NAMES = tuple(f.name.upper() for f in dataclasses.fields(Settings))


def describe() -> str:
  """Every setting with its choices and default, in one paragraph, for `./launch.sh help`."""
  parts = []
  for field in dataclasses.fields(Settings):
    default = field.metadata.get('default') or field.default
    if default and field.metadata.get('quoted'):
      default = f"'{default}'"
    shown = ', '.join(x for x in (field.metadata.get('choices'), default) if x)
    parts.append(f'{field.name.upper()} ({shown})' if shown else field.name.upper())
  return ', '.join(parts) + '.'


def read_env_file(path: str, warn: Callable[[str], None]) -> dict[str, str]:
  """The NAME=VALUE lines of a .env file, read and never executed.

  Blank lines and lines starting with # are skipped; one quote (' or ") is taken off
  each end of a value; an unknown NAME is reported to `warn` and ignored. The first
  non-empty value of a NAME counts.
  """
  values: dict[str, str] = {}
  with open(path, encoding='utf-8') as f:
    for line in f.read().splitlines():
      if not line or line.startswith('#'):
        continue
      name, sep, value = line.partition('=')
      if not sep:
        warn(f'{path}: ignoring {line!r}, which is not NAME=VALUE')
        continue
      if name not in NAMES:
        warn(f'{path}: ignoring unknown setting {name}')
        continue
      value = value[1:] if value[:1] in ('"', "'") else value
      value = value[:-1] if value[-1:] in ('"', "'") else value
      if not values.get(name):
        values[name] = value
  return values


def load(environ: Mapping[str, str], env_file: Optional[str],
         warn: Callable[[str], None] = lambda message: print(message, file=sys.stderr)) -> Settings:
  """The settings from `environ`, then `env_file` (when it exists) for those it leaves empty."""
  values = {name: environ.get(name, '') for name in NAMES}
  if env_file and os.path.isfile(env_file):
    for name, value in read_env_file(env_file, warn).items():
      values[name] = values[name] or value
  return Settings.from_values(values)


@dataclasses.dataclass(frozen=True)
class EnvironmentSetting:
  """One setting of Dataflow's launch environment, in each of the three places that take it."""
  beam: str  # the Beam pipeline option (DataflowRunner from this machine)
  gcloud: str  # the `gcloud dataflow flex-template run` flag
  api: str  # the flexTemplates:launch environment field (Cloud Scheduler's request)
  value: str  # a format of the Settings' fields; a setting whose value is empty is left out
  api_integer: bool = False  # the API field holds a number, not a string


# Every launch path (dataflow, run-template, schedule) takes these, so they are written once.
LAUNCH_ENVIRONMENT = (
    EnvironmentSetting('temp_location', 'temp-location', 'tempLocation', 'gs://{bucket}/tmp'),
    EnvironmentSetting('staging_location', 'staging-location', 'stagingLocation', 'gs://{bucket}/staging'),
    EnvironmentSetting('service_account_email', 'service-account-email', 'serviceAccountEmail',
                       '{service_account}'),
    EnvironmentSetting('machine_type', 'worker-machine-type', 'machineType', '{machine_type}'),
    EnvironmentSetting('max_num_workers', 'max-workers', 'maxWorkers', '{max_workers}', api_integer=True),
)
SPELLINGS = ('beam', 'gcloud', 'api')


def launch_environment(settings: Settings, spelling: str) -> list[tuple[str, str]]:
  """(name, value) of each launch environment setting that has a value, in `spelling`."""
  if spelling not in SPELLINGS:
    raise ValueError(f'spelling must be one of {SPELLINGS}, not {spelling!r}')
  return [(getattr(setting, spelling), value) for setting, value in _environment_values(settings)]


def _environment_values(settings: Settings) -> list[tuple[EnvironmentSetting, str]]:
  fields = dataclasses.asdict(settings)
  values = [(setting, setting.value.format(**fields)) for setting in LAUNCH_ENVIRONMENT]
  return [(setting, value) for setting, value in values if value]


def worker_options(settings: Settings) -> list[tuple[str, str]]:
  """What the workers run, as Beam options (which are also template parameters).

  - The project image is both launcher and worker; without IMAGE a CPU job ships the package
    with setup.py instead (workers then install the requirements at start-up, slower).
  - GPU_SCOPE=job gives every worker a GPU (worker_accelerator); GPU_SCOPE=predict asks for it
    only on the predict step with a Beam resource hint, for Dataflow right fitting.
  - By default each VM runs one SDK process per vCPU, so reading and features use every core.
    Whether they share one model copy per VM is left to --share_model_across_processes's default
    (pipelines/options.py): shared on a GPU (one copy per GPU), for a SavedModel or a PyTorch model
    and for a large model file; a copy per process for the other small models on CPUs, which spares
    each batch the trip to the model server. ONE_SDK_PROCESS_PER_VM=1 runs a single SDK process
    instead: no cross-process calls, but Python work is limited to one core per VM.
  """
  options = [('sdk_container_image', settings.image) if settings.image else ('setup_file', './setup.py'),
             ('device', settings.device)]
  if settings.device == 'gpu':
    accelerator = f'type:{settings.gpu_type};count:1;install-nvidia-driver'
    if settings.gpu_scope == 'predict':
      options.append(('inference_accelerator', accelerator))
    else:
      options.append(('dataflow_service_options', f'worker_accelerator={accelerator}'))
  if settings.one_sdk_process_per_vm == '1':
    options += [('experiments', 'no_use_multiple_sdk_containers'), ('share_model_across_processes', 'false')]
  return options


def beam_flags(settings: Settings) -> list[str]:
  """The launch environment and worker options as DataflowRunner flags."""
  pairs = launch_environment(settings, 'beam') + worker_options(settings)
  return [f'--{name}={value}' for name, value in pairs]


def template_parameters(settings: Settings, args: Sequence[str]) -> list[tuple[str, str]]:
  """A Flex Template launch's parameters: the worker options, then each --name=value of `args`.

  The launcher returns once the job is submitted instead of staying up until it ends.
  """
  parameters = worker_options(settings) + [('wait_for_job', 'false')]
  for arg in args:
    name, sep, value = arg[2:].partition('=')
    if not arg.startswith('--') or not sep:
      raise SettingsError(f'pass template parameters as --name=value, not {arg}')
    parameters.append((name, value))
  return parameters


def gcloud_parameters(parameters: Sequence[tuple[str, str]]) -> str:
  """The --parameters flag of `gcloud dataflow flex-template run`.

  ^~^ makes ~ the separator, since values hold commas and semicolons.
  """
  return '--parameters=^~^' + '~'.join(f'{name}={value}' for name, value in parameters)


def launch_request(settings: Settings, job_name: str, parameters: Sequence[tuple[str, str]]) -> dict:
  """The body of a flexTemplates:launch call, which Cloud Scheduler posts on its cron."""
  environment = {setting.api: int(value) if setting.api_integer else value
                 for setting, value in _environment_values(settings)}
  return {'launchParameter': {'jobName': job_name, 'containerSpecGcsPath': settings.template,
                              'environment': environment, 'parameters': dict(parameters)}}


def job_name(now: Optional[datetime.datetime] = None) -> str:
  """A Dataflow or Kubernetes job name, unique to the second."""
  now = now or datetime.datetime.now(datetime.timezone.utc)
  return f'batch-inference-{now:%Y%m%d-%H%M%S}'


def _lines(pairs: Sequence[tuple[str, str]], prefix: str = '') -> list[str]:
  return [f'{prefix}{name}={value}' for name, value in pairs]


def main(argv: Sequence[str]) -> int:
  """Prints the view named by argv[0], one line an item; a bad setting exits 2 with the reason."""
  view, args = (argv[0], list(argv[1:])) if argv else ('', [])
  try:
    if view == 'resolve':
      settings = load(os.environ, os.environ.get('ENV_FILE') or '.env')
      lines = _lines(list(settings.as_environment().items()))
    elif view == 'job-name':
      lines = [job_name()]
    elif view == 'describe':
      lines = textwrap.wrap(describe(), width=96, break_on_hyphens=False)
    else:
      settings = load(os.environ, env_file=None)
      if view == 'require':
        if '--dataflow' in args:
          settings.require_dataflow()
        settings.require(*[name for name in args if name != '--dataflow'])
        lines = []
      elif view == 'beam-flags':
        lines = beam_flags(settings)
      elif view == 'launch-environment' and args == ['gcloud']:
        lines = _lines(launch_environment(settings, 'gcloud'), prefix='--')
      elif view == 'launch-environment' and args == ['api']:
        lines = _lines(launch_environment(settings, 'api'))
      elif view == 'gcloud-parameters':
        lines = [gcloud_parameters(template_parameters(settings, args))]
      elif view == 'launch-request' and args:
        request = launch_request(settings, args[0], template_parameters(settings, args[1:]))
        lines = [json.dumps(request, indent=2)]
      else:
        print(__doc__, file=sys.stderr)
        return 2
  except SettingsError as e:
    print(e, file=sys.stderr)
    return 2
  for line in lines:
    print(line)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
