"""The emulator fixtures themselves: they serve on loopback and leave no process behind."""

import os
import signal

import pytest

from testing import emulators


def _alive(group: int) -> bool:
  try:
    os.killpg(group, 0)
    return True
  except ProcessLookupError:
    return False


def test_gcs_emulator__stops_its_whole_process_group(tmp_path):
  emulator = emulators.GcsEmulator(tmp_path)
  group = emulator._process.process.pid  # pylint: disable=protected-access
  assert emulator.endpoint.startswith('http://127.0.0.1:')
  assert _alive(group)
  emulator.stop()
  assert not _alive(group)


def test_stop__kills_a_server_that_ignores_sigterm(tmp_path):
  ignoring = ('import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); '
              'print("up", flush=True); time.sleep(60)')
  process = emulators._Process(  # pylint: disable=protected-access
      'stubborn', ['python3', '-c', ignoring], dict(os.environ), tmp_path)
  process.wait_until(lambda: 'up' in process.log(), timeout_s=10)
  process.stop(grace_s=0.5)
  assert process.process.returncode == -signal.SIGKILL
  assert not _alive(process.process.pid)


def test_bigquery_emulator__serves_rest_and_grpc_on_loopback(bigquery_emulator):
  assert bigquery_emulator.rest_url.startswith('http://127.0.0.1:')
  assert bigquery_emulator.grpc_endpoint.startswith('127.0.0.1:')
  assert os.environ['BIGQUERY_EMULATOR_HOST'] == bigquery_emulator.rest_url


@pytest.mark.parametrize('name', ['gcs', 'bigquery'])
def test_emulator_virtualenvs__are_reused_while_their_pins_are_unchanged(name):
  python = emulators.ensure_venv(name)
  stamp = python.parent.parent / '.installed'
  before = stamp.stat().st_mtime
  assert emulators.ensure_venv(name) == python and stamp.stat().st_mtime == before
