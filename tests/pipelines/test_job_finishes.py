"""The job finishes its own business: a launcher that does not wait, or dies, still gets a
published, reconciled run with its summary and report; a kill during publishing leaves the
last complete attempt readable; a job that fails or loses rows publishes nothing."""

import glob
import json
import os
import signal
import subprocess
import sys

import pyarrow as pa
import pytest

from models import inference
from models.examples.penguins import train
from pipelines import run as run_job
from pipelines.graph import finish
from pipelines.record import status
from transforms.files import publish

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _args(out, bundle, run_id, *extra):
  return [f'--input={train.EXAMPLE_DATA}', f'--model={bundle.path}', f'--output={out}', f'--run_id={run_id}', *extra]


def _launch_and_kill(tmp_path, hook: str, argv: list[str]) -> subprocess.CompletedProcess:
  """Runs `python -m pipelines.run ARGV` with `hook` (Python that patches something to SIGKILL
  the process) imported first."""
  (tmp_path / 'kill_hook.py').write_text(
      'import os, signal\n'
      'def die():\n  os.kill(os.getpid(), signal.SIGKILL)\n' + hook)
  env = {**os.environ, 'PYTHONPATH': f'{ROOT}:{tmp_path}', 'TF_CPP_MIN_LOG_LEVEL': '3'}
  code = 'import kill_hook\nfrom pipelines import run\nrun.exit_now(run.main())'
  return subprocess.run([sys.executable, '-c', code, *argv], capture_output=True, text=True, env=env, timeout=300,
                        cwd=ROOT)


def _assert_published(out, run_id, rows_predicted=342):
  pointer = publish.read_pointer(str(out), run_id)
  assert pointer is not None and pointer['state'] == 'DONE' and pointer['reconciled']
  assert (pointer['rows_read'], pointer['rows_predicted'], pointer['rows_rejected']) == (344, rows_predicted, 2)
  files = glob.glob(os.path.join(pointer['output'], 'predictions-*.parquet'))
  assert sum(pa.parquet.read_metadata(f).num_rows for f in files) == rows_predicted
  html = open(pointer['report'], encoding='utf-8').read()
  assert f'Run {run_id}' in html and '<svg' in html  # the charts, inline
  record = publish.attempt_folder(str(out), run_id, pointer['attempt'])  # the attempt's report, profile, launch
  assert json.load(open(os.path.join(record, finish.PROFILE_FILE)))['input']['rows'] == 344
  return pointer


def test_not_waiting__the_job_publishes_its_summary_and_report(tmp_path, penguin_bundle, capsys):
  out = tmp_path / 'out'
  assert run_job.main(_args(out, penguin_bundle, 'no-wait', '--wait_for_job=false')) == 0
  assert 'Submitted run no-wait' in capsys.readouterr().out
  _assert_published(out, 'no-wait')
  assert status.main([f'--output={out}', '--run_id=no-wait']) == 0
  assert 'Run no-wait: DONE' in capsys.readouterr().out


def test_launcher_killed_right_after_submitting__the_job_still_publishes(tmp_path, penguin_bundle):
  """The launcher dies the moment Pipeline.run() hands the job over (on the DirectRunner that is once
  the job has run): none of the launcher's code after submission runs, yet the run is published."""
  hook = ('import apache_beam as beam\norig = beam.Pipeline.run\n'
          'def run(self, *a, **k):\n  result = orig(self, *a, **k)\n  die()\n'
          'beam.Pipeline.run = run\n')
  done = _launch_and_kill(tmp_path, hook, _args(tmp_path / 'out', penguin_bundle, 'killed', '--wait_for_job=false'))
  assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
  pointer = _assert_published(tmp_path / 'out', 'killed')
  record = publish.attempt_folder(str(tmp_path / 'out'), 'killed', pointer['attempt'])
  assert json.load(open(os.path.join(record, status.LAUNCH_FILE)))['attempt'] == pointer['attempt']


def test_kill_during_publishing__readers_keep_the_last_complete_attempt(tmp_path, penguin_bundle, capsys, snapshot):
  out = tmp_path / 'out'
  first = run_job.run(_args(out, penguin_bundle, 'nightly'))
  before = snapshot(out / 'nightly')
  hook = 'from transforms.files import publish\npublish.switch_pointer = lambda *a, **k: die()\n'
  done = _launch_and_kill(tmp_path, hook, _args(out, penguin_bundle, 'nightly'))
  assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]

  killed = [a for a in publish.attempts(str(out), 'nightly') if a != first.attempt]
  staged = publish.staged_folder(str(out), 'nightly', killed[0], 'predictions')
  assert len(killed) == 1 and glob.glob(f'{staged}/predictions-*')  # written, not published
  assert {k: v for k, v in snapshot(out / 'nightly').items() if not k.startswith(f'_{killed[0]}')} == before
  assert publish.read_pointer(str(out), 'nightly')['attempt'] == first.attempt
  assert status.main([f'--output={out}', '--run_id=nightly']) == 1  # its launcher is gone: killed, not running
  said = capsys.readouterr().out
  assert f'attempt {killed[0]}' in said and 'KILLED without publishing' in said

  again = run_job.run(_args(out, penguin_bundle, 'nightly'))
  assert publish.attempts(str(out), 'nightly') == [again.attempt]
  _assert_published(out, 'nightly')


def test_failure_after_every_shard_is_written__publishes_nothing(tmp_path, penguin_bundle, monkeypatch, capsys):
  out = tmp_path / 'out'

  def report_fails(folder, *unused_args, **unused_kwargs):
    assert glob.glob(os.path.join(folder, 'predictions', 'predictions-*.parquet'))  # the shards are there
    raise OSError('disk full while writing the report')

  monkeypatch.setattr(finish, 'write_report', report_fails)
  assert run_job.main(_args(out, penguin_bundle, 'r1')) == 1
  assert 'disk full while writing the report' in capsys.readouterr().err
  assert publish.read_pointer(str(out), 'r1') is None
  assert not glob.glob(str(out / 'r1' / '**' / 'predictions-*'), recursive=True)
  assert status.main([f'--output={out}', '--run_id=r1']) == 1
  said = capsys.readouterr().out
  assert 'FAILED' in said and 'disk full while writing the report' in said


def test_rows_lost_between_read_and_write__fail_the_job_with_the_counts(tmp_path, penguin_bundle, monkeypatch, capsys):
  original = inference.FormatFn.process

  def drop_first_row(self, element):
    for output in original(self, element):
      yield output.slice(1) if isinstance(output, pa.RecordBatch) else output

  monkeypatch.setattr(inference.FormatFn, 'process', drop_first_row)
  out = tmp_path / 'out'
  assert run_job.main(_args(out, penguin_bundle, 'lossy')) == 1
  error = capsys.readouterr().err
  assert 'run lossy did not reconcile: read 344 rows but predicted 341 and rejected 2 (+1 unaccounted for)' in error
  assert publish.read_pointer(str(out), 'lossy') is None


def test_status__of_a_run_that_never_was(tmp_path, capsys):
  assert status.main([f'--output={tmp_path}', '--run_id=nope']) == 2
  assert f'no run nope under {tmp_path}' in capsys.readouterr().err


def test_publish_retried_by_the_runner__is_harmless(tmp_path, penguin_bundle):
  """A runner may run the final step again (a lost worker): once the pointer names the attempt, a
  retry changes nothing and returns the same summary."""
  from apache_beam.options.pipeline_options import PipelineOptions

  from pipelines.launcher.resolve import resolve

  out = tmp_path / 'out'
  plan, _ = resolve(PipelineOptions(_args(out, penguin_bundle, 'retried', '--report=false')), bundle=penguin_bundle)
  fn = finish._FinishFn(plan)  # pylint: disable=protected-access  (the plan says --report=false)
  counts = {'rows_read': 30, 'rows_predicted': 29, 'rows_rejected': 1, 'rejected_missing_value': 1}
  first = list(fn.process(counts, None, [], []))
  pointer = publish.read_pointer(str(out), 'retried')
  again = list(fn.process(counts, None, [], []))
  assert first == again == [pointer] and pointer['attempt'] == plan.attempt
  assert publish.read_pointer(str(out), 'retried') == pointer
