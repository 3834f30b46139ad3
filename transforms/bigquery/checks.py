"""BigQuery's control plane, through google-cloud-bigquery: the client, the tables' column
descriptions, the checks the launcher runs before any worker starts, and the query input saved as
a table.

The data itself moves through the Storage Read API (transforms/bigquery/read.py)
and load jobs (transforms/bigquery/publish.py); this module only sends
metadata calls, dry runs and the query.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
from typing import Any, Optional, Sequence

import pyarrow as pa
from google.api_core import exceptions
from google.cloud import bigquery

from transforms.bigquery.tables import BIGQUERY_TYPES, TableRef, arrow_schema, arrow_type
from transforms.bigquery.read import ReadBigQueryStreams, ReadSession
from transforms.features.spec import FeatureSpec
from transforms.rows.validation import accepts, check_schema

_PARAMETER_TYPES = {
    'STRING': str, 'INT64': int, 'FLOAT64': float, 'BOOL': lambda v: v.lower() in ('true', '1', 'yes'),
    'NUMERIC': decimal.Decimal, 'BIGNUMERIC': decimal.Decimal, 'DATE': datetime.date.fromisoformat,
    'DATETIME': datetime.datetime.fromisoformat, 'TIMESTAMP': datetime.datetime.fromisoformat,
}
QUERY_RESULT_HOURS = 24


@dataclasses.dataclass(frozen=True)
class BigQueryInput:
  """The table the job reads, the Arrow schema of the columns it reads, and its read session.

  `table` and `schema` are None for a query that was only dry-run (--preflight_only).
  """
  table: Optional[TableRef]
  schema: Optional[pa.Schema]
  bytes_processed: Optional[int] = None  # what the query costs, for --input_query
  session: Optional[ReadSession] = None
  query: Optional[str] = None  # --input_query, whose result `table` holds
  query_parameters: tuple[str, ...] = ()

  @property
  def tallies(self) -> dict[str, str]:
    """The read step's outputs the run counts beside its batches: none."""
    return {}

  @property
  def snapshot_time(self) -> Optional[str]:
    return self.session.snapshot_time if self.session else None

  def read(self, columns: Sequence[str], batch_size: int) -> ReadBigQueryStreams:
    """The read step: `{'batches', DEAD_LETTERS}` from the session's streams (it reads the columns it was
    opened with)."""
    return ReadBigQueryStreams(self.session, batch_size=batch_size)

  def describe(self) -> dict[str, Any]:
    """What the manifest records of the input: the table, its snapshot, the filter and the query."""
    return {'kind': 'table', 'table': str(self.table), 'snapshot_time': self.snapshot_time,
            'filter': self.session.row_restriction if self.session else None, 'query': self.query,
            'query_parameters': list(self.query_parameters)}


def client(project: str) -> bigquery.Client:
  return bigquery.Client(project=project)


def home_project(opts) -> Optional[str]:
  """The project a BigQuery input lives in: the input table's, or the --bq_temp_dataset's."""
  if opts.input:
    return TableRef.parse(opts.input).project
  temp_dataset = opts.temp_dataset()
  return temp_dataset[0] if temp_dataset else None


def parse_parameter(text: str) -> bigquery.ScalarQueryParameter:
  """NAME=TYPE:VALUE as a typed query parameter."""
  name, sep, rest = text.partition('=')
  kind, sep2, value = rest.partition(':')
  kind = kind.strip().upper()
  if not (sep and sep2 and name.strip()) or kind not in _PARAMETER_TYPES:
    raise ValueError(f'--query_parameter {text!r}: write NAME=TYPE:VALUE with TYPE one of '
                     f'{", ".join(_PARAMETER_TYPES)}')
  try:
    return bigquery.ScalarQueryParameter(name.strip(), kind, _PARAMETER_TYPES[kind](value))
  except (ValueError, decimal.InvalidOperation) as e:
    raise ValueError(f'--query_parameter {text!r}: {value!r} is not a {kind}: {e}') from None


def job_config(parameters: Sequence[bigquery.ScalarQueryParameter], **kwargs) -> bigquery.QueryJobConfig:
  return bigquery.QueryJobConfig(query_parameters=list(parameters), use_legacy_sql=False, **kwargs)


def error_reason(error: exceptions.GoogleAPICallError) -> str:
  """BigQuery's own words, without the request URL."""
  errors = getattr(error, 'errors', None) or []
  return '; '.join(e.get('message', '') for e in errors if isinstance(e, dict)) or error.message


def dry_run(bq: bigquery.Client, query: str, parameters: Sequence[bigquery.ScalarQueryParameter] = ()) -> int:
  """Bytes the query would process; raises ValueError with BigQuery's message for a bad query."""
  try:
    job = bq.query(query, job_config=job_config(parameters, dry_run=True, use_query_cache=False))
  except exceptions.BadRequest as e:
    raise ValueError(f'--input_query is not valid: {error_reason(e)}') from None
  except exceptions.NotFound as e:
    raise ValueError(f'--input_query reads something that does not exist: {error_reason(e)}') from None
  return int(job.total_bytes_processed or 0)


def materialize_query(bq: bigquery.Client, query: str, parameters: Sequence[bigquery.ScalarQueryParameter], *,
                      temp_dataset: tuple[Optional[str], str], run_id: str) -> tuple[TableRef, int]:
  """Saves the query's result as a table that expires in a day, for the Storage Read API to read.

  A CREATE TABLE ... AS statement carries the query parameters and an
  expiration in one job. `temp_dataset` is (project, dataset) (`--bq_temp_dataset`); with no project,
  the client's.
  """
  bytes_processed = dry_run(bq, query, parameters)
  project, dataset_id = temp_dataset
  table = TableRef(project or bq.project, dataset_id, 'query_' + ''.join(c if c.isalnum() else '_' for c in run_id))
  ddl = (f'CREATE OR REPLACE TABLE {table.sql} '
         f'OPTIONS (expiration_timestamp = TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL {QUERY_RESULT_HOURS} HOUR)) '
         f'AS {query}')
  try:
    bq.query(ddl, job_config=job_config(parameters)).result()
  except exceptions.GoogleAPICallError as e:
    raise ValueError(f'--input_query failed: {error_reason(e)}') from None
  return table, bytes_processed


def check_input_table(bq: bigquery.Client, table: TableRef, spec: FeatureSpec, *, key_column: str,
                      passthrough: Sequence[str]) -> pa.Schema:
  """The Arrow schema of the columns the job reads; raises ValueError naming a missing
  table, a missing required column or a column type the feature cannot take."""
  try:
    found = bq.get_table(table.dotted)
  except exceptions.NotFound:
    raise ValueError(f'input table {table} does not exist (or this account cannot see it)') from None
  columns = {f.name: f for f in found.schema}
  read_as = pa.schema([pa.field(name, _arrow_type(f.field_type, f.mode or 'NULLABLE')) for name, f in columns.items()])
  checked = check_schema(read_as, spec, key_column=key_column, passthrough=passthrough)
  missing = list(dict.fromkeys([*checked.missing, *(column for _, column in checked.absent)]))
  if missing:
    raise ValueError(f'input table {table} has no column {", ".join(missing)}; it has {", ".join(columns)}')
  for feature in spec.features:
    if feature.name in checked.unreadable:
      field = columns[feature.name]
      raise ValueError(f'input table {table}: column {feature.name} is {field.mode} {field.field_type}, but the '
                       f'model reads it as {feature.dtype} (accepted: {", ".join(_accepted(feature.dtype))})')
  wanted = [name for name in dict.fromkeys([key_column, *spec.columns, *passthrough]) if name in columns]
  try:
    return arrow_schema([columns[name].to_api_repr() for name in wanted])
  except ValueError as e:
    raise ValueError(f'input table {table}: {e}') from None


def _arrow_type(bq_type: str, mode: str = 'NULLABLE') -> pa.DataType:
  """The Arrow type a BigQuery column is read as. JSON (a document, not a value) and the types the reader
  does not take get a stand-in no feature accepts."""
  if bq_type == 'JSON':
    return pa.struct([])
  try:
    return arrow_type(bq_type, mode)
  except ValueError:
    return pa.struct([])


def _accepted(dtype: str) -> list[str]:
  """The BigQuery column types a feature of `dtype` takes (`validation.accepts` of their Arrow types)."""
  return sorted(t for t in BIGQUERY_TYPES if accepts(_arrow_type(t), dtype))


def check_dataset(bq: bigquery.Client, table: TableRef) -> None:
  """The dataset of an output table exists: the job creates tables, not datasets."""
  try:
    bq.get_dataset(f'{table.project}.{table.dataset}')
  except exceptions.NotFound:
    raise ValueError(f'output dataset {table.project}.{table.dataset} does not exist; create it first '
                     f'(bq mk --dataset {table.project}:{table.dataset})') from None


def check_output_table(bq: bigquery.Client, table: TableRef, schema: dict) -> None:
  """Checks that the output dataset exists and that the table, if present, takes every column the
  job writes. A missing table is created by the job when it publishes (or by Beam when streaming)."""
  check_dataset(bq, table)
  try:
    existing = {f.name: f for f in bq.get_table(table.dotted).schema}
  except exceptions.NotFound:
    return
  problems = []
  for field in schema['fields']:
    have = existing.get(field['name'])
    if have is None:
      problems.append(f'no column {field["name"]}')
    elif _standard(have.field_type) != field['type']:
      problems.append(f'{field["name"]} is {have.field_type}, the job writes {field["type"]}')
    elif (have.mode == 'REPEATED') != (field.get('mode') == 'REPEATED'):  # a list (an embedding) against one value
      problems.append(f'{field["name"]} is {have.mode or "NULLABLE"}, the job writes {field.get("mode") or "NULLABLE"}')
  problems += [f'{name} is REQUIRED but the job does not write it' for name, f in existing.items()
               if f.mode == 'REQUIRED' and name not in {x['name'] for x in schema['fields']}]
  if problems:
    raise ValueError(f'output table {table} exists with a different schema: {"; ".join(problems)}. '
                     'Write to a new table or migrate this one.')


def _standard(bq_type: str) -> str:
  return {'INTEGER': 'INT64', 'FLOAT': 'FLOAT64', 'BOOLEAN': 'BOOL'}.get(bq_type, bq_type)


def console_link(table: TableRef) -> str:
  return (f'https://console.cloud.google.com/bigquery?project={table.project}'
          f'&ws=!1m5!1m4!4m3!1s{table.project}!2s{table.dataset}!3s{table.table}')


def unscored_query(input_table: TableRef, output_table: TableRef, *, key_column: str, version_column: Optional[str],
                   input_filter: Optional[str]) -> str:
  """Standard SQL for the input rows with no prediction from @model_name @model_version (in another run)."""
  on = f'CAST(i.`{key_column}` AS STRING) = o.k'
  inner = f'SELECT DISTINCT `{key_column}` AS k'
  if version_column:
    on += f' AND CAST(i.`{version_column}` AS STRING) = o.v'
    inner += f', CAST(`{version_column}` AS STRING) AS v'
  where = f' AND ({input_filter})' if input_filter else ''
  return (f'SELECT i.* FROM {input_table.sql} AS i LEFT JOIN ({inner} FROM {output_table.sql} '
          'WHERE model_name = @model_name AND model_version = @model_version AND run_id != @run_id) AS o '
          f'ON {on} WHERE o.k IS NULL{where}')


def count_query(input_table: TableRef, input_filter: Optional[str]) -> str:
  return f'SELECT COUNT(*) AS n FROM {input_table.sql}' + (f' WHERE {input_filter}' if input_filter else '')
