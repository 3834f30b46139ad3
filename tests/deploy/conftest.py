"""Helpers for the deploy checks: run launch.sh as a user would, with Google Cloud out of reach."""

import os
import shlex
import socket
import subprocess
import sys

import pytest

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


@pytest.fixture
def offline(monkeypatch):
  """Fails any connection to a host other than this machine, so 'offline' is checked, not assumed."""
  real_connect = socket.socket.connect

  def connect(sock, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and not (host.startswith('127.') or host in ('::1', 'localhost') or host.startswith('/')):
      raise AssertionError(f'a network connection to {address} was attempted')
    return real_connect(sock, address)

  def getaddrinfo(host, *args, **kwargs):
    raise AssertionError(f'a name lookup of {host} was attempted')

  monkeypatch.setattr(socket.socket, 'connect', connect)
  monkeypatch.setattr(socket, 'getaddrinfo', getaddrinfo)
