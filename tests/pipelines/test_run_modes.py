"""How `python -m pipelines.run` ends when it does not wait for the job."""

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
