"""Local Cloud Storage and BigQuery emulators, each in its own virtualenv, on free loopback ports.

The emulators' dependencies (an HTTP server stack, DuckDB, their own pyarrow)
would clash with the job's pinned stack, so each lives in a virtualenv under
build/emulators/NAME, created on first use from the pinned files in
emulator_requirements/ and reused while those files are unchanged.

Each emulator runs in its own process group, so stopping it leaves no process
behind, not even a server's worker children.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Callable, Optional

ROOT = pathlib.Path(__file__).resolve().parents[1]
VENVS = ROOT / 'build' / 'emulators'
REQUIREMENTS = pathlib.Path(__file__).resolve().parent / 'emulator_requirements'
START_TIMEOUT_S = 60


class EmulatorError(RuntimeError):
  """An emulator could not be installed or started."""


def ensure_venv(name: str) -> pathlib.Path:
  """The python of build/emulators/NAME, installed from emulator_requirements/NAME.txt if stale."""
  requirements = REQUIREMENTS / f'{name}.txt'
  venv = VENVS / name
  python = venv / 'bin' / 'python'
  stamp = venv / '.installed'
  want = hashlib.sha256(requirements.read_bytes()).hexdigest()
  if python.exists() and stamp.exists() and stamp.read_text() == want:
    return python
  shutil.rmtree(venv, ignore_errors=True)
  VENVS.mkdir(parents=True, exist_ok=True)
  base = getattr(sys, '_base_executable', sys.executable)
  steps = [[base, '-m', 'venv', str(venv)],
           [str(python), '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '-r', str(requirements)]]
  for step in steps:
    done = subprocess.run(step, capture_output=True, text=True, check=False)
    if done.returncode:
      raise EmulatorError(f'installing the {name} emulator failed: {" ".join(step)}\n{done.stderr[-3000:]}')
  stamp.write_text(want)
  return python


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class _Process:
  """A server process in its own session, with its output in a log file."""

  def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: pathlib.Path):
    self.name = name
    self.log_path = log_dir / f'{name}.log'
    self._log = open(self.log_path, 'wb')  # pylint: disable=consider-using-with
    self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, cwd=log_dir)

  def log(self) -> str:
    return self.log_path.read_text(errors='replace')

  def wait_until(self, ready: Callable[[], bool], timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
      if self.process.poll() is not None:
        raise EmulatorError(f'the {self.name} emulator exited with {self.process.returncode}:\n{self.log()[-3000:]}')
      if ready():
        return
      time.sleep(0.2)
    self.stop()
    raise EmulatorError(f'the {self.name} emulator did not start in {timeout_s}s:\n{self.log()[-3000:]}')

  def stop(self, grace_s: float = 10) -> None:
    """Ends the whole process group: SIGTERM, then SIGKILL after `grace_s`."""
    if self.process.poll() is None:
      with contextlib.suppress(ProcessLookupError):
        os.killpg(self.process.pid, signal.SIGTERM)
      try:
        self.process.wait(timeout=grace_s)
      except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
          os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
      os.killpg(self.process.pid, signal.SIGKILL)  # children that outlived their parent
    self._log.close()


def _answers(url: str) -> bool:
  try:
    with urllib.request.urlopen(url, timeout=2) as response:
      return response.status < 500
  except OSError as e:
    return getattr(e, 'code', 500) < 500


class GcsEmulator:
  """gcp-storage-emulator, storing objects on disk under `data_dir`/.cloudstorage/BUCKET/NAME.

  Beam's gs:// filesystem goes through google-cloud-storage, which honours
  STORAGE_EMULATOR_HOST.
  """

  def __init__(self, work_dir: pathlib.Path):
    self.data_dir = work_dir / 'gcs'
    self.data_dir.mkdir(parents=True, exist_ok=True)
    python = ensure_venv('gcs')
    for _ in range(3):  # a free port can be taken between the probe and the bind
      self.port = free_port()
      env = {**os.environ, 'STORAGE_BASE': str(self.data_dir)}
      self._process = _Process('gcs', [str(python), '-m', 'gcp_storage_emulator', 'start', '--host', '127.0.0.1',
                                       '--port', str(self.port), '--quiet'], env, work_dir)
      try:
        self._process.wait_until(lambda: _answers(f'{self.endpoint}/storage/v1/b?project=p'))
        return
      except EmulatorError:
        if 'Address already in use' not in self._process.log():
          raise

  @property
  def endpoint(self) -> str:
    return f'http://127.0.0.1:{self.port}'

  @property
  def objects_root(self) -> pathlib.Path:
    """Where object gs://B/N lies on disk: objects_root/B/N."""
    return self.data_dir / '.cloudstorage'

  def stop(self) -> None:
    self._process.stop()


_SKIP_DUCKDB_DOWNLOADS = """
import sys
from bqemulator.storage import engine
# DuckDB downloads its spatial and avro extensions at start; offline that fails.
# GEOGRAPHY and Avro loads are not used by these tests.
engine.DuckDBEngine._load_spatial = lambda self: None
engine.DuckDBEngine._load_format_extensions = lambda self: None
from bqemulator.cli import main
sys.exit(main())
"""


class BigQueryEmulator:
  """bqemulator: BigQuery's REST API and Storage Read/Write gRPC APIs over DuckDB.

  `gcs_root` lets load jobs read gs:// URIs from the GCS emulator's disk.
  """

  def __init__(self, work_dir: pathlib.Path, *, project: str, gcs_root: Optional[pathlib.Path] = None):
    self.project = project
    python = ensure_venv('bigquery')
    env = {**os.environ, 'BQEMU_LOG_FORMAT': 'json', 'BQEMU_LOG_LEVEL': 'info'}
    if gcs_root is not None:
      env['BQEMU_GCS_LOCAL_ROOT'] = str(gcs_root)
    self._process = _Process('bigquery', [str(python), '-c', _SKIP_DUCKDB_DOWNLOADS, 'start', '--rest-port', '0',
                                          '--grpc-port', '0', '--project', project, '--ephemeral'], env, work_dir)
    self.rest_port = self.grpc_port = 0
    self._process.wait_until(self._listening)

  def _listening(self) -> bool:
    for line in self._process.log().splitlines():
      if not line.startswith('{'):
        continue
      with contextlib.suppress(ValueError):
        event = json.loads(line)
        if event.get('event') == 'rest.listen':
          self.rest_port = int(event['port'])
        elif event.get('event') == 'grpc.listen':
          self.grpc_port = int(event['port'])
    return bool(self.rest_port and self.grpc_port) and _answers(f'{self.rest_url}/bigquery/v2/projects')

  @property
  def rest_url(self) -> str:
    return f'http://127.0.0.1:{self.rest_port}'

  @property
  def grpc_endpoint(self) -> str:
    return f'127.0.0.1:{self.grpc_port}'

  def stop(self) -> None:
    self._process.stop()
