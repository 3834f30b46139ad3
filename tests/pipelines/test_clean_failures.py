"""Expected outcomes print one clean message and exit with their documented status; the traceback goes
to the log file the last line names, never to the console.

Each test runs the real command, `python -m pipelines.run`, into a failure a user meets: a broken
gate (4), a corrupt file among many (1), too many rejected rows (1), a preflight failure (2), a
database that refuses the publish (1).
"""

import os
import re
import subprocess
import sys

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from models.examples.penguins import train

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(tmp_path, *flags, hook: str = '') -> subprocess.CompletedProcess:
  """`python -m pipelines.run FLAGS`, with `hook` (Python run first in the process) when given."""
  env = {**os.environ, 'PYTHONPATH': f'{ROOT}{os.pathsep}{tmp_path}'}
  if hook:
    (tmp_path / 'failure_hook.py').write_text(hook)
    command = ['-c', 'import failure_hook, runpy\nrunpy.run_module("pipelines.run", run_name="__main__")']
  else:
    command = ['-m', 'pipelines.run']
  return subprocess.run([sys.executable, *command, *flags], capture_output=True, text=True, env=env, timeout=300,
                        cwd=ROOT)


def _assert_clean(done: subprocess.CompletedProcess, code: int, message: str) -> str:
  """The exit status, one error message on a short console with no traceback, and the log file it
  names holding the traceback; returns the log's text."""
  console = done.stdout + done.stderr
  assert done.returncode == code, console
  assert 'Traceback' not in console, console
  lines = console.strip().splitlines()
  assert len(lines) <= 5, console
  errors = [i for i, line in enumerate(lines) if line.startswith('error: ')]
  assert len(errors) == 1 and message in '\n'.join(lines[errors[0]:]), console
  assert re.fullmatch(r'log: \S+\.log', lines[-1]), console
  with open(lines[-1][len('log: '):], encoding='utf-8') as f:
    log = f.read()
  assert 'Traceback (most recent call last)' in log and message in log, log[-3000:]
  return log


def _flags(tmp_path, bundle, *extra, data=train.EXAMPLE_DATA):
  return [f'--input={data}', f'--model={bundle.path}', f'--output={tmp_path / "out"}', '--run_id=night', *extra]


def test_a_broken_gate__exit_4_and_one_message(tmp_path, penguin_bundle):
  done = _run(tmp_path, *_flags(tmp_path, penguin_bundle, '--gate=rejected_rate<0'))
  _assert_clean(done, 4, 'run night broke its publish gate: rejected_rate is 0.005814')


def test_too_many_rejected_rows__exit_1_and_one_message(tmp_path, penguin_bundle):
  done = _run(tmp_path, *_flags(tmp_path, penguin_bundle, '--max_rejected_fraction=0.001'))
  _assert_clean(done, 1, 'run night rejected 0.58% of its rows (2 of 344), more than --max_rejected_fraction=0.001 allows; top reasons: missing_value 2')


def test_a_corrupt_25th_file__exit_1_and_one_message(tmp_path, penguin_bundle):
  table = pacsv.read_csv(train.EXAMPLE_DATA)
  folder = tmp_path / 'in'
  folder.mkdir()
  for i in range(24):  # preflight reads the first 20 files; the 25th is read only by the job
    pq.write_table(table.slice(i * 10, 10), folder / f'part-{i:02d}.parquet')
  (folder / 'part-24.parquet').write_bytes(b'PAR1 this is not a parquet file, its footer is gone')
  done = _run(tmp_path, *_flags(tmp_path, penguin_bundle, data=f'{folder}/*.parquet'))
  _assert_clean(done, 1, 'part-24.parquet')


def test_a_preflight_failure__exit_2_and_the_log_it_names_holds_the_error(tmp_path, penguin_bundle):
  done = _run(tmp_path, *_flags(tmp_path, penguin_bundle, data=str(tmp_path / 'missing' / '*.csv')))
  log = _assert_clean(done, 2, 'matches no files')
  assert 'PreflightError' in log


def test_a_publish_the_database_refuses__exit_1_and_one_message(tmp_path, postgres_server, penguin_bundle):
  """The serving table loses a column while the job runs (a migration): PostgreSQL refuses the publish."""
  url = postgres_server.url('penguins_served')
  hook = ('import psycopg\nfrom transforms.postgres import publish\n'
          'original = publish.publish_run\n'
          'def publish_run(target, *args, **kwargs):\n'
          f'  with psycopg.connect(host={postgres_server.folder!r}, port={postgres_server.port}, user="postgres", '
          'dbname="postgres", autocommit=True) as conn:\n'
          '    conn.execute("ALTER TABLE penguins_served DROP COLUMN species")\n'
          '  return original(target, *args, **kwargs)\n'
          'publish.publish_run = publish_run\n')
  done = _run(tmp_path, f'--input={train.EXAMPLE_DATA}', f'--model={penguin_bundle.path}', f'--output={url}',
              f'--summary_location={tmp_path / "runs"}', '--run_id=night',
              '--passthrough_columns=species', hook=hook)
  _assert_clean(done, 1, 'column "species" of relation')  # the serving table, or the copy a first night swaps in
