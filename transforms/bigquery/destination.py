"""A BigQuery table as a run's output: loaded from Parquet files at the end (the default), or streamed.

`--bq_write_method` picks the kind once, as Beam's `WriteToBigQuery(method=...)`
does: `LoadedTable` stages Parquet files under `--temp_location` and publishes
them all at once in the job's last step (`transforms.bigquery.publish`);
`StreamedTable` sends rows as they are predicted and, at the end, deletes what
an earlier attempt of the run streamed. Both check the dataset and the
table's columns on the launcher (`transforms.bigquery.checks`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import logging
from typing import Any, Mapping, Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions
from google.api_core import exceptions
from google.cloud import bigquery

from transforms.bigquery import checks, publish as bqpub
from transforms.bigquery.tables import TableRef, WriteBigQueryBatches, is_table, refused_rows, table_schema
from transforms.destination import STALE_AFTER, WRITTEN, Destination, OutputRows, PublishedRun, RunSettings
from transforms.files import publish, scored_keys
from transforms.files.destination import WriteFiles
from transforms.rows.dead_letters import DEAD_LETTERS

# Under --temp_location: the Parquet files a table is loaded from, TEMP/PARQUET_STAGING/RUN_ID/ATTEMPT/NAME/.
PARQUET_STAGING = 'batch-inference'


def remove_stale(table: TableRef, staging_base: str, project: Optional[str],
                 older_than: datetime.timedelta) -> list[str]:
  """Deletes the Parquet files and staging tables that attempts killed more than `older_than` ago left: the
  attempt folders under `staging_base` (every run's, any table's) and `table`'s staging tables (any run id)."""
  removed = publish.remove_stale_attempts(staging_base, older_than) if staging_base else []
  bq = checks.client(project or table.project)
  try:
    tables = bqpub.old_staging_tables(bq, table, older_than)
  except exceptions.NotFound:  # no dataset: no staging table either
    tables = []
  bqpub.drop_tables(bq, tables)
  if tables:
    logging.info('%s: dropped %d staging table(s) of attempts older than %s', table, len(tables), older_than)
  return removed + [t.dotted for t in tables]


@dataclasses.dataclass(frozen=True)
class BigQueryTable(Destination):
  """bq://PROJECT.DATASET.TABLE, partitioned by day on `partition_field`."""
  descriptions: Mapping[str, str] = dataclasses.field(default_factory=dict)
  partition_field: str = 'predicted_at'
  project: Optional[str] = None  # billing project of the calls; None: the table's

  checks_before_query = True

  @classmethod
  def claims(cls, uri: str) -> bool:
    return is_table(uri)

  @classmethod
  def for_output(cls, uri: str, rows: OutputRows, settings: RunSettings) -> 'BigQueryTable':
    schema = rows.schema
    if rows.partition_field not in schema.names:  # stamped as the rows are written (dead letters' rejected_at)
      schema = schema.append(pa.field(rows.partition_field, pa.timestamp('us', tz='UTC')))
    common = dict(uri=uri, schema=schema, run_id=settings.run_id, attempt=settings.attempt,
                  descriptions=dict(rows.descriptions), partition_field=rows.partition_field,
                  project=settings.project)
    if settings.write_method == 'FILE_LOADS':
      return LoadedTable(**common, name=rows.name, staging_base=settings.staging_base,
                         dictionary_columns=rows.dictionary_columns)
    return StreamedTable(**common, method=settings.write_method, started_at=settings.started_at,
                         key_name=rows.key_name)

  @classmethod
  def dead_letters_beside(cls, output: str, records: str) -> str:
    return f'{output}_dead_letters'

  @classmethod
  def flag_problems(cls, opts: Any, role: str) -> list[str]:
    problems = []
    temp_location = opts.view_as(GoogleCloudOptions).temp_location or ''
    if opts.bq_write_method == 'FILE_LOADS' and not temp_location.startswith('gs://'):
      problems.append('--bq_write_method=FILE_LOADS stages files under --temp_location, which must be '
                      'gs://BUCKET/PREFIX (or pick --bq_write_method=STREAMING_INSERTS)')
    if role == 'output' and opts.only_unscored and not (is_table(opts.input) and opts.bq_temp_dataset):
      problems.append('--only_unscored with a bq:// --output anti-joins in BigQuery: it needs a bq:// --input '
                      'and --bq_temp_dataset for the unscored rows')
    return problems

  @classmethod
  def existing_key_type(cls, uri: str, key: str, project: Optional[str]) -> pa.DataType:
    """The key's type in the table if it exists (a query input is typed only once it ran), else text."""
    table = TableRef.parse(uri)
    try:
      fields = {f.name: f for f in checks.client(project or table.project).get_table(table.dotted).schema}
    except Exception:  # pylint: disable=broad-except  (a missing table or dataset: `check` says which)
      return pa.string()
    kind = fields[key].field_type if key in fields else 'STRING'
    return pa.int64() if kind in ('INT64', 'INTEGER') else pa.string()

  @classmethod
  def skip_scored(cls, opts: Any, model_name: str, model_version: str, project: Optional[str], *,
                  offline: bool) -> tuple[Optional[scored_keys.Incremental], Optional[TableRef]]:
    """One anti-join in BigQuery saves the input rows with no prediction from this model version (and
    row version) in the table; the job reads those instead of the input and counts the rest as skipped."""
    if offline:
      return None, None
    bq = checks.client(project or checks.home_project(opts))
    source, output = TableRef.parse(opts.input), TableRef.parse(opts.output)
    try:
      bq.get_table(output.dotted)
    except exceptions.NotFound:  # nothing scored yet
      return scored_keys.Incremental(opts.row_version_column), None
    query = checks.unscored_query(source, output, key_column=opts.key_column, version_column=opts.row_version_column,
                                  input_filter=opts.input_filter)
    parameters = [bigquery.ScalarQueryParameter('model_name', 'STRING', model_name),
                  bigquery.ScalarQueryParameter('model_version', 'STRING', model_version),
                  bigquery.ScalarQueryParameter('run_id', 'STRING', opts.run_id)]
    table, _ = checks.materialize_query(bq, query, parameters, temp_dataset=opts.temp_dataset(),
                                        run_id=f'unscored_{opts.run_id}')
    total = list(bq.query(checks.count_query(source, opts.input_filter)).result())[0][0]
    unscored = bq.get_table(table.dotted).num_rows
    logging.info('--only_unscored: %s of %s input rows have no prediction from %s v%s yet (saved in %s)',
                 f'{unscored:,}', f'{total:,}', model_name, model_version, table)
    return scored_keys.Incremental(opts.row_version_column, skipped_by_bigquery=total - unscored), table

  @classmethod
  def published_run(cls, uri: str, run_id: str, opts: Any) -> Optional[PublishedRun]:
    """The run's rows in the table. A loaded table gets them only when its run publishes (one MERGE);
    a streamed one as they are predicted, so there they do not prove the run published."""
    table = TableRef.parse(uri)
    bq = checks.client(opts.view_as(GoogleCloudOptions).project or table.project)
    try:
      rows = bqpub.rows_of_run(bq, table, run_id)
    except exceptions.NotFound:
      return None
    if not rows:
      return None
    streamed = opts.bq_write_method != 'FILE_LOADS'
    return PublishedRun(rows, note='streamed: rows land before the run publishes' if streamed else '')

  @classmethod
  def remove_stale(cls, uri: str, older_than: datetime.timedelta, opts: Any) -> list[str]:
    """The staged Parquet files under --temp_location and the table's staging tables that attempts killed
    more than `older_than` ago left."""
    cloud = opts.view_as(GoogleCloudOptions)
    staging_base = FileSystems.join(cloud.temp_location, PARQUET_STAGING) if cloud.temp_location else ''
    return remove_stale(TableRef.parse(uri), staging_base, cloud.project, older_than)

  @property
  def table(self) -> TableRef:
    return TableRef.parse(self.uri)

  @property
  def link(self) -> str:
    return checks.console_link(self.table)

  @property
  def table_schema(self) -> dict[str, Any]:
    return table_schema(self.schema, self.descriptions)

  def client(self) -> bigquery.Client:
    return checks.client(self.project or self.table.project)

  def check(self) -> list[str]:
    checks.check_output_table(self.client(), self.table, self.table_schema)
    return [f'output {self.uri}: the dataset exists and the table (or the one the job creates) takes every column']


@dataclasses.dataclass(frozen=True)
class LoadedTable(BigQueryTable):
  """Filled by one load job from the Parquet files the job staged, then published atomically."""
  name: str = 'predictions'
  staging_base: str = ''  # TEMP/PARQUET_STAGING: this attempt's files are under STAGING_BASE/RUN_ID/ATTEMPT/NAME/
  dictionary_columns: Optional[tuple[str, ...]] = None

  @property
  def folder(self) -> str:
    return FileSystems.join(publish.attempt_folder(self.staging_base, self.run_id, self.attempt), self.name)

  def prepare(self) -> None:
    """Deletes what attempts killed more than `STALE_AFTER` ago staged (one listing of the staging base, one
    of the dataset); one that cannot be deleted is logged, not a failed night."""
    try:
      remove_stale(self.table, self.staging_base, self.project, STALE_AFTER)
    except Exception as e:  # pylint: disable=broad-except  (housekeeping)
      logging.warning('could not delete what killed attempts staged for %s: %s', self.uri, e)

  def write(self) -> beam.PTransform:
    return WriteFiles(f'{self.folder}/{self.name}', self.schema, 'parquet', self.dictionary_columns)

  def publish(self, written: list[Any], rows: int) -> int:
    """Loads the staged files (`written`) so the run's rows in the table are exactly theirs."""
    return bqpub.publish_run(self.client(), self.table, sorted(written), self.table_schema, rows=rows,
                             run_id=self.run_id, attempt=self.attempt, partition_field=self.partition_field)

  def clean_up(self) -> None:
    """Deletes the staged files and any staging table of the run, the two side by side: the run has
    published, and the launcher waits on this step."""
    bq = self.client()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
      tables = pool.submit(lambda: bqpub.drop_tables(bq, bqpub.stale_staging_tables(bq, self.table, self.run_id)))
      publish.remove_older_attempts(self.staging_base, self.run_id, self.attempt)
      publish.remove_tree(publish.attempt_folder(self.staging_base, self.run_id, self.attempt))
      tables.result()

  def discard(self) -> None:
    publish.discard_attempt(self.staging_base, self.run_id, self.attempt)
    try:
      bqpub.drop_tables(self.client(), [bqpub.staging_table(self.table, self.run_id, self.attempt)])
    except Exception as e:  # pylint: disable=broad-except  (cleanup must not hide the real error)
      logging.warning('could not drop the staging table of run %s in %s: %s', self.run_id, self.uri, e)


@dataclasses.dataclass(eq=False)
class _Stream(beam.PTransform):
  table: StreamedTable

  def __post_init__(self):
    super().__init__()

  def expand(self, batches: beam.PCollection) -> dict[str, beam.PCollection]:
    table = self.table
    refused = (batches | 'Stream' >> WriteBigQueryBatches(
        table.table, table.table_schema, partition_field=table.partition_field,
        method=table.method)).failed_rows_with_errors
    if table.key_name is None:
      return {WRITTEN: refused}
    return {WRITTEN: refused, DEAD_LETTERS: refused | 'RefusedRows' >> beam.Map(
        refused_rows, key_name=table.key_name, run_id=table.run_id)}


@dataclasses.dataclass(frozen=True)
class StreamedTable(BigQueryTable):
  """Rows sent as they are predicted (STREAMING_INSERTS, STORAGE_WRITE_API); rows BigQuery refuses
  become dead letters (with `key_name`)."""
  method: str = 'STREAMING_INSERTS'
  started_at: Optional[datetime.datetime] = None  # the attempt's start: older rows of the run are replaced
  key_name: Optional[str] = None  # the key of a refused row's dead letter; None: refusals are not routed

  def write(self) -> beam.PTransform:
    return _Stream(self)

  def publish(self, written: list[Any], rows: int) -> int:
    """Deletes what earlier attempts of the run streamed; `written` are the rows BigQuery refused, already
    among the dead letters."""
    bq = self.client()
    bqpub.ensure_table(bq, self.table, self.table_schema, partition_field=self.partition_field)
    replaced = bqpub.replace_earlier_rows(bq, self.table, self.run_id, time_column=self.partition_field,
                                          started=self.started_at)
    logging.info('replaced %d rows of an earlier attempt of run %s in %s', replaced, self.run_id, self.uri)
    return bqpub.rows_of_run(bq, self.table, self.run_id)
