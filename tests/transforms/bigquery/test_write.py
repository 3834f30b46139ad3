"""WriteBigQueryBatches (the streamed route) once through a TestPipeline against the emulator."""

import datetime

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.bigquery import tables as bq

WHEN = datetime.datetime(2026, 11, 25, 17, 30, tzinfo=datetime.timezone.utc)


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
