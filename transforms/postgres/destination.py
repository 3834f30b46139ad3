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
import logging
from typing import Any, Callable, Optional

import apache_beam as beam
import pyarrow as pa

from transforms.destination import CheckFailed, Destination, OutputRows, PublishedRun, RunSettings
from transforms.postgres import publish as pgpub
from transforms.postgres.tables import PgTarget, WritePostgres, is_database


@dataclasses.dataclass(frozen=True)
class PostgresTable(Destination):
  """A serving table keyed by `key`, whose rows the run replaces by key (upsert) or as a whole (replace)."""
  key: tuple[str, ...] = ()  # the serving table's primary key
  key_name: str = 'key'  # the rows' key, for the dead letters of refused rows
  mode: str = 'upsert'
  password_secret: Optional[str] = None
  layout: Optional[Callable[[pa.RecordBatch], pa.RecordBatch]] = None  # a batch as table rows (one per rank)

  publishes_last = True

  @classmethod
  def claims(cls, uri: str) -> bool:
    return is_database(uri)

  @classmethod
  def for_output(cls, uri: str, rows: OutputRows, settings: RunSettings) -> 'PostgresTable':
    PgTarget.parse(uri)  # a malformed URL says what is wrong now, on the launcher
    return cls(uri, rows.serving_schema or rows.schema, settings.run_id, settings.attempt, key=rows.primary_key,
               key_name=rows.key_name or 'key', mode=settings.publish_mode, password_secret=settings.password_secret,
               layout=rows.serving_rows)

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
    if opts.only_unscored:
      problems.append('--only_unscored needs a folder or a bq:// table as --output, not a database')
    return problems

  @classmethod
  def published_run(cls, uri: str, run_id: str, opts: Any) -> Optional[PublishedRun]:
    """As the publish noted it in the database, in its own transaction (`transforms.postgres.publish`)."""
    noted = pgpub.published_run(PgTarget.parse(uri), run_id, password_secret=opts.db_password_secret)
    if noted is None:
      return None
    attempt, rows, when, now = noted
    return PublishedRun(now, attempt, when, '' if now == rows else f'{rows:,} published; later runs replaced the rest')

  @property
  def target(self) -> PgTarget:
    return PgTarget.parse(self.uri)

  @property
  def staging(self) -> str:
    return self.target.staging_table(self.run_id, self.attempt)

  def check(self) -> list[str]:
    target = self.target
    problems = pgpub.check_target(target, self.schema, self.key, password_secret=self.password_secret)
    if problems:
      raise CheckFailed(problems)
    return [f'output {target}: connects; the table (or the one the job creates) takes every column, '
            f'keyed by {", ".join(self.key)}; the user may create, insert and delete']

  def prepare(self) -> None:
    pgpub.create_tables(self.target, self.schema, self.key, self.staging, password_secret=self.password_secret)

  def write(self) -> beam.PTransform:
    return WritePostgres(self.target, self.staging, key_name=self.key_name, run_id=self.run_id,
                         password_secret=self.password_secret, layout=self.layout)

  def publish(self, written: list[Any], rows: int) -> int:
    """Publishes the staged rows: `written` are the rows each batch COPYed (refused rows excluded)."""
    return pgpub.publish_run(self.target, self.schema, self.key, run_id=self.run_id, attempt=self.attempt,
                             rows=sum(written), mode=self.mode, password_secret=self.password_secret)

  def clean_up(self) -> None:
    pgpub.drop_staging(self.target, self.run_id, password_secret=self.password_secret)

  def discard(self) -> None:
    try:
      pgpub.drop_staging(self.target, self.run_id, self.attempt, password_secret=self.password_secret)
    except Exception as e:  # pylint: disable=broad-except  (cleanup must not hide the real error)
      logging.warning('could not drop the staging tables of run %s: %s', self.run_id, e)
