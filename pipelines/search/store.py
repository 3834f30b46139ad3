"""A job's embeddings as a searchable vector store: a Lance dataset (local or gs://) holding the published
predictions' rows, their `embedding` as a fixed-size vector, and an IVF_PQ index over it.

Lance rather than a server: the store is files beside the job's output, written once a night, read by any
process. Each write is a new version committed atomically, and a reader keeps the version it opened, so a
lookup never sees half a night. A night's rows and their index are two commits; the `published` tag moves
to the indexed version last, and readers open the tag, so they never meet the unindexed version either.
The index parameters were chosen by measurement (`benchmarks/vector_store.py`, docs/performance.md).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from models.inference import EMBEDDING

# The tag readers open: the newest version whose index is built.
PUBLISHED = 'published'
# Below this many rows an exact scan answers within the lookup target (20,000 × 384 took 36 ms at the median on
# two busy cores, so 10,000 about half that), returns the true nearest, and needs no index build.
INDEX_MIN_ROWS = 10_000
# Versions kept after a write: this night's and the night before's (rows and index each).
KEEP_VERSIONS = 4
# The distance the store ranks by: cosine, so it matches the job's normalised embeddings and any others.
METRIC = 'cosine'


class StoreError(ValueError):
  """The predictions or the store cannot be used as asked; the message says which and what to do."""


@dataclasses.dataclass(frozen=True)
class IndexParams:
  """IVF_PQ settings, chosen by measurement on 1M × 384 (docs/performance.md, Vector search). A partition per
  4,096 rows (k-means over √rows partitions took too long to train on two cores); 8 dimensions per PQ
  sub-vector. A query scans `nprobes` partitions and re-ranks `refine_factor` × k candidates by their full
  vectors: the PQ codes alone ranked 3 of the true 10 first, so recall comes from the re-ranking (10 × k:
  0.76, 50 × k: 0.99, at 4 ms more at the 95th percentile), not from more partitions (10, 20 and 40 alike)."""
  rows_per_partition: int = 4096
  num_sub_vectors: Optional[int] = None  # None: dimension / 8
  nprobes: int = 10
  refine_factor: int = 50

  def partitions(self, rows: int) -> int:
    return max(1, rows // self.rows_per_partition)

  def sub_vectors(self, dimension: int) -> int:
    if self.num_sub_vectors:
      return self.num_sub_vectors
    return next(d for d in (dimension // 8, dimension // 4, dimension // 2, 1) if d and dimension % d == 0)


def as_vectors(table: pa.Table, column: str = EMBEDDING) -> pa.Table:
  """The table with `column` a fixed-size list of float32 (what Lance indexes), checked: StoreError for a missing
  column, a null or empty embedding, or embeddings of different lengths."""
  if column not in table.column_names:
    raise StoreError(f'the predictions have no {column!r} column (columns: {", ".join(table.column_names)}); '
                     'the store takes an embedding model\'s output (outputs.json kind "embedding")')
  values = table.column(column).combine_chunks()
  if pa.types.is_fixed_size_list(values.type):
    values = values.cast(pa.list_(pa.float32()))
  if values.null_count:
    raise StoreError(f'{values.null_count} rows have a null {column}')
  lengths = np.unique(values.value_lengths().to_numpy(zero_copy_only=False)) if len(values) else np.array([1])
  if len(lengths) != 1 or lengths[0] == 0:
    raise StoreError(f'the {column} vectors have lengths {sorted(lengths.tolist())[:5]}; a store holds one dimension')
  flat = values.flatten().cast(pa.float32())
  fixed = pa.FixedSizeListArray.from_arrays(flat, int(lengths[0]))
  return table.set_column(table.column_names.index(column), pa.field(column, fixed.type, nullable=False), fixed)


def read_predictions(output: str, column: str = EMBEDDING) -> pa.Table:
  """A published output folder's prediction files (Parquet, any depth: `predictions-*.parquet`) as one table."""
  dataset = pads.dataset(output, format='parquet', exclude_invalid_files=False)
  files = [f for f in dataset.files if f.rsplit('/', 1)[-1].startswith('predictions-')]
  if not files:
    raise StoreError(f'{output} holds no predictions-*.parquet files; give the folder the job published '
                     '(its Parquet output; JSON Lines is not read here)')
  return as_vectors(pads.dataset(files, format='parquet', filesystem=dataset.filesystem).to_table(), column)


def write_store(table: pa.Table, uri: str, *, column: str = EMBEDDING, index_min_rows: int = INDEX_MIN_ROWS,
                params: IndexParams = IndexParams(), storage_options: Optional[dict] = None):
  """Writes `table` as the store's next version (replacing the rows), indexes it when it holds at least
  `index_min_rows` rows, then moves the `published` tag to it: readers switch whole nights at once."""
  dataset = write_rows(table, uri, column=column, storage_options=storage_options)
  if dataset.count_rows() >= index_min_rows:
    dataset = build_index(dataset, column=column, params=params)
  publish(dataset)
  # Each night adds a version of the rows and one of their index; the night before stays for the readers
  # still on it (a reader reopens the tag at least once a night), older ones go, or the store grows nightly.
  dataset.cleanup_old_versions(retain_versions=KEEP_VERSIONS, error_if_tagged_old_versions=False)
  return dataset


def write_rows(table: pa.Table, uri: str, *, column: str = EMBEDDING, storage_options: Optional[dict] = None):
  """The rows as a new version of the dataset at `uri` (created when absent), not yet published."""
  import lance  # the `text` extra; only the store's writers and readers need it
  return lance.write_dataset(as_vectors(table, column), uri, mode='overwrite', storage_options=storage_options)


def build_index(dataset, *, column: str = EMBEDDING, params: IndexParams = IndexParams()):
  """An IVF_PQ index over `column`, committed as the dataset's next version."""
  rows, dimension = dataset.count_rows(), dataset.schema.field(column).type.list_size
  return dataset.create_index(column, index_type='IVF_PQ', metric=METRIC, num_partitions=params.partitions(rows),
                              num_sub_vectors=params.sub_vectors(dimension), replace=True)


def publish(dataset):
  """Moves the `published` tag to the dataset's version: the one readers open from now on."""
  if PUBLISHED in dataset.tags.list():
    dataset.tags.update(PUBLISHED, dataset.version)
  else:
    dataset.tags.create(PUBLISHED, dataset.version)
  return dataset


def open_store(uri: str, *, storage_options: Optional[dict] = None):
  """The store's published version (StoreError when `uri` holds none)."""
  import lance
  try:
    return lance.dataset(uri, version=PUBLISHED, storage_options=storage_options)
  except (ValueError, OSError, KeyError) as e:
    raise StoreError(f'{uri}: no published vector store there ({str(e)[:200]}); write one with '
                     'python -m pipelines.search --store=URI --from_predictions=OUTPUT') from None


def nearest(dataset, vectors: np.ndarray, k: int = 10, *, column: str = EMBEDDING,
            columns: Optional[Sequence[str]] = None, params: IndexParams = IndexParams()) -> pa.Table:
  """The `k` rows nearest to one query vector, nearest first, with `_distance` (cosine distance, 1 − cos)."""
  query = np.asarray(vectors, np.float32).reshape(-1)
  shown = [c for c in (columns or dataset.schema.names) if c != column]
  return dataset.to_table(columns=shown + ['_distance'], nearest={
      'column': column, 'q': query, 'k': k, 'metric': METRIC, 'nprobes': params.nprobes,
      'refine_factor': params.refine_factor})
