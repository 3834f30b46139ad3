"""The whole job with BigQuery in and out, against the BigQuery and Cloud Storage emulators."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from apache_beam.io.filesystems import FileSystems
from google.cloud import bigquery

from pipelines import run as run_job
from transforms.bigquery import publish as bigquery_publish
from transforms.files import publish
from testing import penguin_tables as penguins
from testing.cloud_fixtures import BUCKET, PROJECT
from transforms.bigquery.tables import TableRef

pytestmark = pytest.mark.slow

_TYPES = {pa.string(): 'STRING', pa.float64(): 'FLOAT64', pa.int64(): 'INT64'}


def load_penguins(client: bigquery.Client, table: str) -> None:
  data = penguins.table()
  schema = [bigquery.SchemaField(f.name, _TYPES[f.type], mode='REQUIRED' if f.name == penguins.KEY else 'NULLABLE')
            for f in data.schema]
  client.create_table(bigquery.Table(table, schema=schema))
  rows = data.to_pylist()
  for start in range(0, len(rows), 100):
    assert client.insert_rows_json(table, rows[start:start + 100]) == []


def table_rows(client: bigquery.Client, table: str) -> pa.Table:
  rows = [dict(r) for r in client.list_rows(table)]
  return pa.Table.from_pylist(rows).sort_by(penguins.KEY)


def file_run(tmp_path, bundle) -> pa.Table:
  penguins.write_parquet(str(tmp_path / 'in'))
  summary = run_job.run([f'--input={tmp_path}/in/*.parquet', f'--output={tmp_path}/out', f'--model={bundle.path}',
                         f'--key_column={penguins.KEY}', f'--passthrough_columns={penguins.PASSTHROUGH}',
                         '--run_id=file-run'])
  return penguins.read_predictions(summary.output)


def assert_same_predictions(got: pa.Table, want: pa.Table) -> None:
  assert got.column(penguins.KEY).to_pylist() == want.column(penguins.KEY).to_pylist()
  for name in ('species', 'year', 'predicted_class', 'model_name', 'model_version'):
    assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
  for name in ('probability_Adelie', 'probability_Chinstrap', 'probability_Gentoo', 'predicted_probability'):
    np.testing.assert_allclose(got.column(name).to_numpy(), want.column(name).to_numpy(), rtol=1e-6, err_msg=name)


def job_args(bundle, *extra):
  return [f'--model={bundle.path}', f'--key_column={penguins.KEY}', f'--passthrough_columns={penguins.PASSTHROUGH}',
          f'--temp_location=gs://{BUCKET}/tmp', '--project=test-project', *extra]


def test_table_in_table_out__same_rows_as_the_file_run(tmp_path, bq_client, bq_dataset, penguin_bundle):
  load_penguins(bq_client, f'{bq_dataset}.penguins')
  summary = run_job.run(job_args(penguin_bundle, f'--input=bq://{bq_dataset}.penguins',
                                 f'--output=bq://{bq_dataset}.predictions', '--run_id=bq-run',
                                 f'--bq_temp_dataset={bq_dataset}'))

  assert (summary.rows_read, summary.rows_predicted, summary.rows_rejected) == (344, 342, 2)
  assert summary.rows_written == 342
  got = table_rows(bq_client, f'{bq_dataset}.predictions')
  assert_same_predictions(got, file_run(tmp_path, penguin_bundle))
  assert set(got.column('run_id').to_pylist()) == {'bq-run'}
  letters = list(bq_client.list_rows(f'{bq_dataset}.predictions_dead_letters'))
  assert sorted(r['reason_code'] for r in letters) == ['missing_value', 'missing_value']
  assert {r['source'] for r in letters} == {f'bq://{bq_dataset}.penguins'}
  table = bq_client.get_table(f'{bq_dataset}.predictions')
  assert table.time_partitioning.field == 'predicted_at'
  fields = {f.name: f for f in table.schema}
  assert fields[penguins.KEY].mode == 'REQUIRED' and fields['year'].field_type in ('INT64', 'INTEGER')
  assert 'Gentoo' in fields['probability_Gentoo'].description


def test_gs_files_in_table_out__a_rerun_of_the_run_id_replaces_its_rows(gcs_prefix, bq_client, bq_dataset,
                                                                         penguin_bundle):
  penguins.write_parquet(f'{gcs_prefix}/in')
  args = job_args(penguin_bundle, f'--input={gcs_prefix}/in/*.parquet', f'--output=bq://{bq_dataset}.predictions',
                  f'--dead_letter=bq://{bq_dataset}.rejected', '--bq_write_method=STREAMING_INSERTS')
  first = run_job.run([*args, '--run_id=nightly'])
  second = run_job.run([*args, '--run_id=nightly'])
  other = run_job.run([*args, '--run_id=other'])

  assert first.rows_written == second.rows_written == other.rows_written == 342
  got = table_rows(bq_client, f'{bq_dataset}.predictions')
  assert got.num_rows == 2 * 342
  nightly = got.filter(pa.compute.equal(got.column('run_id'), 'nightly'))
  assert sorted(set(nightly.column(penguins.KEY).to_pylist())) == nightly.column(penguins.KEY).to_pylist()
  letters = [dict(r) for r in bq_client.list_rows(f'{bq_dataset}.rejected')]
  assert sorted(r['run_id'] for r in letters) == ['nightly', 'nightly', 'other', 'other']
  assert all(r['source'].startswith(f'{gcs_prefix}/in/') and r['row'] > 0 for r in letters)


def test_query_with_parameters__predicts_exactly_the_rows_it_selects(bq_client, bq_dataset, penguin_bundle):
  load_penguins(bq_client, f'{bq_dataset}.penguins')
  query = f'SELECT * FROM `{bq_dataset}.penguins` WHERE island = @island AND body_mass_g >= @min_mass'
  summary = run_job.run(job_args(penguin_bundle, f'--input_query={query}', '--query_parameter=island=STRING:Biscoe',
                                 '--query_parameter=min_mass=FLOAT64:5000', f'--bq_temp_dataset={bq_dataset}',
                                 f'--output=bq://{bq_dataset}.big_biscoe', '--run_id=query-run'))

  data = penguins.table().to_pylist()
  want = sorted(r[penguins.KEY] for r in data if r['island'] == 'Biscoe' and (r['body_mass_g'] or 0) >= 5000)
  assert summary.rows_read == summary.rows_predicted == len(want) > 10
  got = table_rows(bq_client, f'{bq_dataset}.big_biscoe')
  assert got.column(penguins.KEY).to_pylist() == want
  assert set(got.column('predicted_class').to_pylist()) == {'Gentoo'}


def test_input_filter__reads_only_the_rows_the_server_keeps(tmp_path, bq_client, bq_dataset, penguin_bundle):
  load_penguins(bq_client, f'{bq_dataset}.penguins')
  summary = run_job.run(job_args(penguin_bundle, f'--input=bq://{bq_dataset}.penguins', "--input_filter=year = 2009",
                                 f'--output={tmp_path}/out', '--run_id=filtered', f'--bq_temp_dataset={bq_dataset}'))
  want = sorted(r[penguins.KEY] for r in penguins.table().to_pylist() if r['year'] == 2009)
  assert summary.rows_read == summary.rows_predicted + summary.rows_rejected == len(want)
  got = penguins.read_predictions(summary.output)
  assert set(got.column('year').to_pylist()) == {2009}


def _tables(client: bigquery.Client, dataset: str) -> list[str]:
  return sorted(t.table_id for t in client.list_tables(dataset))


def _staged_files(run_id: str) -> list[str]:
  return [m.path for m in FileSystems.match([f'gs://{BUCKET}/tmp/batch-inference/{run_id}/**'])[0].metadata_list]


def _run_rows(client: bigquery.Client, table: str, run_id: str) -> list[str]:
  got = table_rows(client, table)
  return got.filter(pc.equal(got.column('run_id'), run_id)).column(penguins.KEY).to_pylist()


def test_file_loads_rerun__swaps_the_runs_rows_and_leaves_no_staging_behind(bq_client, bq_dataset, penguin_bundle):
  load_penguins(bq_client, f'{bq_dataset}.penguins')
  args = job_args(penguin_bundle, f'--input=bq://{bq_dataset}.penguins', f'--output=bq://{bq_dataset}.predictions',
                  f'--bq_temp_dataset={bq_dataset}')
  first = run_job.run([*args, '--run_id=nightly'])
  second = run_job.run([*args, '--run_id=nightly', '--input_filter=year = 2009'])  # the night re-run on less data
  other = run_job.run([*args, '--run_id=other'])

  birds = [r for r in penguins.table().to_pylist() if r['year'] == 2009]
  want = sorted(r[penguins.KEY] for r in birds if r['bill_length_mm'] is not None)
  want_letters = len(birds) - len(want)
  assert first.rows_written == other.rows_written == 342 and second.rows_written == len(want) < 342
  assert _run_rows(bq_client, f'{bq_dataset}.predictions', 'nightly') == want  # sorted, so no duplicates
  assert len(_run_rows(bq_client, f'{bq_dataset}.predictions', 'other')) == 342
  letters = [dict(r) for r in bq_client.list_rows(f'{bq_dataset}.predictions_dead_letters')]
  assert sorted(r['run_id'] for r in letters) == ['nightly'] * want_letters + ['other', 'other']
  assert _tables(bq_client, bq_dataset) == ['penguins', 'predictions', 'predictions_dead_letters']
  assert _staged_files('nightly') == _staged_files('other') == []
  pointer = publish.read_pointer(f'gs://{BUCKET}/tmp/runs', 'nightly')
  assert pointer['attempt'] == second.attempt and pointer['output'] == f'bq://{bq_dataset}.predictions'
  assert FileSystems.exists(pointer['report'])


def test_failure_after_the_files_are_staged__leaves_the_table_as_it_was(bq_client, bq_dataset, penguin_bundle,
                                                                         monkeypatch):
  load_penguins(bq_client, f'{bq_dataset}.penguins')
  args = job_args(penguin_bundle, f'--input=bq://{bq_dataset}.penguins', f'--output=bq://{bq_dataset}.predictions',
                  f'--bq_temp_dataset={bq_dataset}', '--run_id=nightly')
  first = run_job.run(args)
  before = table_rows(bq_client, f'{bq_dataset}.predictions')

  def staged_then_fail(client, target, staging, run_id):
    assert client.get_table(staging.dotted).num_rows > 0 and _staged_files(run_id)  # the new rows were written
    raise ValueError('the replace was refused')

  monkeypatch.setattr(bigquery_publish, 'replace_run_rows', staged_then_fail)
  with pytest.raises(run_job.RunError, match=f'(?s)the replace was refused.*nothing was published to bq://{bq_dataset}'):
    run_job.run([*args, '--input_filter=year = 2009'])

  assert table_rows(bq_client, f'{bq_dataset}.predictions').equals(before)
  assert _tables(bq_client, bq_dataset) == ['penguins', 'predictions', 'predictions_dead_letters']
  assert _staged_files('nightly') == []
  assert publish.read_pointer(f'gs://{BUCKET}/tmp/runs', 'nightly')['attempt'] == first.attempt


def test_not_waiting__a_table_run_publishes_and_status_reads_its_summary(bq_client, bq_dataset, penguin_bundle,
                                                                         capsys):
  from pipelines.record import status
  load_penguins(bq_client, f'{bq_dataset}.penguins')
  args = job_args(penguin_bundle, f'--input=bq://{bq_dataset}.penguins', f'--output=bq://{bq_dataset}.predictions',
                  f'--bq_temp_dataset={bq_dataset}', '--run_id=scheduled')
  assert run_job.main([*args, '--wait_for_job=false']) == 0
  assert len(_run_rows(bq_client, f'{bq_dataset}.predictions', 'scheduled')) == 342
  capsys.readouterr()
  assert status.main(args) == 0
  said = capsys.readouterr().out
  assert 'Run scheduled: DONE' in said and 'rows in table            342' in said and 'at snapshot' in said


@pytest.mark.slow
def test_at_scale__200k_rows_table_to_table_reconcile_and_equal_the_parquet_path(tmp_path, bq_client, bq_dataset,
                                                                                 penguin_bundle):
  data = penguins.many(200_000)
  source = penguins.load_table(bq_client, BUCKET, bq_dataset, 'observations', data)
  (tmp_path / 'in').mkdir()
  pa.parquet.write_table(data, tmp_path / 'in' / 'observations.parquet')
  common = [f'--model={penguin_bundle.path}', f'--key_column={penguins.KEY}',
            f'--passthrough_columns={penguins.PASSTHROUGH}', '--run_id=big']
  tables = run_job.run([*common, f'--input={source}', f'--output=bq://{bq_dataset}.predictions',
                        f'--temp_location=gs://{BUCKET}/tmp', f'--project={PROJECT}', f'--bq_temp_dataset={bq_dataset}'])
  files = run_job.run([*common, f'--input={tmp_path}/in/*.parquet', f'--output={tmp_path}/out'])

  rejected = 2 * 200_000 // 344  # two of every 344 penguins lack measurements
  assert (tables.rows_read, tables.rows_rejected) == (200_000, files.rows_rejected) and tables.reconciled
  assert abs(tables.rows_rejected - rejected) <= 2 and tables.rows_written == tables.rows_predicted
  got = penguins.read_table(bq_client, PROJECT, TableRef.parse(f'bq://{bq_dataset}.predictions'))
  got = got.sort_by(penguins.KEY).drop_columns(['predicted_at'])
  assert got.num_rows == files.rows_predicted == tables.rows_predicted
  assert_same_predictions(got, penguins.read_predictions(files.output))


def test_integer_key__stays_int64_in_the_output_table(bq_client, bq_dataset, penguin_bundle):
  data = penguins.table()
  data = data.set_column(0, 'id', pa.array(range(5_000_000_000, 5_000_000_000 + data.num_rows), pa.int64()))
  client_table = f'{bq_dataset}.penguins_int_ids'
  schema = [bigquery.SchemaField(f.name, _TYPES[f.type]) for f in data.schema]
  bq_client.create_table(bigquery.Table(client_table, schema=schema))
  rows = data.to_pylist()
  for start in range(0, len(rows), 100):
    assert bq_client.insert_rows_json(client_table, rows[start:start + 100]) == []
  summary = run_job.run([f'--model={penguin_bundle.path}', '--key_column=id', f'--input=bq://{client_table}',
                         f'--output=bq://{bq_dataset}.int_key_predictions', '--run_id=int-keys',
                         f'--temp_location=gs://{BUCKET}/tmp', '--project=test-project'])
  assert summary.rows_predicted == 342
  fields = {f.name: f for f in bq_client.get_table(f'{bq_dataset}.int_key_predictions').schema}
  assert fields['id'].field_type in ('INT64', 'INTEGER')
  got = sorted(r['id'] for r in bq_client.list_rows(f'{bq_dataset}.int_key_predictions'))
  letters = [r['key'] for r in bq_client.list_rows(f'{bq_dataset}.int_key_predictions_dead_letters')]
  assert sorted(got + [int(k) for k in letters]) == list(range(5_000_000_000, 5_000_000_000 + data.num_rows))
