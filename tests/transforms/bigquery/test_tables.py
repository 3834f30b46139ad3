"""BigQuery table names, schema mapping and row conversion: pure functions, no BigQuery."""

import datetime
import json

import pyarrow as pa
import pytest

from models.bundle import Outputs
from models.inference import PredictionColumns
from transforms.bigquery import tables as bq
from transforms.rows import dead_letters as dl


def test_table_ref__parses_project_dataset_table():
  ref = bq.TableRef.parse('bq://my-project.sales_eu.daily-2026')
  assert (ref.project, ref.dataset, ref.table) == ('my-project', 'sales_eu', 'daily-2026')
  assert ref.spec == 'my-project:sales_eu.daily-2026'
  assert ref.sql == '`my-project.sales_eu.daily-2026`'
  assert str(ref) == 'bq://my-project.sales_eu.daily-2026'


@pytest.mark.parametrize('uri', ['bq://dataset.table', 'gs://b/t', 'bq://p.d.t; DROP TABLE x', 'bq://p.d.t`x'])
def test_table_ref__rejects_what_is_not_project_dataset_table(uri):
  with pytest.raises(ValueError, match='bq://PROJECT.DATASET.TABLE'):
    bq.TableRef.parse(uri)


def test_table_schema__prediction_columns_with_modes_and_descriptions():
  columns = PredictionColumns(Outputs('classification', ('a', 'b')), 'id', (pa.field('region', pa.string()),
                                                                           pa.field('year', pa.int64())),
                              'm', '1', 'r')
  schema = bq.table_schema(columns.schema, {'id': 'the key'})
  fields = {f['name']: f for f in schema['fields']}
  assert fields['id'] == {'name': 'id', 'type': 'STRING', 'mode': 'REQUIRED', 'description': 'the key'}
  assert [(f['name'], f['type'], f['mode']) for f in schema['fields']][1:] == [
      ('region', 'STRING', 'NULLABLE'), ('year', 'INT64', 'NULLABLE'), ('predicted_class', 'STRING', 'NULLABLE'),
      ('predicted_probability', 'FLOAT64', 'NULLABLE'), ('probability_a', 'FLOAT64', 'NULLABLE'),
      ('probability_b', 'FLOAT64', 'NULLABLE'), ('model_name', 'STRING', 'NULLABLE'),
      ('model_version', 'STRING', 'NULLABLE'), ('run_id', 'STRING', 'NULLABLE'),
      ('predicted_at', 'TIMESTAMP', 'NULLABLE')]


def test_arrow_schema__bigquery_types_map_to_the_types_parquet_uses():
  schema = bq.arrow_schema([{'name': 'k', 'type': 'STRING', 'mode': 'REQUIRED'}, {'name': 'n', 'type': 'INTEGER'},
                            {'name': 'x', 'type': 'FLOAT'}, {'name': 'd', 'type': 'DATE'},
                            {'name': 't', 'type': 'TIMESTAMP'}, {'name': 'tags', 'type': 'STRING', 'mode': 'REPEATED'}])
  assert schema == pa.schema([pa.field('k', pa.string(), nullable=False), ('n', pa.int64()), ('x', pa.float64()),
                              ('d', pa.date32()), ('t', pa.timestamp('us', tz='UTC')), ('tags', pa.list_(pa.string()))])
  with pytest.raises(ValueError, match='GEOGRAPHY is not supported'):
    bq.arrow_schema([{'name': 'g', 'type': 'GEOGRAPHY'}])


def test_bigquery_type__round_trips_the_arrow_schema_of_a_table():
  for kind in ('STRING', 'INT64', 'FLOAT64', 'BOOL', 'DATE', 'DATETIME', 'TIME', 'TIMESTAMP', 'NUMERIC', 'BYTES'):
    assert bq.bigquery_type(bq.arrow_type(kind)) == kind


def test_to_rows__json_ready_values():
  when = datetime.datetime(2026, 11, 25, 17, 30, tzinfo=datetime.timezone.utc)
  batch = pa.RecordBatch.from_pydict({'k': ['a'], 'p': pa.array([0.25], pa.float32()), 'at': [when],
                                      'b': [b'\x00\x01'], 'n': [None]})
  rows = bq.to_rows(batch)
  assert rows == [{'k': 'a', 'p': 0.25, 'at': '2026-11-25T17:30:00+00:00', 'b': 'AAE=', 'n': None}]
  json.dumps(rows)


def test_refused_rows__a_dead_letter_with_bigquerys_reason():
  errors = [{'reason': 'invalid', 'message': 'no such field: extra'}]
  letters = bq.refused_rows(('p:d.predictions', {'id': 7, 'extra': 1}, errors), key_name='id', run_id='r1')
  [row] = letters.to_pylist()
  assert row['key'] == '7' and row['source'] == 'bq://p.d.predictions' and row['row'] is None
  assert row['stage'] == 'write' and row['reason_code'] == dl.WRITE_ERROR and row['run_id'] == 'r1'
  assert 'no such field: extra' in row['reason'] and json.loads(row['record']) == {'id': 7, 'extra': 1}
  assert letters.schema.names == [*dl.SCHEMA.names, 'run_id']


def test_write_batches__sends_rows_only_with_a_row_method():
  table = bq.TableRef('p', 'd', 't')
  with pytest.raises(ValueError, match="sends rows with one of STREAMING_INSERTS, STORAGE_WRITE_API, not 'FILE_LOADS'"):
    bq.WriteBigQueryBatches(table, {'fields': []}, method='FILE_LOADS')
