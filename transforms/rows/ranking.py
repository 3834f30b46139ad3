"""Top-K rankings: a model's scores over a catalogue become the K best items per row.

A recommender scores every item of its catalogue for every row (user). The
job keeps the K best, in order, with their scores, as two list columns
(`top_items`, `top_scores`): one row per user in files and BigQuery. A keyed
database table reads better one row per (user, rank), so its sink lays the
lists out that way (`rank_rows`). Both run on whole batches with numpy and
pyarrow: no Python object per row.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ITEMS = 'top_items'
SCORES = 'top_scores'
# The columns of the row-per-rank layout, in place of the two lists.
RANK, ITEM, SCORE = 'rank', 'item_id', 'score'


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
  """Indices of each row's k highest scores, best first: (rows, min(k, items))."""
  k = min(k, scores.shape[1])
  if k < scores.shape[1]:
    part = np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)  # ties then keep index order, as argmax
  else:
    part = np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
  order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind='stable')
  return np.take_along_axis(part, order, axis=1)


def ranking_arrays(scores: np.ndarray, items: Sequence[str], k: int) -> tuple[pa.ListArray, pa.ListArray]:
  """The `top_items` and `top_scores` list columns for a (rows, items) score matrix."""
  best = top_k(scores, k)
  rows, width = best.shape
  offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
  names = pa.array(list(items), pa.string()).take(pa.array(best.reshape(-1)))
  values = pa.array(np.take_along_axis(scores, best, axis=1).reshape(-1).astype(np.float32))
  return pa.ListArray.from_arrays(offsets, names), pa.ListArray.from_arrays(offsets, values)


def positions(lengths: np.ndarray) -> np.ndarray:
  """1-based positions within each list, for lists of these lengths laid end to end."""
  starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
  return np.arange(int(lengths.sum()), dtype=np.int32) - starts.astype(np.int32) + 1


def rank_schema(schema: pa.Schema) -> pa.Schema:
  """The row-per-rank schema of a ranking schema: the two lists become rank, item_id, score."""
  fields = []
  for field in schema:
    if field.name == ITEMS:
      fields += [pa.field(RANK, pa.int32(), nullable=False), pa.field(ITEM, pa.string()), pa.field(SCORE, pa.float32())]
    elif field.name != SCORES:
      fields.append(field)
  return pa.schema(fields)


def rank_rows(batch: pa.RecordBatch) -> pa.RecordBatch:
  """One row per (row, rank): the other columns repeated, the lists flattened in order."""
  items = batch.column(ITEMS)
  parents = pc.list_parent_indices(items)
  lengths = pc.list_value_length(items).fill_null(0).to_numpy(zero_copy_only=False)
  arrays = []
  for field, column in zip(batch.schema, batch.columns):
    if field.name == ITEMS:
      arrays += [pa.array(positions(lengths)), pc.list_flatten(items), pc.list_flatten(batch.column(SCORES))]
    elif field.name != SCORES:
      arrays.append(column.take(parents))
  return pa.RecordBatch.from_arrays(arrays, schema=rank_schema(batch.schema))


def short_rankings(batch: pa.RecordBatch, k: int) -> int:
  """Rows of a ranking batch holding fewer than `k` items (a catalogue smaller than k, items the model
  could not rank): counted, so the summary says how many users got a short list."""
  lengths = pc.list_value_length(batch.column(ITEMS)).fill_null(0)
  return int(pc.sum(pc.less(lengths, k)).as_py() or 0)
