"""Image files as a run's input: every file a glob matches, local or gs://, one row per image.

Each row holds the file's `uri` (the key, unless --key_column names another) and its
`size_bytes`; the image step (`transforms.images.prepare`) reads and decodes it. A table
input instead names its images in a column of URIs or holds their bytes (--image_column).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import apache_beam as beam
import pyarrow as pa

from transforms.images import listing
from transforms.rows.dead_letters import DEAD_LETTERS, ROW, SOURCE

IMAGE_FORMAT = 'images'
URI, SIZE = listing.SCHEMA.names  # 'uri', 'size_bytes'
SCHEMA = listing.SCHEMA
# Files per batch of the listing: the image step decodes a batch a few chunks ahead of the model
# (transforms.images.prepare), so a batch holds many chunks.
LISTED_ROWS = 1024
# Files whose extension says they are a table, not an image: a glob of them is read as rows.
TABLE_EXTENSIONS = ('.parquet', '.csv', '.jsonl', '.json', '.ndjson', '.avro', '.tfrecord', '.tfrecords', '.gz')


def is_image_glob(pattern: str) -> bool:
  """Whether an image model's --input names image files rather than a table of rows."""
  return not pattern.lower().rstrip('*').endswith(TABLE_EXTENSIONS)


def _with_meta(batch: pa.RecordBatch) -> pa.RecordBatch:
  """The listing's rows with the columns every source adds: the file as its source, no row number."""
  return pa.RecordBatch.from_arrays(
      [batch.column(URI), batch.column(SIZE), batch.column(URI), pa.nulls(batch.num_rows, pa.int64())],
      names=[URI, SIZE, SOURCE, ROW])


@dataclasses.dataclass(eq=False)
class ReadImageFiles(beam.PTransform):
  """PBegin → `{'batches': rows of `uri` and `size_bytes`, spread across workers; DEAD_LETTERS: none}`."""
  pattern: str

  def __post_init__(self):
    super().__init__()

  def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
    # Every file the glob matches is a row, whatever its extension: one that is no image is a dead letter
    # that says so, never a file silently left out.
    listed = pbegin | 'List' >> listing.ListFiles(self.pattern, extensions=None, batch_rows=LISTED_ROWS)
    batches = listed | 'AddSource' >> beam.Map(_with_meta).with_output_types(pa.RecordBatch)
    return {'batches': batches, DEAD_LETTERS: pbegin | 'NoUnreadable' >> beam.Create([])}


@dataclasses.dataclass(frozen=True)
class ImageFiles:
  """Image files as a run's input (module docstring)."""
  pattern: str

  @property
  def tallies(self) -> dict[str, str]:
    return {}  # each image is a row: rows read are the images listed

  @property
  def snapshot_time(self) -> None:
    return None

  def read(self, columns: Sequence[str], batch_size: int) -> ReadImageFiles:
    del columns, batch_size  # a listing has its two columns; the image step cuts batches into chunks
    return ReadImageFiles(self.pattern)

  def describe(self) -> dict[str, Any]:
    """What the manifest records: the glob. A checksum of every image would read each file twice."""
    return {'kind': IMAGE_FORMAT, 'pattern': self.pattern}
