"""The contract every output kind keeps: where a run's rows go, and how they are written, published
and cleaned up.

A run has two outputs, its predictions and its dead letters, and each is a
`Destination`: files under a folder (`transforms.files.destination`), a
BigQuery table loaded from Parquet or streamed (`transforms.bigquery.destination`),
or a PostgreSQL table (`transforms.postgres.destination`). The launcher, the
job's last step and `status` ask the destination what to do, as Beam's
`WriteToBigQuery(method=...)` picks its strategy once; nothing else asks which
kind of output it is. `status` asks the output what it holds of a run
(`published_run`), whatever its kind. Images, documents and embedding stores add a kind here,
not branches elsewhere.

A destination is made for one attempt of a run (its `run_id` and `attempt`),
on the launcher, and travels in the plan to the workers, so it holds only
plain values.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
from typing import Any, Callable, ClassVar, Mapping, Optional, Union

import apache_beam as beam
import pyarrow as pa

# What a destination's `write()` returns: what the last step waits on (file names, rows COPYed per
# batch, a stream's refused rows), and, where the destination can refuse rows, their dead letters
# (under `transforms.rows.dead_letters.DEAD_LETTERS`).
WRITTEN = 'written'

# What an attempt staged that is older than this, with nothing written since, was left by an attempt that was
# killed: the next run into the output deletes it (`Destination.remove_stale`), as `status --clean` does on demand.
STALE_AFTER = datetime.timedelta(hours=24)


class CheckFailed(ValueError):
  """What keeps a run from writing to a destination, one line each (`Destination.check`)."""

  def __init__(self, problems: list[str]):
    super().__init__('; '.join(problems))
    self.problems = problems


@dataclasses.dataclass(frozen=True)
class TableCounts:
  """What a table's publish read back from the table, inside its transaction (`Destination.publish`)."""
  rows: int  # the table's rows after the publish
  kept_keys: int = 0  # keys that hold only an earlier run's rows: not in this run's input (upsert)


@dataclasses.dataclass(frozen=True)
class OutputRows:
  """What a run writes to one output, in the terms every kind understands."""
  name: str  # 'predictions' or 'dead_letters': names the files, staging folders and messages
  schema: pa.Schema  # the rows, as the job makes them
  descriptions: Mapping[str, str]  # column descriptions, for a table
  partition_field: str  # the time column a table is partitioned by (stamped when writing if absent)
  key_name: Optional[str] = None  # the rows' key: names the dead letter of a row an output refuses
  dictionary_columns: Optional[tuple[str, ...]] = None  # columns worth dictionary-encoding in Parquet
  file_format: Optional[str] = None  # as files, this format whatever --output_format says (dead letters: JSON Lines)
  # A serving table's rows where they differ from `schema` (a ranking: one row per rank), the function
  # that lays a batch out so, and the table's primary key. None: rows as they are, no key.
  serving_schema: Optional[pa.Schema] = None
  serving_rows: Optional[Callable[[pa.RecordBatch], pa.RecordBatch]] = None
  primary_key: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """The attempt a destination is made for, and the flags that shape how outputs are written."""
  run_id: str
  attempt: str
  started_at: datetime.datetime
  file_format: str = 'parquet'  # --output_format, for files
  write_method: str = 'FILE_LOADS'  # --bq_write_method, for BigQuery
  staging_base: str = ''  # where a table's Parquet files are staged before their load: TEMP/PARQUET_STAGING
  project: Optional[str] = None  # the billing project of BigQuery calls
  publish_mode: str = 'upsert'  # --db_publish_mode
  password_secret: Optional[str] = None  # --db_password_secret
  min_input_fraction: float = 0.0  # --min_input_fraction (0 with --only_unscored)
  copy_connections: Optional[int] = None  # --db_copy_connections (None: sized to the server)


@dataclasses.dataclass(frozen=True)
class PublishedRun:
  """What an output itself says of a run it holds (`Destination.published_run`), read from the output,
  not from the run's record: `status` tells from it that a run killed just after its publish committed
  did publish."""
  rows: Optional[int]  # the run's rows in the output now
  attempt: Optional[str] = None  # the attempt that published them, where the output records it
  published_at: Optional[str] = None  # when, ISO 8601, where the output records it
  note: str = ''  # what the rows do not prove (a streamed table holds rows before its run publishes)


@dataclasses.dataclass(frozen=True)
class Destination(abc.ABC):
  """One output of one attempt of a run. Subclasses add what their kind needs."""
  uri: str  # as the user gave it: a folder, bq://PROJECT.DATASET.TABLE, postgresql://...
  schema: pa.Schema  # the rows it takes, as the job makes them
  run_id: str
  attempt: str

  # A folder of run folders, published by the run's pointer: the run's summary can live there too.
  holds_run_folders: ClassVar[bool] = False
  # Its checks need no types from the input, so they run before a query input costs anything.
  checks_before_query: ClassVar[bool] = False
  # Its publish makes rows live for lookups at once, with no undo (a serving database): the run's other
  # outputs publish first, so a failure there leaves it as it was.
  publishes_last: ClassVar[bool] = False

  @classmethod
  @abc.abstractmethod
  def claims(cls, uri: str) -> bool:
    """Whether `uri` names an output of this kind."""

  @classmethod
  @abc.abstractmethod
  def for_output(cls, uri: str, rows: OutputRows, settings: RunSettings) -> 'Destination':
    """The destination of `rows` at `uri` for the attempt `settings` name."""

  @classmethod
  def dead_letters_beside(cls, output: str, records: str) -> str:
    """Where dead letters go by default when the predictions go to `output` (`records`: the run's record)."""
    return output

  @classmethod
  def flag_problems(cls, opts: Any, role: str) -> list[str]:
    """What in the flags this kind cannot take as the run's `role` ('output' or 'dead_letter'); `opts`
    are the job's options, read by name."""
    return []

  @classmethod
  def existing_key_type(cls, uri: str, key: str, project: Optional[str]) -> Optional[pa.DataType]:
    """The key's type in the output as it exists now, where the output has types of its own; None: unknown."""
    return None

  @classmethod
  def skip_scored(cls, opts: Any, model_name: str, model_version: str, project: Optional[str], *,
                  offline: bool) -> tuple[Optional[Any], Optional[Any]]:
    """`--only_unscored` for this kind of --output: how the run skips rows scored before
    (`transforms.files.scored_keys.Incremental`), and the table of unscored rows to read instead of the
    input, if the output saved one. `offline`: contact nothing (the Dataflow job description)."""
    raise ValueError('--only_unscored needs a folder or a bq:// table as --output')

  @classmethod
  def published_run(cls, uri: str, run_id: str, opts: Any) -> Optional[PublishedRun]:
    """What the output at `uri` holds of run `run_id`, asked of the output itself (for `status`); None
    when it holds nothing of it. `opts` are the status command's options, read by name."""
    return None

  @classmethod
  def remove_stale(cls, uri: str, older_than: datetime.timedelta, opts: Any) -> list[str]:
    """Deletes what attempts killed more than `older_than` ago left staged for the output at `uri` (hidden
    attempt folders, staged files, staging tables); returns what it deleted. The next run into the output
    calls it (in `prepare`, with `STALE_AFTER`), `status --clean` on demand. `opts` are the command's
    options, read by name (where a table's files are staged, the database's password)."""
    return []

  @property
  def run_base(self) -> Optional[str]:
    """The folder holding this output's run folders, switched by the run's pointer; None for a table."""
    return self.uri.rstrip('/') if self.holds_run_folders else None

  @property
  def where(self) -> str:
    """What the run summary names as this output."""
    return self.uri

  @property
  def link(self) -> Optional[str]:
    """A console page showing the output, where there is one."""
    return None

  def check(self) -> list[str]:
    """On the launcher, before any worker: raises ValueError (`CheckFailed` for several problems) naming
    what keeps the run from writing here; returns a line for each thing checked, for `--preflight_only`."""
    return []

  def prepare(self) -> None:
    """On the launcher, after the checks: makes what the workers write into (a staging table)."""

  @abc.abstractmethod
  def write(self) -> beam.PTransform:
    """RecordBatches of `schema` in; `{WRITTEN: ..., DEAD_LETTERS: refused rows (where rows can be refused)}` out."""

  def publish(self, written: list[Any], rows: int) -> Union[None, int, TableCounts]:
    """In the job's last step: makes this attempt's rows the run's, all at once.

    Args:
      written: the `WRITTEN` output of `write()`, as a list.
      rows: the rows the job counted into this output.

    Returns:
      The run's rows in the output now, for a table (`TableCounts` where it reads them from the table
      and counts the keys an upsert left from earlier runs); None for files (the run's pointer publishes them).
    """
    return None

  def show(self) -> None:
    """Once the run's pointer names this attempt: makes its rows visible to readers that skip the pointer (files
    that are globbed); a table's rows are live once published. Repeated by a retry, so it is idempotent."""

  def clean_up(self) -> None:
    """After publishing: deletes what this attempt and older ones staged; the published rows stay."""

  def discard(self) -> None:
    """After a failed attempt: deletes what it staged; never raises."""
