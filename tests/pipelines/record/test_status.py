"""`status` tells a running run from a killed one, and asks the output itself what it holds of a run:
a run killed just after its PostgreSQL publish committed is said to be published, with or without
the run's record."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from models.examples.penguins import train
from pipelines.record import status
from transforms.files import publish

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _launch(tmp_path, hook: str, flags: list[str]) -> tuple[subprocess.Popen, str]:
  """Starts `python -m pipelines.run FLAGS` with `hook` (Python run first in the process, given `die()`,
  which SIGKILLs it); returns the process and the file its console goes to."""
  (tmp_path / 'status_hook.py').write_text('import os, signal\ndef die():\n  os.kill(os.getpid(), signal.SIGKILL)\n'
                                           + hook)
  console = str(tmp_path / 'console.txt')
  env = {**os.environ, 'PYTHONPATH': f'{ROOT}{os.pathsep}{tmp_path}'}
  code = 'import status_hook, runpy\nrunpy.run_module("pipelines.run", run_name="__main__")'
  with open(console, 'w', encoding='utf-8') as out:
    job = subprocess.Popen([sys.executable, '-c', code, *flags], stdout=out, stderr=subprocess.STDOUT, env=env,
                           cwd=ROOT)
  return job, console


def _status(capsys, *flags) -> tuple[int, str]:
  code = status.main(list(flags))
  said = capsys.readouterr()
  return code, said.out + said.err


def test_a_run_is_running_while_its_launcher_beats__killed_once_it_stops(tmp_path, penguin_bundle, capsys):
  out = tmp_path / 'out'
  hook = 'import time\nfrom transforms.files import publish\npublish.switch_pointer = lambda *a, **k: time.sleep(600)\n'
  job, console = _launch(tmp_path, hook, [f'--input={train.EXAMPLE_DATA}', f'--model={penguin_bundle.path}',
                                          f'--output={out}', '--run_id=night'])
  try:
    deadline = time.monotonic() + 120
    while 'publishing to' not in open(console, encoding='utf-8').read():  # it hangs while publishing
      assert job.poll() is None and time.monotonic() < deadline, open(console, encoding='utf-8').read()
      time.sleep(0.2)
    code, said = _status(capsys, f'--output={out}', '--run_id=night')
    assert code == 3 and 'RUNNING' in said, said
  finally:
    job.kill()
    job.wait(30)
  [attempt] = publish.attempts(str(out), 'night')
  code, said = _status(capsys, f'--output={out}', '--run_id=night')
  assert code == 1 and f'attempt {attempt}' in said and 'KILLED without publishing' in said, said
  assert f'publishing to {out}/night/{attempt}' in open(console, encoding='utf-8').read()

  # A launcher on another machine is judged by its heartbeat's age alone.
  beat_path = os.path.join(publish.attempt_folder(str(out), 'night', attempt), status.HEARTBEAT_FILE)
  beat = json.load(open(beat_path, encoding='utf-8'))
  assert not beat['ended'] and beat['every'] == status.HEARTBEAT_SECONDS
  now = status._now()
  for age, expected in ((0, 3), (status.MISSED_BEATS * status.HEARTBEAT_SECONDS + 60, 1)):
    at = now.timestamp() - age
    publish.write_json(beat_path, {**beat, 'host': 'another-machine',
                                   'at': type(now).fromtimestamp(at, now.tzinfo).isoformat(timespec='seconds')})
    assert _status(capsys, f'--output={out}', '--run_id=night')[0] == expected


def test_killed_just_after_the_database_commit__status_says_the_table_holds_the_run(
    tmp_path, postgres_server, penguin_bundle, capsys):
  url = postgres_server.url('penguins_nightly')
  runs = tmp_path / 'runs'
  hook = ('from transforms.postgres import publish\noriginal = publish.publish_run\n'
          'def publish_run(*args, **kwargs):\n  original(*args, **kwargs)\n  die()\n'
          'publish.publish_run = publish_run\n')
  job, console = _launch(tmp_path, hook, [f'--input={train.EXAMPLE_DATA}', f'--model={penguin_bundle.path}',
                                          f'--output={url}', f'--summary_location={runs}', '--run_id=night'])
  assert job.wait(300) == -signal.SIGKILL, open(console, encoding='utf-8').read()
  with postgres_server.connect() as conn:
    assert conn.execute("SELECT count(*) FROM penguins_nightly WHERE run_id = 'night'").fetchone()[0] == 342
  [attempt] = publish.attempts(str(runs), 'night')
  assert publish.read_pointer(str(runs), 'night') is None  # killed before its summary

  code, said = _status(capsys, f'--output={url}', f'--summary_location={runs}', '--run_id=night')
  assert code == 1, said
  assert f'PUBLISHED by attempt {attempt}, but it stopped before writing its summary' in said
  assert f'{url} holds 342 rows of the run' in said

  code, said = _status(capsys, f'--output={url}', '--run_id=night')  # no record to read: the table answers
  assert code == 0, said
  assert f'Run night: {url} holds 342 rows of the run, published at ' in said and f'by {attempt}' in said
  assert 'give --summary_location' in said

  code, said = _status(capsys, f'--output={url}', '--run_id=another-night')
  assert code == 2 and f'no run another-night in {url}' in said


def test_a_bigquery_output__status_answers_from_the_table_without_the_summary_location(
    tmp_path, bq_client, bq_dataset, penguin_bundle, capsys):
  from pipelines import run as run_job
  from testing import penguin_tables
  from testing.cloud_fixtures import BUCKET

  penguin_tables.write_parquet(str(tmp_path / 'in'))
  output = f'bq://{bq_dataset}.predictions'
  summary = run_job.run([f'--input={tmp_path}/in/*.parquet', f'--model={penguin_bundle.path}', f'--output={output}',
                         f'--key_column={penguin_tables.KEY}', f'--temp_location=gs://{BUCKET}/tmp',
                         '--project=test-project', '--run_id=night'])
  code, said = _status(capsys, f'--output={output}', '--run_id=night')  # the record is under --temp_location
  assert code == 0, said
  assert f'Run night: {output} holds {summary.rows_predicted:,} rows of the run, published; give' in said
  code, said = _status(capsys, f'--output={output}', '--run_id=night', f'--temp_location=gs://{BUCKET}/tmp')
  assert code == 0 and said.startswith('Run night: DONE'), said
