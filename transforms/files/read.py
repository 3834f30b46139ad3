"""Read every file matching a pattern as Arrow RecordBatches, in a Beam pipeline.

Files are listed with Beam's FileSystems (local or gs://), spread across
workers, and each is read by the format's reader in `transforms.files.readers`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

from transforms.rows import coders as _coders  # noqa: F401  (registers the coders of the declared element types)
from transforms.rows import counters
from transforms.rows.dead_letters import DEAD_LETTERS, Rejected, count_rejections
from transforms.files.readers import FORMATS, infer_format, open_file, read_file

# The tag of the paths of the files read to the end, one element per file.
FILES = 'files'
_CHUNK = 8 << 20  # bytes hashed at a time


# Files `peek_schema` looks through for one with a row, at most.
MAX_FILES_PEEKED = 20


def peek_schema(file_pattern: str, *, file_format: Optional[str] = None,
                columns: Optional[Sequence[str]] = None) -> pa.Schema:
  """The schema of the first rows of the first file matching a pattern that has any.

  Raises ValueError saying "no readable rows" when no file has one (a day with no data).
  """
  matches = FileSystems.match([file_pattern])[0].metadata_list
  if not matches:
    raise ValueError(f'no files match {file_pattern}')
  paths = sorted(m.path for m in matches if m.size_in_bytes)[:MAX_FILES_PEEKED]
  for path in paths:
    path_format = file_format or infer_format(path)
    with open_file(path, path_format) as f:
      for item in read_file(f, path, path_format, batch_size=1024, columns=columns):
        if not isinstance(item, Rejected):
          return item.schema
  raise ValueError(f'{file_pattern} has no readable rows to take column types from (looked at {len(paths)} of '
                   f'{len(matches)} files)')


class _ReadFileFn(beam.DoFn):

  def __init__(self, file_format: Optional[str], batch_size: int, columns: Optional[Sequence[str]],
               key_column: Optional[str] = None):
    self._format = file_format
    self._batch_size = batch_size
    self._columns = columns
    self._key_column = key_column
    self._rows_read = counters.counter('rows_read')
    self._files_read = counters.counter('files_read')

  def process(self, metadata: FileMetadata):
    path = metadata.path
    file_format = self._format or infer_format(path)
    if metadata.size_in_bytes == 0:  # no rows, and not even a valid empty Parquet or Avro file
      self._files_read.inc()
      yield beam.pvalue.TaggedOutput(FILES, path)
      return
    # A file that cannot be read fails the job, naming the file: its rows cannot
    # be counted, so skipping it would lose them silently.
    try:
      with open_file(path, file_format) as f:
        for item in read_file(f, path, file_format, batch_size=self._batch_size, columns=self._columns,
                              key_column=self._key_column):
          if isinstance(item, Rejected):
            self._rows_read.inc(item.letters.num_rows)
            count_rejections(item.letters)
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, item.letters)
          else:
            self._rows_read.inc(item.num_rows)
            yield item
    except FileNotFoundError as e:
      raise ValueError(f'cannot read {path} as {file_format}: {e}; it was listed when the job started and is gone '
                       'now: re-run once the input stops changing') from e
    except (OSError, ValueError, EOFError, pa.ArrowException) as e:
      raise ValueError(f'cannot read {path} as {file_format}: {str(e).rstrip(".")}; move the file aside or repair it, '
                       'then re-run') from e
    except Exception as e:  # pylint: disable=broad-except  (decoders of damaged files raise anything: KeyError, ...)
      raise ValueError(f'cannot read {path} as {file_format}: {type(e).__name__}: {e}; move the file aside or '
                       'repair it, then re-run') from e
    self._files_read.inc()
    yield beam.pvalue.TaggedOutput(FILES, path)


class ReadRecordBatches(beam.PTransform):
  """Reads every file matching a pattern (local or gs://) as RecordBatches.

  Returns a tagged result: the main output holds row batches of at most
  `batch_size` rows, `dead_letters` holds unparsable records, `files` the
  path of each file read to the end. Files are read in parallel; a file is
  read by one worker.

  Args:
    file_pattern: a path or glob, e.g. gs://bucket/observations/*.parquet.
    file_format: one of FORMATS; None infers it from each file's extension.
    batch_size: rows per RecordBatch.
    columns: the columns to keep (others are dropped early); None keeps all.
    key_column: the column whose value a dead letter of an unparsable record keeps,
      where it can still be read.
  """

  def __init__(self, file_pattern: str, *, file_format: Optional[str] = None, batch_size: int = 4096,
               columns: Optional[Sequence[str]] = None, key_column: Optional[str] = None):
    super().__init__()
    if file_format is not None and file_format not in FORMATS:
      raise ValueError(f'unknown input format {file_format!r}; expected one of {", ".join(FORMATS)}')
    self._pattern = file_pattern
    self._format = file_format
    self._batch_size = batch_size
    self._columns = list(columns) if columns is not None else None
    self._key_column = key_column

  def expand(self, pbegin):
    return (
        pbegin
        | 'Match' >> fileio.MatchFiles(self._pattern)
        | 'Spread' >> beam.Reshuffle()
        | 'Read' >> beam.ParDo(_ReadFileFn(self._format, self._batch_size, self._columns, self._key_column))
        .with_output_types(pa.RecordBatch).with_outputs(
            DEAD_LETTERS, FILES, main='batches'))


@dataclasses.dataclass(frozen=True)
class FileInput:
  """Files as a run's input: every file a pattern matches, local or gs://."""
  pattern: str
  file_format: Optional[str] = None  # None: each file's extension says
  key_column: Optional[str] = None

  @property
  def tallies(self) -> dict[str, str]:
    """The read step's outputs the run counts beside its batches: each file read to the end."""
    return {'files': FILES}

  @property
  def snapshot_time(self) -> None:
    return None  # files have no snapshot: the manifest records each file's checksum instead

  def read(self, columns: Sequence[str], batch_size: int) -> ReadRecordBatches:
    """The read step: `{'batches', DEAD_LETTERS, FILES}` (see `ReadRecordBatches`)."""
    return ReadRecordBatches(self.pattern, file_format=self.file_format, batch_size=batch_size, columns=columns,
                             key_column=self.key_column)

  def describe(self) -> dict[str, Any]:
    """What the manifest records of the input: each file with its size and checksum."""
    files = []
    for m in sorted(FileSystems.match([self.pattern])[0].metadata_list, key=lambda m: m.path):
      entry = {'path': m.path, 'size': m.size_in_bytes}
      if m.path.startswith('gs://'):
        entry['crc32c'] = FileSystems.checksum(m.path)
      else:
        entry['sha256'] = sha256_of(m.path)
      files.append(entry)
    return {'kind': 'files', 'pattern': self.pattern, 'files': files}


def sha256_of(path: str) -> str:
  """The SHA-256 of a file's bytes, read in chunks from any Beam file system."""
  digest = hashlib.sha256()
  with FileSystems.open(path, compression_type='uncompressed') as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()

