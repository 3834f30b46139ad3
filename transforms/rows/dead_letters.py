"""Rejected rows, in one home: their schema and its descriptions, the output tag every step
emits them on, the reason codes and their counters, the run's stamps, and the route that
collects every step's dead letters and writes them.

A dead letter keeps the original record (as JSON text, so any input schema
fits one table), where it came from, and why it was rejected: a stable
`reason_code` to count and filter on, and a `reason` a person can act on.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.rows import counters

# The tagged output of every step that rejects rows.
DEAD_LETTERS = 'dead_letters'

# Columns every source adds so a row can be traced back to its file and position.
SOURCE = '__source'
ROW = '__row'
# The row key, as text, once validation has chosen or generated it.
KEY = '__key'
META_COLUMNS = (SOURCE, ROW, KEY)

# Reason codes, one Beam counter each (`rejected_<code>`).
UNPARSABLE = 'unparsable'
MISSING_KEY = 'missing_key'
MISSING_VALUE = 'missing_value'
INVALID_TYPE = 'invalid_type'
NON_FINITE = 'non_finite'
MODEL_ERROR = 'model_error'
# Every row of a key the input holds more than once (`transforms.rows.duplicate_keys`).
DUPLICATE_KEY = 'duplicate_key'
# A row of a repeated key that `--on_duplicate_key=keep_last_by:COLUMN` (or keep_first_by) did not keep.
SUPERSEDED = 'superseded'
# Rows a destination refused for good (a streamed BigQuery row, a database row): rejected like the
# others, so they count in every guard; the summary also shows them as `rows_not_written`.
WRITE_ERROR = 'write_error'
# An image row whose file is not an image, is corrupt or truncated, is past the pixel bound, is a kind the
# job cannot decode (DICOM without pixels, an unsupported transfer syntax), or cannot be read (transforms/images).
NOT_AN_IMAGE = 'not_an_image'
CORRUPT_IMAGE = 'corrupt_image'
TOO_MANY_PIXELS = 'too_many_pixels'
UNSUPPORTED_IMAGE = 'unsupported_image'
UNREADABLE_FILE = 'unreadable_file'
IMAGE_CODES = (NOT_AN_IMAGE, CORRUPT_IMAGE, TOO_MANY_PIXELS, UNSUPPORTED_IMAGE, UNREADABLE_FILE)
# A text row whose text is empty or only whitespace, or longer in bytes than text.json's max_bytes
# (transforms/text). A text longer than the model's max_tokens is cut and counted, not rejected.
EMPTY_TEXT = 'empty_text'
TEXT_TOO_LONG = 'text_too_long'
TEXT_CODES = (EMPTY_TEXT, TEXT_TOO_LONG)
# A document file that gives no text to cut into chunks (transforms/text/documents.py), one dead letter keyed
# by its URI: not UTF-8, a PDF locked by a password, damaged, or without a text layer (OCR is not built),
# no text at all, an extension read as no format, more bytes than text.json's max_document_bytes.
INVALID_TEXT = 'invalid_text'
ENCRYPTED_DOCUMENT = 'encrypted_document'
CORRUPT_DOCUMENT = 'corrupt_document'
NO_TEXT = 'no_text'
EMPTY_DOCUMENT = 'empty_document'
UNSUPPORTED_DOCUMENT = 'unsupported_document'
DOCUMENT_TOO_LARGE = 'document_too_large'
DOCUMENT_CODES = (INVALID_TEXT, ENCRYPTED_DOCUMENT, CORRUPT_DOCUMENT, NO_TEXT, EMPTY_DOCUMENT, UNSUPPORTED_DOCUMENT,
                  DOCUMENT_TOO_LARGE)
REASON_CODES = (UNPARSABLE, MISSING_KEY, MISSING_VALUE, INVALID_TYPE, NON_FINITE, MODEL_ERROR, DUPLICATE_KEY,
                SUPERSEDED, WRITE_ERROR, *IMAGE_CODES, *TEXT_CODES, *DOCUMENT_CODES)
# The share of rejected rows a run may have unless --max_rejected_fraction says otherwise: a nightly run
# that loses more than one row in twenty is a broken night, not a good one with some noise.
MAX_REJECTED_FRACTION = 0.05
# Rejections the user asked for by a flag, which the rejection guards do not count as faults.
CHOSEN = (SUPERSEDED,)

SCHEMA = pa.schema([
    pa.field('key', pa.string()),
    pa.field('source', pa.string()),
    pa.field('row', pa.int64()),
    pa.field('stage', pa.string()),
    pa.field('reason_code', pa.string()),
    pa.field('reason', pa.string()),
    pa.field('record', pa.string()),
])
RUN_ID = 'run_id'
REJECTED_AT = 'rejected_at'
# What a run writes: every dead letter carries its run, and in a table the time it was rejected
# (the table is partitioned by its day).
WRITTEN_SCHEMA = SCHEMA.append(pa.field(RUN_ID, pa.string()))
TABLE_SCHEMA = WRITTEN_SCHEMA.append(pa.field(REJECTED_AT, pa.timestamp('us', tz='UTC')))

DESCRIPTIONS = {
    'key': 'Key of the rejected row, when it had one.',
    'source': 'Where the row came from: a file or bq://PROJECT.DATASET.TABLE.',
    'row': 'Position of the row in its file (1-based line or record number); empty for tables.',
    'stage': 'The step that rejected the row: read, validate, deduplicate (a repeated key), decode (an image), tokenize (a text), predict, or write (a row '
             'the table or database refused).',
    'reason_code': 'Stable code of the rejection, to count and filter on.',
    'reason': 'What was wrong, for a person to act on.',
    'record': 'The row as it arrived, as JSON.',
    RUN_ID: 'The run that rejected the row.',
    REJECTED_AT: 'When the row was written here; the table is partitioned by its day.',
}


class Rejected:
  """Dead letters produced while reading, yielded among the row batches."""

  def __init__(self, letters: pa.RecordBatch):
    self.letters = letters


def with_position(batch: pa.RecordBatch, source: str, rows: np.ndarray,
                  columns: Optional[Sequence[str]]) -> pa.RecordBatch:
  """`batch`'s `columns` with where each row came from: the file and its 1-based position there."""
  names = [c for c in columns if c in batch.schema.names] if columns is not None else batch.schema.names
  arrays = [batch.column(c) for c in names]
  return pa.RecordBatch.from_arrays(
      arrays + [pa.repeat(pa.scalar(source, pa.string()), len(rows)), pa.array(rows, pa.int64())],
      names=list(names) + [SOURCE, ROW])


def _record_json(row: dict) -> str:
  return json.dumps({k: v for k, v in row.items() if k not in META_COLUMNS}, default=str, ensure_ascii=False)


def from_batch(batch: pa.RecordBatch, mask: np.ndarray, *, stage: str, codes: Sequence[str],
               reasons: Sequence[str]) -> pa.RecordBatch:
  """Dead letters for the rows of `batch` selected by `mask`, with one code and reason each."""
  rejected = batch.filter(pa.array(mask))
  rows = rejected.to_pylist()
  names = rejected.schema.names
  keys = rejected.column(KEY).cast(pa.string()) if KEY in names else pa.nulls(len(rows), pa.string())
  return pa.RecordBatch.from_arrays([
      keys,
      rejected.column(SOURCE).cast(pa.string()) if SOURCE in names else pa.nulls(len(rows), pa.string()),
      rejected.column(ROW).cast(pa.int64()) if ROW in names else pa.nulls(len(rows), pa.int64()),
      pa.array([stage] * len(rows), pa.string()),
      pa.array(list(codes), pa.string()),
      pa.array(list(reasons), pa.string()),
      pa.array([_record_json(r) for r in rows], pa.string()),
  ], schema=SCHEMA)


def from_records(records: Sequence[str], *, source: str, rows: Sequence[Optional[int]], code: str,
                 reasons: Sequence[str], stage: str = 'read',
                 keys: Optional[Sequence[Optional[str]]] = None) -> pa.RecordBatch:
  """Dead letters for raw records that never became a row (unparsable lines, corrupt files), with
  their keys where those could still be read."""
  n = len(records)
  return pa.RecordBatch.from_arrays([
      pa.array(list(keys), pa.string()) if keys is not None else pa.nulls(n, pa.string()),
      pa.array([source] * n, pa.string()),
      pa.array(list(rows), pa.int64()),
      pa.array([stage] * n, pa.string()),
      pa.array([code] * n, pa.string()),
      pa.array(list(reasons), pa.string()),
      pa.array(list(records), pa.string()),
  ], schema=SCHEMA)


def guarded(counts: dict[str, int]) -> tuple[int, int]:
  """(rows rejected, rows read) as the rejection guards count them (`--max_rejected_fraction`, the gate's
  `rejected_rate`): every rejection, refused writes included, except the ones a flag chose (`CHOSEN`),
  which leave both counts.

  Rows `--only_unscored` skipped stay among the rows read: they are served by an earlier run, and the
  rows rejected before are read and rejected again each night, so a share of only the rows asked for
  would fail every small incremental night on old bad rows.
  """
  chosen = sum(counts.get(f'rejected_{code}', 0) for code in CHOSEN)
  return counts.get('rows_rejected', 0) - chosen, counts.get('rows_read', 0) - chosen


def count_rejections(letters: pa.RecordBatch) -> None:
  """Adds dead letters to the `rows_rejected` and `rejected_<code>` counters."""
  counters.counter('rows_rejected').inc(letters.num_rows)
  counts = pc.value_counts(letters.column('reason_code'))
  for code, count in zip(counts.field('values').to_pylist(), counts.field('counts').to_pylist()):
    counters.counter(f'rejected_{code}').inc(count)


def stamp_run_id(letters: pa.RecordBatch, run_id: str) -> pa.RecordBatch:
  """`letters` with the run that rejected them; unchanged when a sink stamped them already."""
  if RUN_ID in letters.schema.names:
    return letters
  return letters.append_column(RUN_ID, pa.repeat(pa.scalar(run_id, pa.string()), letters.num_rows))


def stamp_rejected_at(letters: pa.RecordBatch) -> pa.RecordBatch:
  """`letters` with the time they are written, the partition column of a dead-letter table."""
  now = datetime.datetime.now(datetime.timezone.utc)
  return letters.append_column(REJECTED_AT, pa.repeat(pa.scalar(now, pa.timestamp('us', tz='UTC')),
                                                      letters.num_rows))


@dataclasses.dataclass(eq=False)
class RouteDeadLetters(beam.PTransform):
  """Collects every step's dead letters, stamps the run on each, and writes them with `sink`.

  Applied to an iterable of PCollections of dead-letter RecordBatches (each
  step's `DEAD_LETTERS` output). Returns `{'dead_letters': the stamped
  letters, 'written': what `sink` returned as 'written'}` (a destination's write, `transforms.destination`).
  """
  run_id: str
  sink: beam.PTransform  # writes RecordBatches of WRITTEN_SCHEMA (TABLE_SCHEMA with `rejected_at`): {'written': ...}
  rejected_at: bool = False  # stamp the time, for a table partitioned by it

  def __post_init__(self):
    super().__init__()

  def expand(self, steps: Iterable[beam.PCollection]) -> dict[str, beam.PCollection]:
    letters = (tuple(steps)
               | 'Flatten' >> beam.Flatten()
               | 'StampRunId' >> beam.Map(stamp_run_id, self.run_id))
    if self.rejected_at:
      letters = letters | 'StampRejectedAt' >> beam.Map(stamp_rejected_at)
    return {'dead_letters': letters, 'written': (letters | 'Write' >> self.sink)['written']}
