"""The whole job with its input, output and dead letters on gs://, against the Cloud Storage emulator."""

import json

import pyarrow as pa
import pytest
from apache_beam.io.filesystems import FileSystems

from pipelines import run as run_job
from testing import penguin_tables as penguins

pytestmark = pytest.mark.slow


def test_gs_input_and_output__same_predictions_as_a_local_run(tmp_path, gcs_prefix, penguin_bundle):
  penguins.write_parquet(f'{gcs_prefix}/in')
  penguins.write_parquet(str(tmp_path / 'in'))
  common = [f'--model={penguin_bundle.path}', f'--key_column={penguins.KEY}',
            f'--passthrough_columns={penguins.PASSTHROUGH}', '--run_id=gcs-run']

  remote = run_job.run([f'--input={gcs_prefix}/in/*.parquet', f'--output={gcs_prefix}/out', *common])
  local = run_job.run([f'--input={tmp_path}/in/*.parquet', f'--output={tmp_path}/out', *common])

  assert remote.output == f'{gcs_prefix}/out/gcs-run/{remote.attempt}'
  assert (remote.rows_read, remote.rows_predicted, remote.rows_rejected) == (344, 342, 2)
  assert remote.files_read == 2
  remote_rows = penguins.read_predictions(remote.output)
  assert remote_rows.num_rows == 342
  assert remote_rows.equals(penguins.read_predictions(local.output))
  with FileSystems.open(f'{gcs_prefix}/out/gcs-run/_run_summary.json') as f:  # the pointer, on gs:// too
    assert json.loads(f.read())['attempt'] == remote.attempt
  assert FileSystems.exists(remote.report)
  letters = FileSystems.match([f'{remote.dead_letter}/dead_letters-*.jsonl'])[0].metadata_list
  with FileSystems.open(letters[0].path) as f:
    rows = [json.loads(line) for line in f.read().decode().splitlines()]
  assert {r['reason_code'] for r in rows} == {'missing_value'}
  assert all(r['source'].startswith(f'{gcs_prefix}/in/') for r in rows)
  assert remote_rows.schema.field('year').type == pa.int64()
