"""What feature steps learn from data: Beam combiners over whole columns, and vocabulary orders.

Each combiner takes one batch's column at a time (one pyarrow/numpy call per
batch) and merges accumulators, so fitting runs the same on a laptop and on
Dataflow; `transforms.features.preprocessing` turns their output into fitted steps.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Callable, Optional, Sequence, Union

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# What flows between steps: arrow arrays before encoding, numpy arrays after.
Values = Union[pa.Array, np.ndarray]


def to_float64(values: Values) -> np.ndarray:
  """Returns a float64 numpy view of values; nulls become NaN."""
  if isinstance(values, np.ndarray):
    return values.astype(np.float64, copy=False)
  if isinstance(values, pa.ChunkedArray):
    values = values.combine_chunks()
  return values.cast(pa.float64()).to_numpy(zero_copy_only=False)


class MomentsFn(beam.CombineFn):
  """Count, mean, variance (Chan's parallel merge), min and max of non-null numbers."""

  def create_accumulator(self) -> tuple[int, float, float, float, float]:
    return (0, 0.0, 0.0, math.inf, -math.inf)

  def add_input(self, acc, values: Values):
    x = to_float64(values)
    x = x[~np.isnan(x)]
    if not x.size:
      return acc
    batch = (x.size, float(x.mean()), float(((x - x.mean())**2).sum()),
             float(x.min()), float(x.max()))
    return self.merge_accumulators([acc, batch])

  def merge_accumulators(self, accumulators):
    n, mean, m2, lo, hi = self.create_accumulator()
    for bn, bmean, bm2, blo, bhi in accumulators:
      if not bn:
        continue
      total = n + bn
      delta = bmean - mean
      mean += delta * bn / total
      m2 += bm2 + delta * delta * n * bn / total
      n, lo, hi = total, min(lo, blo), max(hi, bhi)
    return (n, mean, m2, lo, hi)

  def extract_output(self, acc) -> dict[str, float]:
    n, mean, m2, lo, hi = acc
    if not n:
      raise ValueError('no non-missing values to fit on')
    return {'count': n, 'mean': mean, 'std': math.sqrt(m2 / n), 'min': lo, 'max': hi}


class ValueCountsFn(beam.CombineFn):
  """Frequency of each non-null value, counted with one `value_counts` per batch.

  Args:
    prepare: what a step does to the values before it looks them up (a vocabulary's
      `trim` and `case`), so the values counted are the values it will see.
  """

  def __init__(self, prepare: Optional[Callable[[Values], pa.Array]] = None):
    self._prepare = prepare

  def create_accumulator(self) -> collections.Counter:
    return collections.Counter()

  def add_input(self, acc: collections.Counter, values: Values):
    if self._prepare is not None:
      values = self._prepare(values)
    if isinstance(values, np.ndarray):
      values = pa.array(values)
    counts = pc.value_counts(values.drop_null())
    acc.update(dict(zip(counts.field('values').to_pylist(), counts.field('counts').to_pylist())))
    return acc

  def merge_accumulators(self, accumulators):
    merged = collections.Counter()
    for acc in accumulators:
      merged.update(acc)
    return merged

  def extract_output(self, acc: collections.Counter) -> list[tuple[Any, int]]:
    # Most frequent first; ties broken by value so the result is deterministic.
    return sorted(acc.items(), key=lambda item: (-item[1], str(item[0])))


# How `Vocabulary` orders the tokens it fits; the id of a token is its position.
ORDERS = ('frequency', 'lexical', 'numeric')


def order_tokens(tokens: Sequence[str], order: str, counts: Optional[dict[str, int]] = None) -> list[str]:
  """Puts tokens in `order`: 'frequency' (most frequent first, ties by value as text; without
  `counts` the tokens are taken to be in that order already), 'lexical' (as text) or 'numeric'."""
  if order == 'frequency':
    return list(tokens) if counts is None else sorted(tokens, key=lambda t: (-counts.get(t, 0), t))
  if order == 'lexical':
    return sorted(tokens)
  if order == 'numeric':
    try:
      return sorted(tokens, key=lambda t: (float(t), t))
    except ValueError:
      bad = next(t for t in tokens if not _parses_as_float(t))
      raise ValueError(f"order 'numeric' needs every value to be a number; {bad!r} is not") from None
  raise ValueError(f'order must be one of {list(ORDERS)}, got {order!r}')


def _parses_as_float(text: str) -> bool:
  try:
    float(text)
    return True
  except ValueError:
    return False
