"""How `python -m pipelines.run` ends: when it does not wait for the job, and as a command."""

import json
import os
import subprocess
import sys

import pytest

from models.examples.penguins import train
from pipelines import run as run_job

pytestmark = pytest.mark.slow


@pytest.mark.parametrize('flag', ['--wait_for_job=false', '--no_wait_until_finish'])
def test_not_waiting__returns_at_once_and_the_job_publishes_by_itself(tmp_path, penguin_bundle, capsys, flag):
  out = tmp_path / 'out'
  code = run_job.main([f'--input={train.EXAMPLE_DATA}', f'--model={penguin_bundle.path}', f'--output={out}',
                       '--run_id=no-wait', flag])
  assert code == 0
  said = capsys.readouterr().out
  assert 'Submitted run no-wait' in said and f'{out}/no-wait/_run_summary.json' in said
  # The DirectRunner finishes inside run(); the job itself published its files and summary.
  summary = json.loads((out / 'no-wait' / '_run_summary.json').read_text())
  assert list((out / 'no-wait' / summary['attempt']).glob('predictions-*.parquet'))


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
  with open(out / 'piped' / '_run_summary.json', encoding='utf-8') as f:
    summary = json.load(f)
  assert done.stdout.rstrip().endswith(str(out / 'piped' / f"_{summary['attempt']}" / 'report.html'))
  assert 'run piped (attempt-' in done.stderr  # the log, through logging's exit handler
  assert (summary['rows_read'], summary['rows_predicted'], summary['rows_rejected']) == (344, 342, 2)
