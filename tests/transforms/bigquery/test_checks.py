"""Preflight checks against the BigQuery emulator: each fails fast, naming what is wrong."""

import pytest
from google.cloud import bigquery

from pipelines import run as run_job
from transforms.bigquery import checks as bqp
from testing import penguin_tables as penguins
from tests.transforms.bigquery.test_pipeline import job_args, load_penguins
from transforms.bigquery.tables import TableRef


def _table(dataset: str, name: str) -> TableRef:
  return TableRef.parse(f'bq://{dataset}.{name}')


def _check(bq_client, table, bundle, passthrough=('species',)):
  return bqp.check_input_table(bq_client, table, bundle.features, key_column=penguins.KEY, passthrough=passthrough)


def test_input_table__missing(bq_client, bq_dataset, penguin_bundle):
  with pytest.raises(ValueError, match=r'input table bq://test-project\.test_\w+\.nowhere does not exist'):
    _check(bq_client, _table(bq_dataset, 'nowhere'), penguin_bundle)


def test_input_table__missing_required_column(bq_client, bq_dataset, penguin_bundle):
  schema = [bigquery.SchemaField(penguins.KEY, 'STRING'), bigquery.SchemaField('island', 'STRING'),
            bigquery.SchemaField('species', 'STRING')]
  bq_client.create_table(bigquery.Table(f'{bq_dataset}.thin', schema=schema))
  with pytest.raises(ValueError, match='has no column bill_length_mm, bill_depth_mm, flipper_length_mm'):
    _check(bq_client, _table(bq_dataset, 'thin'), penguin_bundle)


def test_input_table__incompatible_column_type(bq_client, bq_dataset, penguin_bundle):
  schema = [bigquery.SchemaField(f.name, 'FLOAT64') for f in penguin_bundle.features.features]
  schema = [bigquery.SchemaField('bill_length_mm', 'DATE') if f.name == 'bill_length_mm' else f for f in schema]
  schema += [bigquery.SchemaField(penguins.KEY, 'STRING'), bigquery.SchemaField('species', 'STRING')]
  bq_client.create_table(bigquery.Table(f'{bq_dataset}.dates', schema=schema))
  with pytest.raises(ValueError, match='column bill_length_mm is NULLABLE DATE, but the model reads it as float'):
    _check(bq_client, _table(bq_dataset, 'dates'), penguin_bundle)


def test_input_table__arrow_schema_of_the_needed_columns(bq_client, bq_dataset, penguin_bundle):
  load_penguins(bq_client, f'{bq_dataset}.penguins')
  schema = _check(bq_client, _table(bq_dataset, 'penguins'), penguin_bundle, passthrough=('year',))
  assert schema.names[0] == penguins.KEY and 'year' in schema.names and 'species' not in schema.names
  assert str(schema.field('year').type) == 'int64' and str(schema.field('bill_length_mm').type) == 'double'


def test_query__malformed_fails_fast_with_bigquerys_message(bq_client, bq_dataset):
  with pytest.raises(ValueError, match=r'--input_query is not valid: (?s:.*)[Ss]yntax error'):
    bqp.dry_run(bq_client, f'SELEC * FROM `{bq_dataset}.penguins`')


def test_query__dry_run_of_a_good_query_reports_bytes(bq_client, bq_dataset):
  load_penguins(bq_client, f'{bq_dataset}.penguins')
  assert bqp.dry_run(bq_client, f'SELECT * FROM `{bq_dataset}.penguins` WHERE year = @y',
                     [bqp.parse_parameter('y=INT64:2008')]) >= 0


def test_query__naming_a_missing_table_fails_fast(bq_client, bq_dataset):
  with pytest.raises(ValueError, match='--input_query reads something that does not exist: .*nowhere'):
    bqp.dry_run(bq_client, f'SELECT * FROM `{bq_dataset}.nowhere`')


def test_query__malformed_fails_the_run_before_any_table_is_written(bq_client, bq_dataset, penguin_bundle):
  with pytest.raises(ValueError, match='--input_query is not valid'):
    run_job.run(job_args(penguin_bundle, f'--input_query=SELECT FROM `{bq_dataset}.x` WHERE',
                         f'--bq_temp_dataset={bq_dataset}', f'--output=bq://{bq_dataset}.out'))
  assert [t.table_id for t in bq_client.list_tables(bq_dataset)] == []


def test_output__missing_dataset(bq_client):
  with pytest.raises(ValueError, match='output dataset test-project.no_such_dataset does not exist'):
    bqp.check_output_table(bq_client, TableRef('test-project', 'no_such_dataset', 't'),
                           {'fields': [{'name': 'k', 'type': 'STRING', 'mode': 'REQUIRED'}]})


def test_output__existing_table_with_an_incompatible_schema(bq_client, bq_dataset):
  bq_client.create_table(bigquery.Table(f'{bq_dataset}.old', schema=[
      bigquery.SchemaField('k', 'INT64'), bigquery.SchemaField('legacy', 'STRING', mode='REQUIRED')]))
  want = {'fields': [{'name': 'k', 'type': 'STRING', 'mode': 'REQUIRED'},
                     {'name': 'predicted_at', 'type': 'TIMESTAMP', 'mode': 'NULLABLE'}]}
  with pytest.raises(ValueError) as error:
    bqp.check_output_table(bq_client, _table(bq_dataset, 'old'), want)
  assert 'k is INTEGER, the job writes STRING' in str(error.value) or 'k is INT64, the job writes STRING' in str(
      error.value)
  assert 'no column predicted_at' in str(error.value)
  assert 'legacy is REQUIRED but the job does not write it' in str(error.value)


def test_output__a_missing_table_is_fine_and_is_not_created_by_the_check(bq_client, bq_dataset):
  want = {'fields': [{'name': 'k', 'type': 'STRING', 'mode': 'REQUIRED', 'description': 'the key'},
                     {'name': 'predicted_at', 'type': 'TIMESTAMP', 'mode': 'NULLABLE'}]}
  bqp.check_output_table(bq_client, _table(bq_dataset, 'fresh'), want)
  assert [t.table_id for t in bq_client.list_tables(bq_dataset)] == []


def test_output__missing_dataset_fails_the_run_before_the_query_runs(bq_client, bq_dataset, penguin_bundle):
  load_penguins(bq_client, f'{bq_dataset}.penguins')
  with pytest.raises(ValueError, match='output dataset test-project.absent does not exist'):
    run_job.run(job_args(penguin_bundle, f'--input_query=SELECT * FROM `{bq_dataset}.penguins`',
                         f'--bq_temp_dataset={bq_dataset}', '--output=bq://test-project.absent.out'))
  assert [t.table_id for t in bq_client.list_tables(bq_dataset)] == ['penguins']


def test_preflight_only__checks_tables_and_queries_and_changes_nothing(bq_client, bq_dataset, penguin_bundle, capsys):
  load_penguins(bq_client, f'{bq_dataset}.penguins')
  common = job_args(penguin_bundle, f'--output=bq://{bq_dataset}.out', '--preflight_only')
  assert run_job.main([*common, f'--input=bq://{bq_dataset}.penguins']) == 0
  said = capsys.readouterr().out
  assert f'input bq://{bq_dataset}.penguins: has the key and feature columns' in said
  assert f'output bq://{bq_dataset}.out: the dataset exists' in said
  assert run_job.main([*common, f'--input_query=SELECT * FROM `{bq_dataset}.penguins`',
                       f'--bq_temp_dataset={bq_dataset}']) == 0
  assert '--input_query is valid and processes' in capsys.readouterr().out
  assert [t.table_id for t in bq_client.list_tables(bq_dataset)] == ['penguins']  # no query table, no output table

  bq_client.query(f'CREATE TABLE `{bq_dataset}.thin` AS SELECT penguin_id, island FROM `{bq_dataset}.penguins`'
                  ).result()
  assert run_job.main([*common, f'--input=bq://{bq_dataset}.thin']) == 2
  error = capsys.readouterr().err
  assert error.startswith('error: preflight failed:') and f'input table bq://{bq_dataset}.thin has no column' in error
