"""How `python -m pipelines.run` ends: when it does not wait for the job, and as a command."""

import json
import os
import subprocess
import sys

import pytest

from models.penguins import train
from pipelines import run as run_job

pytestmark = pytest.mark.slow


@pytest.mark.parametrize('flag', ['--wait_for_job=false', '--no_wait_until_finish'])
def test_not_waiting__returns_without_a_summary(tmp_path, penguin_bundle, capsys, flag):
  out = tmp_path / 'out'
  code = run_job.main([f'--input={train.EXAMPLE_DATA}', f'--model={penguin_bundle.path}', f'--output={out}',
                       '--run_id=no-wait', flag])
  assert code == 0
  assert 'Submitted' in capsys.readouterr().out
  # The DirectRunner finishes inside run(); the predictions are there, the summary is not written.
  assert list((out / 'no-wait').glob('predictions-*.parquet'))
  assert not (out / 'no-wait' / run_job.SUMMARY_FILE).exists()


def test_as_a_command__piped_output_arrives_whole_and_the_exit_code_is_the_run_s(tmp_path, penguin_bundle):
  """`python -m pipelines.run` skips the interpreter's teardown, so it must flush what that would."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = {**os.environ, 'PYTHONPATH': root, 'TF_CPP_MIN_LOG_LEVEL': '3'}
  out = tmp_path / 'out'
  done = subprocess.run(
      [sys.executable, '-m', 'pipelines.run', f'--input={train.EXAMPLE_DATA}', f'--model={penguin_bundle.path}',
       f'--output={out}', '--run_id=piped'], capture_output=True, text=True, env=env, timeout=300, cwd=root)
  assert done.returncode == 0, done.stderr[-2000:]
  # stdout is a pipe, so block-buffered: every line of the summary must still arrive.
  assert 'Run piped: DONE' in done.stdout
  assert done.stdout.rstrip().endswith(str(out / 'piped' / 'report.html'))
  assert 'run piped: predicting' in done.stderr  # the log, through logging's exit handler
  with open(out / 'piped' / 'run_summary.json', encoding='utf-8') as f:
    summary = json.load(f)
  assert (summary['rows_read'], summary['rows_predicted'], summary['rows_rejected']) == (344, 342, 2)
