"""BigQuery tables: names, the types they map to in Arrow, and the streamed sink.

Tables are read with our own Storage Read source (`transforms.bigquery.read`)
and, by default, written as Parquet files loaded by one load job when the run
publishes (`transforms.bigquery.publish`): both move Arrow, never a Python
object per row. `WriteBigQueryBatches` is the per-row route through Beam's
WriteToBigQuery, kept for the two methods that need rows: STREAMING_INSERTS
(rows visible at once) and STORAGE_WRITE_API (runs through Beam's Java
expansion service, so it needs Java on the launcher).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import re
from typing import Any, Mapping, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery
from apache_beam.io.gcp.bigquery_tools import RetryStrategy

from transforms.rows import counters
from transforms.rows import dead_letters as dl

SCHEME = 'bq://'
WRITE_METHODS = ('FILE_LOADS', 'STREAMING_INSERTS', 'STORAGE_WRITE_API')
# The methods that send rows, through WriteBigQueryBatches; FILE_LOADS is our Parquet load (transforms.bigquery.publish).
ROW_METHODS = ('STREAMING_INSERTS', 'STORAGE_WRITE_API')
_NAME = r'[A-Za-z0-9_\-]+'
_TABLE = re.compile(rf'^bq://(?P<project>[a-z](?:[a-z0-9\-.:]*[a-z0-9])?)\.(?P<dataset>\w+)\.(?P<table>{_NAME})$')

# BigQuery column types as Arrow types: what the Storage Read API's Arrow
# format and Parquet files use for the same data.
_ARROW_OF = {
    'STRING': pa.string(), 'JSON': pa.string(), 'BYTES': pa.binary(),
    'INTEGER': pa.int64(), 'INT64': pa.int64(), 'FLOAT': pa.float64(), 'FLOAT64': pa.float64(),
    'NUMERIC': pa.decimal128(38, 9), 'BIGNUMERIC': pa.decimal256(76, 38),
    'BOOLEAN': pa.bool_(), 'BOOL': pa.bool_(),
    'DATE': pa.date32(), 'DATETIME': pa.timestamp('us'), 'TIME': pa.time64('us'),
    'TIMESTAMP': pa.timestamp('us', tz='UTC'),
}
BIGQUERY_TYPES = tuple(_ARROW_OF)


@dataclasses.dataclass(frozen=True)
class TableRef:
  """A BigQuery table named as bq://PROJECT.DATASET.TABLE."""
  project: str
  dataset: str
  table: str

  @classmethod
  def parse(cls, uri: str) -> 'TableRef':
    match = _TABLE.match(uri.strip())
    if not match:
      raise ValueError(f'{uri!r} is not a BigQuery table; write bq://PROJECT.DATASET.TABLE')
    return cls(match['project'], match['dataset'], match['table'])

  @property
  def spec(self) -> str:
    """PROJECT:DATASET.TABLE, the form Beam's BigQuery IO takes."""
    return f'{self.project}:{self.dataset}.{self.table}'

  @property
  def sql(self) -> str:
    """`PROJECT.DATASET.TABLE`, quoted for standard SQL."""
    return f'`{self.project}.{self.dataset}.{self.table}`'

  @property
  def dotted(self) -> str:
    return f'{self.project}.{self.dataset}.{self.table}'

  def __str__(self) -> str:
    return SCHEME + self.dotted


def is_table(uri: Optional[str]) -> bool:
  return bool(uri) and uri.startswith(SCHEME)


def arrow_type(bq_type: str, mode: str = 'NULLABLE') -> pa.DataType:
  """The Arrow type of a BigQuery column; raises ValueError for nested and geography columns."""
  if bq_type.upper() not in _ARROW_OF:
    raise ValueError(f'BigQuery type {bq_type} is not supported as an input column')
  kind = _ARROW_OF[bq_type.upper()]
  return pa.list_(kind) if mode == 'REPEATED' else kind


def arrow_schema(fields: Sequence[Mapping[str, str]]) -> pa.Schema:
  """An Arrow schema from BigQuery field dicts ({'name', 'type', 'mode'})."""
  return pa.schema([pa.field(f['name'], arrow_type(f['type'], f.get('mode') or 'NULLABLE'),
                             nullable=(f.get('mode') or 'NULLABLE') != 'REQUIRED') for f in fields])


def bigquery_type(kind: pa.DataType) -> str:
  """The BigQuery column type that holds an Arrow type without loss."""
  checks = ((pa.types.is_boolean, 'BOOL'), (pa.types.is_integer, 'INT64'), (pa.types.is_floating, 'FLOAT64'),
            (pa.types.is_decimal, 'BIGNUMERIC'), (pa.types.is_date, 'DATE'), (pa.types.is_time, 'TIME'),
            (pa.types.is_binary, 'BYTES'), (pa.types.is_large_binary, 'BYTES'))
  if pa.types.is_timestamp(kind):
    return 'TIMESTAMP' if kind.tz else 'DATETIME'
  if pa.types.is_decimal(kind) and kind.precision <= 38 and kind.scale <= 9:
    return 'NUMERIC'
  for check, name in checks:
    if check(kind):
      return name
  return 'STRING'


def table_schema(schema: pa.Schema, descriptions: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
  """A BigQuery schema ({'fields': [...]}) for RecordBatches of `schema`."""
  descriptions = descriptions or {}
  fields = [bigquery_field(field) for field in schema]
  for entry in fields:
    if entry['name'] in descriptions:
      entry['description'] = descriptions[entry['name']]
  return {'fields': fields}


def bigquery_field(field: pa.Field) -> dict[str, Any]:
  """A BigQuery field for an Arrow one: a list is REPEATED (a ranking's top_items), a struct a RECORD of its
  fields (a token classifier's entities: a REPEATED RECORD)."""
  repeated = pa.types.is_list(field.type)
  kind = field.type.value_type if repeated else field.type
  entry = {'name': field.name, 'type': 'RECORD' if pa.types.is_struct(kind) else bigquery_type(kind),
           'mode': 'REPEATED' if repeated else 'NULLABLE' if field.nullable else 'REQUIRED'}
  if pa.types.is_struct(kind):
    entry['fields'] = [bigquery_field(kind.field(i)) for i in range(kind.num_fields)]
  return entry


def _json_value(value: Any) -> Any:
  if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
    return value.isoformat()
  if isinstance(value, bytes):
    return base64.b64encode(value).decode('ascii')
  return value


def to_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
  """JSON-ready rows: BigQuery's load and insert APIs take timestamps as ISO text."""
  return [{k: _json_value(v) for k, v in row.items()} for row in batch.to_pylist()]


class WriteBigQueryBatches(beam.PTransform):
  """Writes RecordBatches of one schema to a BigQuery table row by row, created if needed.

  Only for the methods that need rows (streamed, visible at once); a batch job
  loads Parquet files instead (`transforms.bigquery.publish`).

  Args:
    table: the destination.
    schema: the BigQuery schema ({'fields': [...]}, see `table_schema`).
    partition_field: a TIMESTAMP column to partition the table by day, or None.
    method: one of ROW_METHODS.
  """

  def __init__(self, table: TableRef, schema: Mapping[str, Any], *, partition_field: Optional[str] = None,
               method: str = 'STREAMING_INSERTS'):
    super().__init__()
    if method not in ROW_METHODS:
      raise ValueError(f'WriteBigQueryBatches sends rows with one of {", ".join(ROW_METHODS)}, not {method!r}')
    self._table = table
    self._schema = dict(schema)
    self._partition_field = partition_field
    self._method = method

  def expand(self, batches):
    extra = {}
    if self._partition_field:
      extra['additional_bq_parameters'] = {'timePartitioning': {'type': 'DAY', 'field': self._partition_field}}
    if self._method == 'STREAMING_INSERTS':  # a row BigQuery refuses for good comes back, not retried forever
      extra['insert_retry_strategy'] = RetryStrategy.RETRY_ON_TRANSIENT_ERROR
    return (batches
            | 'ToRows' >> beam.FlatMap(to_rows)
            | 'Write' >> WriteToBigQuery(
                self._table.spec, schema=self._schema, method=self._method,
                create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
                write_disposition=BigQueryDisposition.WRITE_APPEND, **extra))


def refused_rows(failed: tuple[str, dict, Any], *, key_name: str, run_id: str) -> pa.RecordBatch:
  """A dead letter for a row BigQuery refused, from WriteResult.failed_rows_with_errors.

  The job's count moves it from predicted to rejected (`pipelines.graph.finish.CountRows`), so it
  counts in every guard; `rows_not_written` shows it too.
  """
  destination, row, errors = failed
  reason = f'{destination} refused the row: {json.dumps(errors, default=str)[:1000]}'
  letters = dl.from_records([json.dumps(row, default=str)], source=f'{SCHEME}{destination.replace(":", ".")}',
                            rows=[None], code=dl.WRITE_ERROR, reasons=[reason], stage='write')
  key = row.get(key_name)
  letters = letters.set_column(0, 'key', pa.array([None if key is None else str(key)], pa.string()))
  counters.counter('rows_not_written').inc()
  return dl.stamp_run_id(letters, run_id)
