"""Files as a run's output: each attempt writes its own hidden folder, and publishing shows one.

An attempt writes its predictions into `BASE/RUN_ID/_ATTEMPT/predictions/`,
hidden from every reader that globs (Spark, BigQuery external tables, pandas
and pyarrow datasets skip paths that start with `_`), and its dead letters
beside its report in `BASE/RUN_ID/_ATTEMPT/`. Only the job's last step, once
every check has passed and the run's pointer names the attempt, shows the
predictions as `BASE/RUN_ID/ATTEMPT/` (`transforms.files.publish.show_attempt`:
the older attempt's hidden first, then one folder move). A failed or killed
attempt's files stay hidden until they are deleted: by the next attempt of its
run once that publishes, or, when its run id never runs again (a date), by the
next run into the folder once they are older than `STALE_AFTER`.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from typing import Any, Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.destination import STALE_AFTER, WRITTEN, Destination, OutputRows, PublishedRun, RunSettings
from transforms.files import publish
from transforms.files import scored_keys
from transforms.files.write import WriteBatches


@dataclasses.dataclass(eq=False)
class WriteFiles(beam.PTransform):
  """Writes RecordBatches as files PREFIX-*.FORMAT; outputs {WRITTEN: the file names}."""
  prefix: str
  schema: pa.Schema
  file_format: str
  dictionary_columns: Optional[tuple[str, ...]]

  def __post_init__(self):
    super().__init__()

  def expand(self, batches: beam.PCollection) -> dict[str, beam.PCollection]:
    dictionary = list(self.dictionary_columns) if self.dictionary_columns is not None else None
    return {WRITTEN: batches | 'Files' >> WriteBatches(self.prefix, self.schema, file_format=self.file_format,
                                                       dictionary_columns=dictionary)}


@dataclasses.dataclass(frozen=True)
class FileOutput(Destination):
  """Parquet, JSON Lines or CSV files under a folder, local or on any Beam file system (gs://)."""
  base_name: str = 'predictions'  # the files' name: BASE_NAME-SSSSS-of-NNNNN.FORMAT
  file_format: str = 'parquet'
  dictionary_columns: Optional[tuple[str, ...]] = None  # for Parquet; None: every column
  # Published as the run folder's visible files. The predictions are: they are the data readers glob. Dead
  # letters are not: they stay with the attempt's report, named by the summary, so the run folder's visible
  # files stay one dataset of one schema.
  shown: bool = True

  holds_run_folders = True

  def __post_init__(self):
    lists = [f.name for f in self.schema if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)]
    if self.file_format == 'csv' and lists:
      raise ValueError(f'the predictions hold lists ({", ".join(lists)}: a ranking\'s items and scores, an '
                       'embedding, a classifier\'s top classes, a token classifier\'s entities, or a list column passed through), which CSV cannot '
                       'hold: use --output_format=parquet or jsonl')

  @classmethod
  def claims(cls, uri: str) -> bool:
    return True  # any path the other kinds leave: a folder, local or gs://

  @classmethod
  def for_output(cls, uri: str, rows: OutputRows, settings: RunSettings) -> 'FileOutput':
    return cls(uri, rows.schema, settings.run_id, settings.attempt, base_name=rows.name,
               file_format=rows.file_format or settings.file_format, dictionary_columns=rows.dictionary_columns,
               shown=rows.name == 'predictions')

  @classmethod
  def skip_scored(cls, opts: Any, model_name: str, model_version: str, project: Optional[str], *,
                  offline: bool) -> tuple[scored_keys.Incremental, None]:
    """The key files earlier runs of this model version wrote under the output (none listed offline)."""
    if offline:
      index = FileSystems.join(scored_keys.index_folder(opts.output, model_name, model_version), f'{opts.run_id}.json')
      return scored_keys.Incremental(opts.row_version_column, (), index), None
    return scored_keys.for_files(opts.output, model_name, model_version, opts.run_id, opts.row_version_column), None

  @classmethod
  def published_run(cls, uri: str, run_id: str, opts: Any) -> Optional[PublishedRun]:
    """The run's pointer under the folder: it publishes the files."""
    pointer = publish.read_pointer(uri, run_id)
    if pointer is None:
      return None
    return PublishedRun(pointer.get('rows_predicted'), pointer.get('attempt'), pointer.get('finished_at'))

  @classmethod
  def remove_stale(cls, uri: str, older_than: datetime.timedelta, opts: Any) -> list[str]:
    """The hidden attempt folders, under any run folder, of attempts killed more than `older_than` ago."""
    return publish.remove_stale_attempts(uri, older_than)

  @property
  def folder(self) -> str:
    """This attempt's own folder, hidden: BASE/RUN_ID/_ATTEMPT."""
    return publish.attempt_folder(self.uri, self.run_id, self.attempt)

  @property
  def staged(self) -> str:
    """Where the files are written: a folder of their own inside the attempt's, moved whole when shown."""
    return publish.staged_folder(self.uri, self.run_id, self.attempt, self.base_name) if self.shown else self.folder

  @property
  def where(self) -> str:
    """Where the published files are: BASE/RUN_ID/ATTEMPT for predictions, the attempt's folder for dead letters."""
    return publish.shown_folder(self.uri, self.run_id, self.attempt) if self.shown else self.folder

  def prepare(self) -> None:
    """Deletes what attempts killed more than `STALE_AFTER` ago left under the folder (one listing); one that
    cannot be deleted is logged, not a failed night."""
    try:
      publish.remove_stale_attempts(self.uri, STALE_AFTER)
    except Exception as e:  # pylint: disable=broad-except  (housekeeping)
      logging.warning('could not delete what killed attempts left under %s: %s', self.uri, e)

  def write(self) -> beam.PTransform:
    return WriteFiles(f'{self.staged}/{self.base_name}', self.schema, self.file_format, self.dictionary_columns)

  def publish(self, written: list[Any], rows: int) -> None:
    return None  # the run's pointer publishes the attempt, with the summary; `show` then shows the files

  def show(self) -> None:
    """Once the pointer names this attempt: hides the older attempt's files, then shows these."""
    if self.shown:
      publish.show_attempt(self.uri, self.run_id, self.attempt, self.base_name)
