"""The image model's feature step: rows naming images (a URI or the bytes) → `(rows, {tensor: images})`.

Each batch of rows is cut into chunks; a chunk's files are read and decoded on a thread
pool (simplejpeg, Pillow and pydicom release the GIL while they decode and resize, so one
process keeps every core it owns busy, and a gs:// read waits beside the others), then
stacked into tensors per shape (`transforms.images.tensors`). A file that cannot be read
or decoded becomes a dead letter keyed by its row, with its reason: never a failed batch.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Iterator, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from transforms.images.decode import decode
from transforms.images.errors import ImageError
from transforms.images.spec import ImageSpec
from transforms.images.tensors import shape_groups, to_tensor
from transforms.rows import counters
from transforms.rows import dead_letters as dl
from transforms.rows.dead_letters import CORRUPT_IMAGE, DEAD_LETTERS, UNREADABLE_FILE, count_rejections

# Images per element of the predict step, unless --read_batch_size says otherwise: enough for a GPU
# call once RunInference packs elements up to --max_batch_rows, small enough that decoded float
# tensors (64 × 3 × 224 × 224 × 4 bytes = 38 MB) stay cheap to hold and pass.
IMAGE_BATCH_ROWS = 64


def read_bytes(uri: str) -> bytes:
  """A file's bytes from any Beam file system; ImageError when it is missing or may not be read."""
  try:
    with FileSystems.open(uri, compression_type='uncompressed') as f:
      return f.read()
  except Exception as e:  # pylint: disable=broad-except  # each file system raises its own
    text = str(e).splitlines()[0] if str(e) else ''
    if isinstance(e, (FileNotFoundError,)) or 'not found' in text.lower() or 'no such file' in text.lower():
      why = 'does not exist'
    elif isinstance(e, PermissionError) or any(w in text.lower() for w in ('permission', 'forbidden', '403')):
      why = 'may not be read by this worker (permission denied)'
    else:
      why = 'cannot be read'
    raise ImageError(UNREADABLE_FILE, f'{uri} {why}: {type(e).__name__}: {text}'[:500]) from None


def load(value, spec: ImageSpec) -> np.ndarray:
  """One row's image, decoded and resized: `value` is its URI, or its bytes."""
  return decode(value if isinstance(value, bytes) else read_bytes(value), spec)


class _PrepareImagesFn(beam.DoFn):
  """Rows → `(rows, {tensor: array})` per chunk and shape; rows whose image fails → dead letters."""

  def __init__(self, spec: ImageSpec, column: str, chunk_rows: int, threads: Optional[int]):
    self._spec = spec
    self._column = column
    self._chunk_rows = chunk_rows
    self._threads = threads
    self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
    self._decoded = counters.counter('images_decoded')

  def setup(self):
    # Reading waits on storage and decoding runs outside the GIL: twice the cores keeps both busy.
    self._pool = concurrent.futures.ThreadPoolExecutor(self._threads or 2 * len(os.sched_getaffinity(0)),
                                                       thread_name_prefix='decode')

  def teardown(self):
    if self._pool is not None:
      self._pool.shutdown(wait=False)

  def process(self, batch: pa.RecordBatch) -> Iterator:
    for start in range(0, batch.num_rows, self._chunk_rows):
      yield from self._chunk(batch.slice(start, self._chunk_rows))

  def _attempt(self, value):
    try:
      return load(value, self._spec)
    except ImageError as e:
      return e
    except Exception as e:  # pylint: disable=broad-except  # a decoder's own bug must not fail the batch
      return ImageError(CORRUPT_IMAGE, f'{type(e).__name__}: {e}'[:500])

  def _chunk(self, rows: pa.RecordBatch) -> Iterator:
    values = rows.column(self._column).to_pylist()
    from_bytes = not pa.types.is_string(rows.schema.field(self._column).type)
    results = list(self._pool.map(self._attempt, values))
    failed = np.array([isinstance(r, ImageError) for r in results], dtype=bool)
    if failed.any():
      errors = [r for r in results if isinstance(r, ImageError)]
      letters = dl.from_batch(_without_bytes(rows, self._column) if from_bytes else rows, failed,
                              stage='decode', codes=[e.code for e in errors], reasons=[str(e) for e in errors])
      count_rejections(letters)
      yield beam.pvalue.TaggedOutput(DEAD_LETTERS, letters)
    images = [r for r in results if not isinstance(r, ImageError)]
    if not images:
      return
    self._decoded.inc(len(images))
    kept = rows.filter(pa.array(~failed)) if failed.any() else rows
    if from_bytes:  # the bytes travel no further than here: the predictions do not carry them
      kept = kept.drop_columns([self._column])
    for group in shape_groups(images):
      group_rows = kept.take(pa.array(group)) if len(group) < kept.num_rows else kept
      yield group_rows, {self._spec.tensor: to_tensor([images[i] for i in group], self._spec)}


def _without_bytes(rows: pa.RecordBatch, column: str) -> pa.RecordBatch:
  """The rows with their image bytes replaced by their size, so a dead letter's record stays readable."""
  sizes = pc.binary_length(rows.column(column)).cast(pa.string())
  described = pc.binary_join_element_wise(pa.repeat(pa.scalar('<'), rows.num_rows), sizes,
                                          pa.repeat(pa.scalar(' bytes>'), rows.num_rows), '')
  return rows.set_column(rows.schema.get_field_index(column), column, described)


@dataclasses.dataclass(eq=False)
class PrepareImages(beam.PTransform):
  """Validated rows → `{'inputs': (rows, {tensor: images}) per chunk and shape, DEAD_LETTERS: rows whose
  image could not be read or decoded}`.

  Args:
    spec: the bundle's images.json.
    column: the column holding each row's image: its URI (text), or its bytes (binary).
    chunk_rows: images per element.
    threads: decoding threads per worker process; None: twice its cores.
  """

  spec: ImageSpec
  column: str
  chunk_rows: int = IMAGE_BATCH_ROWS
  threads: Optional[int] = None

  def __post_init__(self):
    super().__init__()

  def expand(self, batches: beam.PCollection[pa.RecordBatch]) -> dict[str, beam.PCollection]:
    prepared = batches | 'Decode' >> beam.ParDo(_PrepareImagesFn(
        self.spec, self.column, self.chunk_rows, self.threads)).with_outputs(
            DEAD_LETTERS, main='inputs')
    return {'inputs': prepared['inputs'], DEAD_LETTERS: prepared[DEAD_LETTERS]}
