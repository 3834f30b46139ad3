"""How `python -m pipelines.run` ends when it does not wait for the job (Beam's --no_wait_until_finish)."""

import pytest

from models.penguins import train
from pipelines import run as run_job

pytestmark = pytest.mark.slow


def test_no_wait_until_finish__returns_without_a_summary(tmp_path, penguin_bundle, capsys):
  out = tmp_path / 'out'
  code = run_job.main([f'--input={train.EXAMPLE_DATA}', f'--model={penguin_bundle.path}', f'--output={out}',
                       '--run_id=no-wait', '--no_wait_until_finish'])
  assert code == 0
  assert 'Submitted' in capsys.readouterr().out
  # The DirectRunner finishes inside run(); the predictions are there, the summary is not written.
  assert list((out / 'no-wait').glob('predictions-*.parquet'))
  assert not (out / 'no-wait' / run_job.SUMMARY_FILE).exists()
