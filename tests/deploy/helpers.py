"""Run launch.sh as a user would, with only the settings a test gives it."""

import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETTINGS = {
    'PROJECT': 'my-project',
    'BUCKET': 'my-bucket',
    'REGION': 'europe-west4',
    'IMAGE': 'europe-west4-docker.pkg.dev/my-project/ml/batch-inference:1',
    'SERVICE_ACCOUNT': 'batch-runner@my-project.iam.gserviceaccount.com',
}


def tool(name: str) -> str:
  """A linter installed by requirements-dev.txt, beside this interpreter."""
  path = os.path.join(os.path.dirname(sys.executable), name)
  assert os.path.exists(path), f'{name} is missing: install requirements-dev.txt (./launch.sh test does)'
  return path


def launch(*args: str, env: dict[str, str] | None = None, dry_run: bool = True) -> subprocess.CompletedProcess:
  """Runs ./launch.sh with only the given settings (none leak in from the caller's environment)."""
  clean = {k: v for k, v in os.environ.items() if k not in SETTINGS and k not in (
      'DEVICE', 'GPU_TYPE', 'MACHINE_TYPE', 'MAX_WORKERS', 'GPU_SCOPE', 'ONE_SDK_PROCESS_PER_VM', 'TEMPLATE',
      'SCHEDULE', 'TIME_ZONE', 'ENV_FILE', 'DRY_RUN')}
  clean['ENV_FILE'] = os.devnull
  if dry_run:
    clean['DRY_RUN'] = '1'
  clean.update(env or {})
  return subprocess.run(['bash', os.path.join(REPO, 'launch.sh'), *args], env=clean, capture_output=True,
                        text=True, timeout=60, check=False)


def printed_command(result: subprocess.CompletedProcess) -> list[str]:
  """The command a DRY_RUN printed, as the shell would split it."""
  assert result.returncode == 0, result.stderr
  lines = [line for line in result.stdout.splitlines() if line.strip()]
  assert len(lines) == 1, result.stdout
  return shlex.split(lines[0])
