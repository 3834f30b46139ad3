"""--only_unscored table to table: one anti-join in BigQuery leaves out rows this model version
scored; the job reads the rest and counts the others as skipped (the emulators)."""

import pytest

from pipelines import run as run_job
from testing import penguin_tables as penguins
from tests.transforms.bigquery.test_pipeline import job_args, load_penguins

pytestmark = pytest.mark.slow


def test_second_night_in_bigquery__predicts_only_new_rows(bq_client, bq_dataset, penguin_bundle):
  source, output = f'{bq_dataset}.penguins', f'{bq_dataset}.predictions'
  load_penguins(bq_client, source)
  args = job_args(penguin_bundle, f'--input=bq://{source}', f'--output=bq://{output}', '--only_unscored',
                  f'--bq_temp_dataset={bq_dataset}', '--report=false')
  first = run_job.run([*args, '--run_id=night-1'])
  assert (first.rows_read, first.rows_predicted, first.rows_rejected, first.rows_skipped) == (344, 342, 2, 0)

  new = [{**row, penguins.KEY: f'new{i}'} for i, row in enumerate(penguins.table().slice(10, 20).to_pylist())]
  assert bq_client.insert_rows_json(source, new) == []
  second = run_job.run([*args, '--run_id=night-2'])
  assert second.rows_read == 364 and second.reconciled
  assert (second.rows_predicted, second.rows_skipped) == (20, 342)
  assert second.rows_rejected == 2  # rejected rows have no prediction: they are read and rejected again
  keys = {r[0] for r in bq_client.query(f'SELECT {penguins.KEY} FROM `{output}` WHERE run_id = "night-2"').result()}
  assert keys == {f'new{i}' for i in range(20)}

  # A re-run of night 2 replaces its own rows: they do not count as scored.
  again = run_job.run([*args, '--run_id=night-2'])
  assert (again.rows_predicted, again.rows_skipped) == (20, 342)
  total = list(bq_client.query(f'SELECT COUNT(*) FROM `{output}`').result())[0][0]
  assert total == 342 + 20
