"""ReadBigQueryBatches and WriteBigQueryBatches, each once through a TestPipeline against the emulator."""

import datetime

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from google.cloud import bigquery

from transforms import bigquery as bq
from transforms import dead_letters as dl

WHEN = datetime.datetime(2026, 11, 25, 17, 30, tzinfo=datetime.timezone.utc)


def test_read__typed_batches_of_the_selected_columns_that_pass_the_filter(bq_client, bq_dataset):
  table = bq.TableRef.parse(f'bq://{bq_dataset}.typed')
  bq_client.create_table(bigquery.Table(table.dotted, schema=[
      bigquery.SchemaField('id', 'STRING', mode='REQUIRED'), bigquery.SchemaField('n', 'INT64'),
      bigquery.SchemaField('x', 'FLOAT64'), bigquery.SchemaField('day', 'DATE'),
      bigquery.SchemaField('at', 'TIMESTAMP'), bigquery.SchemaField('unread', 'STRING')]))
  bq_client.insert_rows_json(table.dotted, [
      {'id': 'a', 'n': 1, 'x': 0.5, 'day': '2026-11-25', 'at': WHEN.isoformat(), 'unread': 'u'},
      {'id': 'b', 'n': None, 'x': None, 'day': None, 'at': None, 'unread': 'u'},
      {'id': 'c', 'n': 3, 'x': 1.5, 'day': '2026-11-24', 'at': WHEN.isoformat(), 'unread': 'u'}])
  schema = bq.arrow_schema([f.to_api_repr() for f in bq_client.get_table(table.dotted).schema[:5]])

  with test_pipeline.TestPipeline() as p:
    read = p | bq.ReadBigQueryBatches(table, schema, row_restriction="id != 'c'", batch_size=10,
                                      temp_dataset=bq_dataset)
    rows = read['batches'] | beam.FlatMap(lambda b: b.to_pylist())
    types = read['batches'] | 'Types' >> beam.Map(lambda b: [str(f.type) for f in b.schema])
    assert_that(rows, equal_to([
        {'id': 'a', 'n': 1, 'x': 0.5, 'day': datetime.date(2026, 11, 25), 'at': WHEN,
         dl.SOURCE: str(table), dl.ROW: None},
        {'id': 'b', 'n': None, 'x': None, 'day': None, 'at': None, dl.SOURCE: str(table), dl.ROW: None}]))
    assert_that(types, equal_to([['string', 'int64', 'double', 'date32[day]', 'timestamp[us, tz=UTC]', 'string',
                                  'int64']]), label='TypesAreTheTableSchemas')
    assert_that(read['dead_letters'], equal_to([]), label='NoDeadLetters')


def test_write__streamed_batches_land_typed_in_a_created_table(bq_client, bq_dataset):
  table = bq.TableRef.parse(f'bq://{bq_dataset}.written')
  schema = pa.schema([pa.field('id', pa.string(), nullable=False), ('p', pa.float32()),
                      ('at', pa.timestamp('us', tz='UTC'))])
  batch = pa.RecordBatch.from_pylist([{'id': 'a', 'p': 0.25, 'at': WHEN}, {'id': 'b', 'p': None, 'at': WHEN}],
                                     schema=schema)
  with test_pipeline.TestPipeline() as p:
    result = (p | beam.Create([batch])
              | bq.WriteBigQueryBatches(table, bq.table_schema(schema, {'id': 'key'}), method='STREAMING_INSERTS'))
    assert_that(result.failed_rows_with_errors, equal_to([]))

  rows = sorted((dict(r) for r in bq_client.list_rows(table.dotted)), key=lambda r: r['id'])
  assert rows == [{'id': 'a', 'p': 0.25, 'at': WHEN}, {'id': 'b', 'p': None, 'at': WHEN}]
  fields = bq_client.get_table(table.dotted).schema
  assert [(f.name, f.field_type, f.mode) for f in fields][0] == ('id', 'STRING', 'REQUIRED')
