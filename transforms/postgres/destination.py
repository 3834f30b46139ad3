"""A PostgreSQL or Cloud SQL table as a run's output, published in one transaction.

On the launcher the target is checked (connection, columns, privileges), then
the serving table is created if missing and this attempt's staging table like
it (`transforms.postgres.publish`). Workers COPY into the staging table; rows
the table refuses become dead letters. The job's last step publishes the
staged rows in one transaction (`--db_publish_mode`), and clean-up drops the
staging tables of the run.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from typing import Any, Callable, Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.destination import (STALE_AFTER, CheckFailed, Destination, OutputRows, PublishedRun, RunSettings,
                                   TableCounts)
from transforms.files import scored_keys
from transforms.postgres import arrays
from transforms.postgres import publish as pgpub
from transforms.postgres.tables import PgTarget, is_database
from transforms.postgres.write import WritePostgres


# With --only_unscored: the keys the table held when the run started, beside the run's attempts in its record.
SCORED_KEYS_FILE = 'scored_keys_in_table.parquet'


@dataclasses.dataclass(frozen=True)
class PostgresTable(Destination):
  """A serving table keyed by `key`, whose rows the run replaces by key (upsert) or as a whole (replace)."""
  key: tuple[str, ...] = ()  # the serving table's primary key
  key_name: str = 'key'  # the rows' key, for the dead letters of refused rows
  mode: str = 'upsert'
  password_secret: Optional[str] = None
  layout: Optional[Callable[[pa.RecordBatch], pa.RecordBatch]] = None  # a batch as table rows (one per rank)
  min_input_fraction: float = 0.0  # refuse to publish fewer rows than this share of the table's (--min_input_fraction)
  copy_connections: Optional[int] = None  # per writer (--db_copy_connections); None: sized to the server

  publishes_last = True

  @classmethod
  def claims(cls, uri: str) -> bool:
    return is_database(uri)

  @classmethod
  def for_output(cls, uri: str, rows: OutputRows, settings: RunSettings) -> 'PostgresTable':
    PgTarget.parse(uri)  # a malformed URL says what is wrong now, on the launcher
    records = [f.name for f in rows.schema if arrays.is_list(f.type) and pa.types.is_struct(f.type.value_type)]
    if records:  # a child table, or jsonb, is not built yet
      raise ValueError(f'the predictions hold lists of records ({", ".join(records)}: a token classifier\'s '
                       'entities), which the job does not write to PostgreSQL yet: write them to files '
                       '(--output_format=parquet or jsonl) or to BigQuery, where they are a REPEATED RECORD')
    return cls(uri, rows.serving_schema or rows.schema, settings.run_id, settings.attempt, key=rows.primary_key,
               key_name=rows.key_name or 'key', mode=settings.publish_mode, password_secret=settings.password_secret,
               layout=rows.serving_rows, min_input_fraction=settings.min_input_fraction,
               copy_connections=settings.copy_connections)

  @classmethod
  def dead_letters_beside(cls, output: str, records: str) -> str:
    return records  # a serving database takes no dead letters: they go with the run's record

  @classmethod
  def flag_problems(cls, opts: Any, role: str) -> list[str]:
    if role == 'dead_letter':
      return ['--dead_letter takes a folder or a bq:// table; dead letters do not go to PostgreSQL']
    problems = []
    if opts.watch:
      problems.append('--watch keeps its record of processed files beside a folder --output; it does not take a '
                      'database --output')
    return problems

  @classmethod
  def published_run(cls, uri: str, run_id: str, opts: Any) -> Optional[PublishedRun]:
    """As the publish noted it in the database, in its own transaction (`transforms.postgres.publish`)."""
    noted = pgpub.published_run(PgTarget.parse(uri), run_id, password_secret=opts.db_password_secret)
    if noted is None:
      return None
    attempt, rows, when, now = noted
    return PublishedRun(now, attempt, when, '' if now == rows else f'{rows:,} published; later runs replaced the rest')

  @classmethod
  def skip_scored(cls, opts: Any, model_name: str, model_version: str, project: Optional[str], *,
                  offline: bool) -> tuple[scored_keys.Incremental, None]:
    """The table says what was scored: its keys of this model version from other runs are saved as one key file
    in the run's record folder, which the job skips as a folder output's (the table is the only record)."""
    records = opts.records_location()
    if not records:
      raise ValueError('--only_unscored into a database saves the keys the table already holds under '
                       '--summary_location (or --temp_location); give one')
    path = FileSystems.join(records, opts.run_id, SCORED_KEYS_FILE)
    if not offline:
      import psycopg
      target = PgTarget.parse(opts.output)
      try:
        found = pgpub.export_scored_keys(target, path, model_name=model_name, model_version=model_version,
                                         run_id=opts.run_id, key_name=opts.key_column,
                                         version_column=opts.row_version_column,
                                         password_secret=opts.db_password_secret)
      except psycopg.Error as e:
        raise ValueError(f'{target}: --only_unscored cannot read the keys the table holds: '
                         f'{str(e).strip().splitlines()[0]}') from None
      logging.info('--only_unscored: %s keys in %s were scored by %s v%s in other runs', f'{found:,}',
                   opts.output, model_name, model_version)
    return scored_keys.Incremental(opts.row_version_column, (path,)), None

  @property
  def target(self) -> PgTarget:
    return PgTarget.parse(self.uri)

  @property
  def staging(self) -> str:
    return self.target.staging_table(self.run_id, self.attempt)

  @classmethod
  def remove_stale(cls, uri: str, older_than: datetime.timedelta, opts: Any) -> list[str]:
    """Drops the staging tables of `uri`'s table that attempts killed more than `older_than` ago left."""
    secret = getattr(opts, 'db_password_secret', None)
    return pgpub.remove_stale(PgTarget.parse(uri), older_than, password_secret=secret)

  def check(self) -> list[str]:
    target = self.target
    problems = pgpub.check_target(target, self.schema, self.key, password_secret=self.password_secret)
    if problems:
      raise CheckFailed(problems)
    return [f'output {target}: connects; the table (or the one the job creates) takes every column, '
            f'keyed by {", ".join(self.key)}; the user may create, select, insert, update and delete']

  def prepare(self) -> None:
    """Drops staging tables that killed attempts left (older than `STALE_AFTER`), then makes this one's."""
    pgpub.remove_stale(self.target, STALE_AFTER, password_secret=self.password_secret)
    pgpub.create_tables(self.target, self.schema, self.key, run_id=self.run_id, attempt=self.attempt,
                        key_name=self.key_name, password_secret=self.password_secret)

  def write(self) -> beam.PTransform:
    return WritePostgres(self.target, self.staging, key_name=self.key_name, run_id=self.run_id,
                         password_secret=self.password_secret, layout=self.layout,
                         refused=self.target.refused_table(self.run_id, self.attempt),
                         connections=self.copy_connections)

  def publish(self, written: list[Any], rows: int) -> TableCounts:
    """Publishes the staged rows: `written` are the rows each batch COPYed (refused rows excluded)."""
    counts = pgpub.publish_run(self.target, self.schema, self.key, run_id=self.run_id, attempt=self.attempt,
                               rows=sum(written), key_name=self.key_name, mode=self.mode,
                               min_fraction=self.min_input_fraction, password_secret=self.password_secret)
    if counts.kept_keys:
      logging.warning('%s: %s keys keep an earlier run\'s rows: they were not in run %s\'s input', self.target,
                      f'{counts.kept_keys:,}', self.run_id)
    return counts

  def clean_up(self) -> None:
    pgpub.drop_staging(self.target, self.run_id, password_secret=self.password_secret)

  def discard(self) -> None:
    try:
      pgpub.drop_staging(self.target, self.run_id, self.attempt, password_secret=self.password_secret)
    except Exception as e:  # pylint: disable=broad-except  (cleanup must not hide the real error)
      logging.warning('could not drop the staging tables of run %s: %s', self.run_id, e)
