"""Publishing a run's Parquet files to BigQuery, all at once: `publish_run`.

Loading files is about ten times faster than streaming rows as JSON, and a load
job costs nothing per row. A run id the table does not hold yet (the usual
nightly run) is published by one load job that appends the files to the
table: a load job is atomic, so its rows appear all together or not at all. A
re-run of a run id is loaded into a per-attempt staging table first, never into
the output table, and one MERGE then swaps the run's old rows for the staged
ones in one statement, so a reader sees either all old rows of the run or all
new ones. Either way a failed or killed attempt leaves the output as it was.

These functions run on one worker in the job's last step.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from typing import Any, Mapping, Optional, Sequence

from google.api_core import exceptions
from google.cloud import bigquery

from transforms.bigquery.checks import job_config, error_reason
from transforms.bigquery.tables import TableRef

STAGING_PREFIX = '_staging_'
TABLE_DESCRIPTION = 'Written by the batch-inference job; one run_id per run.'
_NOT_A_NAME_CHAR = re.compile(r'[^A-Za-z0-9_]')
_NAME_PART_CHARS = 200  # keeps a staging name far below BigQuery's 1,024 characters


def _name_part(text: str) -> str:
  return _NOT_A_NAME_CHAR.sub('_', text)[:_NAME_PART_CHARS]


def _run_prefix(target: TableRef, run_id: str) -> str:
  """The start every staging table of (target, run id) shares, and no other's does.

  Table and run id are cleaned into name characters for a person to read; the
  hash of the exact pair keeps run `r` from matching `r1`, and `a-b` from `a_b`.
  """
  digest = hashlib.sha256(f'{target.table}\0{run_id}'.encode('utf-8')).hexdigest()[:16]
  return f'{STAGING_PREFIX}{_name_part(target.table)}_{_name_part(run_id)}_{digest}_'


def staging_table(target: TableRef, run_id: str, attempt: str) -> TableRef:
  """The per-attempt staging table, in the target's dataset.

  One table per attempt, so a retried attempt never appends to (or truncates)
  a table an earlier, still running attempt loads. The name starts with
  `STAGING_PREFIX` and a part unique to (target, run id), which
  `stale_staging_tables` looks for.
  """
  return TableRef(target.project, target.dataset, _run_prefix(target, run_id) + _name_part(attempt))


def _fields(schema: Mapping[str, Any]) -> list[bigquery.SchemaField]:
  return [bigquery.SchemaField.from_api_repr(dict(f)) for f in schema['fields']]


def _expiring(table: TableRef, expires_hours: int, schema: Optional[Mapping[str, Any]] = None) -> bigquery.Table:
  expiring = bigquery.Table(table.dotted, schema=_fields(schema) if schema else None)
  expiring.expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=expires_hours)
  return expiring


def _load(bq: bigquery.Client, uris: Sequence[str], table: TableRef, schema: Mapping[str, Any],
          disposition: str) -> int:
  # List inference reads a Parquet LIST (a ranking's top items, an embedding) as a REPEATED column, as the
  # schema says; without it BigQuery takes the list's wrapper for a RECORD and refuses the schema.
  parquet = bigquery.ParquetOptions()
  parquet.enable_list_inference = True
  config = bigquery.LoadJobConfig(
      source_format=bigquery.SourceFormat.PARQUET, schema=_fields(schema), write_disposition=disposition,
      create_disposition=bigquery.CreateDisposition.CREATE_NEVER, parquet_options=parquet)
  job = bq.load_table_from_uri(list(uris), table.dotted, job_config=config)
  job.result()
  return int(job.output_rows or 0)


def load_parquet(bq: bigquery.Client, uris: Sequence[str], table: TableRef, schema: Mapping[str, Any], *,
                 expires_hours: int = 24) -> int:
  """Loads Parquet files into `table` with one load job (WRITE_TRUNCATE, the explicit schema).

  The table is created first with an expiration, so that BigQuery removes it
  even if this worker dies during the load; the expiration is set again after
  the load because WRITE_TRUNCATE may not keep table metadata. No uris (a run
  with no rows of that kind) gives an empty table: a load job needs files.
  Columns are listed in `schema` in the files' order (the emulator loads by
  position, BigQuery by name).

  Args:
    bq: the client.
    uris: the gs:// Parquet files.
    table: the (staging) table to fill; its rows are replaced.
    schema: {'fields': [...]} as `transforms.bigquery.tables.table_schema` gives, with descriptions.
    expires_hours: how long BigQuery keeps the table.

  Returns:
    The rows loaded.

  Raises:
    ValueError: the load failed; it names the table and BigQuery's reason.
  """
  try:
    if not uris:
      bq.delete_table(table.dotted, not_found_ok=True)  # an earlier try of this attempt may have rows in it
      bq.create_table(_expiring(table, expires_hours, schema))
      return 0
    bq.create_table(_expiring(table, expires_hours, schema), exists_ok=True)
    rows = _load(bq, uris, table, schema, bigquery.WriteDisposition.WRITE_TRUNCATE)
    bq.update_table(_expiring(table, expires_hours), ['expires'])
  except exceptions.GoogleAPICallError as e:
    raise ValueError(f'loading {len(uris)} Parquet file(s) into {table} failed: {error_reason(e)}. Nothing was '
                     'published: the output table is unchanged.') from None
  return rows


def ensure_table(bq: bigquery.Client, table: TableRef, schema: Mapping[str, Any], *, partition_field: str) -> bool:
  """Creates the target if missing, partitioned by day on `partition_field`, clustered by run_id,
  with column descriptions; returns whether it created it (a new table holds no run's rows).

  Clustering by run_id lets the replace of a re-run's rows read only that run's
  blocks instead of the whole table. An existing table is left alone: the
  launcher (`checks.check_output_table`) already checked that it
  takes every column the job writes.
  """
  created = bigquery.Table(table.dotted, schema=_fields(schema))
  created.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field=partition_field)
  created.clustering_fields = ['run_id']
  created.description = TABLE_DESCRIPTION
  try:
    bq.create_table(created)
  except exceptions.Conflict:
    return False
  return True


def replace_run_rows(bq: bigquery.Client, target: TableRef, staging: TableRef, run_id: str) -> int:
  """Atomically deletes the target's rows of `run_id` and inserts every row of `staging`.

  One MERGE with a constant-false join, BigQuery's documented way to replace a
  slice of a table: every target row is "not matched by source" (those of the
  run are deleted), every staging row "not matched by target" (inserted). One
  DML statement is one atomic commit, so a reader sees the run's old rows or
  its new ones, never both, never none. A BEGIN TRANSACTION; DELETE; INSERT;
  COMMIT script is as atomic on BigQuery, but the emulator binds no query
  parameters inside scripts, so it could not be tested. The insert names every
  staging column (`INSERT ROW` pairs columns by position, and the emulator
  cannot parse it), so a target with another column order, or extra nullable
  columns, still works.

  Returns:
    The rows inserted (the staging table's rows).

  Raises:
    ValueError: the staging table is missing or the statement failed; the
      target is unchanged either way.
  """
  try:
    staged = bq.get_table(staging.dotted)
  except exceptions.NotFound:
    raise ValueError(f'cannot replace the rows of run {run_id!r} in {target}: staging table {staging} does not '
                     'exist. The target is unchanged.') from None
  columns = [f'`{field.name}`' for field in staged.schema]
  merge = (f'MERGE {target.sql} T USING {staging.sql} S ON FALSE '
           'WHEN NOT MATCHED BY SOURCE AND T.run_id = @run_id THEN DELETE '
           f'WHEN NOT MATCHED BY TARGET THEN INSERT ({", ".join(columns)}) '
           f'VALUES ({", ".join("S." + c for c in columns)})')
  parameters = [bigquery.ScalarQueryParameter('run_id', 'STRING', run_id)]
  try:
    bq.query(merge, job_config=job_config(parameters)).result()
  except exceptions.GoogleAPICallError as e:
    raise ValueError(f'replacing the rows of run {run_id!r} in {target} with those of {staging} failed: '
                     f'{error_reason(e)}. The target is unchanged.') from None
  return int(staged.num_rows or 0)


def stale_staging_tables(bq: bigquery.Client, target: TableRef, run_id: str) -> list[TableRef]:
  """Staging tables of this target and run id that earlier (killed) attempts left behind.

  Every attempt's table counts, the calling attempt's too if it exists yet:
  call it before loading, or leave out `staging_table(...)` of this attempt.
  """
  prefix = _run_prefix(target, run_id)
  return [TableRef(target.project, target.dataset, item.table_id)
          for item in bq.list_tables(f'{target.project}.{target.dataset}') if item.table_id.startswith(prefix)]


def old_staging_tables(bq: bigquery.Client, target: TableRef, older_than: datetime.timedelta) -> list[TableRef]:
  """Staging tables of this target, of any run id, made more than `older_than` ago: killed attempts left them
  (a finished one drops its own), and their run id may never run again. BigQuery expires them too, a day
  after their load (`load_parquet`)."""
  cutoff = datetime.datetime.now(datetime.timezone.utc) - older_than
  prefix = f'{STAGING_PREFIX}{_name_part(target.table)}_'
  return [TableRef(target.project, target.dataset, item.table_id)
          for item in bq.list_tables(f'{target.project}.{target.dataset}')
          if item.table_id.startswith(prefix) and item.created is not None and item.created < cutoff]


def drop_tables(bq: bigquery.Client, tables: Sequence[TableRef]) -> None:
  """Drops the tables; one already gone is fine, so a retried clean-up does not fail."""
  for table in tables:
    bq.delete_table(table.dotted, not_found_ok=True)


def rows_of_run(bq: bigquery.Client, table: TableRef, run_id: str) -> int:
  """Rows of `run_id` in the table, as BigQuery counts them."""
  job = bq.query(f'SELECT COUNT(*) AS n FROM {table.sql} WHERE run_id = @run_id',
                 job_config=job_config([bigquery.ScalarQueryParameter('run_id', 'STRING', run_id)]))
  return int(next(iter(job.result()))['n'])


def publish_run(bq: bigquery.Client, target: TableRef, uris: Sequence[str], schema: Mapping[str, Any], *,
                rows: int, run_id: str, attempt: str, partition_field: str) -> int:
  """Makes the run's rows in `target` exactly those of the Parquet files, atomically.

  A run id the table does not hold yet gets one load job appending the files
  (half the work of staging and merging). Two launches of one run id
  publishing at the same moment could both append; the count after the load
  catches that, and the MERGE below then leaves one copy. A run id the table
  holds (a re-run, or a retry of this step after its load) is staged and
  swapped in by `replace_run_rows`, after the staging table is checked to hold
  every row.

  Args:
    rows: how many rows the files hold, as the job counted them.

  Returns:
    The run's rows in the table now.
  """
  new = ensure_table(bq, target, schema, partition_field=partition_field)
  if new or rows_of_run(bq, target, run_id) == 0:  # a table just made holds no rows: no query to ask
    if not uris:
      return 0
    try:
      _load(bq, uris, target, schema, bigquery.WriteDisposition.WRITE_APPEND)
    except exceptions.GoogleAPICallError as e:
      raise ValueError(f'loading {len(uris)} Parquet file(s) into {target} failed: {error_reason(e)}. Nothing was '
                       'published: the output table is unchanged.') from None
    if rows_of_run(bq, target, run_id) == rows:
      return rows
  staging = staging_table(target, run_id, attempt)
  load_parquet(bq, uris, staging, schema)
  staged = bq.get_table(staging.dotted).num_rows or 0
  if staged != rows:
    raise ValueError(f'{staging} holds {staged:,} rows of run {run_id!r}, but the job wrote {rows:,} to '
                     f'{len(uris)} Parquet file(s); the output table is unchanged')
  return replace_run_rows(bq, target, staging, run_id)


def replace_earlier_rows(bq: bigquery.Client, table: TableRef, run_id: str, *, time_column: str,
                         started: datetime.datetime) -> int:
  """Deletes rows an earlier attempt of this run streamed (same run_id, stamped before this attempt
  started). Called after the new rows landed, so a failed re-run never loses the old ones."""
  try:
    bq.get_table(table.dotted)
  except exceptions.NotFound:
    return 0
  delete = f'DELETE FROM {table.sql} WHERE run_id = @run_id AND {time_column} < @started'
  parameters = [bigquery.ScalarQueryParameter('run_id', 'STRING', run_id),
                bigquery.ScalarQueryParameter('started', 'TIMESTAMP', started)]
  try:
    job = bq.query(delete, job_config=job_config(parameters))
    job.result()
  except exceptions.BadRequest as e:  # e.g. rows still in the streaming buffer (STREAMING_INSERTS)
    raise ValueError(f'{table}: the new rows of run {run_id} are written, but the earlier attempt\'s rows could '
                     f'not be deleted yet ({error_reason(e)}). Delete them later: DELETE FROM {table.sql} WHERE '
                     f'run_id = \'{run_id}\' AND {time_column} < TIMESTAMP \'{started.isoformat()}\'') from None
  return int(job.num_dml_affected_rows or 0)
