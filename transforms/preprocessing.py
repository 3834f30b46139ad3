"""Column preprocessing steps: fit statistics with Beam combiners, apply them vectorized.

A step transforms one column of a batch. Steps that learn from data (a mean, a
vocabulary) expose an `analyzer()`: a `beam.CombineFn` over the column's values,
one pyarrow/numpy call per batch, so the same code fits on a laptop and on
Dataflow. `fitted(statistics, previous)` returns a copy of the step holding what
was learned; that copy is what the model bundle stores and what serving applies.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import zlib
from typing import Any, ClassVar, Optional, Union

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
  """Frequency of each non-null value, counted with one `value_counts` per batch."""

  def create_accumulator(self) -> collections.Counter:
    return collections.Counter()

  def add_input(self, acc: collections.Counter, values: Values):
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


@dataclasses.dataclass(frozen=True)
class Step:
  """One column transformation. Subclasses are frozen dataclasses, serialised by `kind`."""
  kind: ClassVar[str] = ''

  def analyzer(self) -> Optional[beam.CombineFn]:
    """The combiner whose output `fitted` needs, or None when nothing is learned."""
    return None

  def fitted(self, statistics: Any, previous: Optional['Step']) -> 'Step':
    """Returns this step with its learned values filled in."""
    del statistics, previous
    return self

  @property
  def is_fitted(self) -> bool:
    return True

  def apply(self, values: Values) -> Values:
    raise NotImplementedError

  def to_dict(self) -> dict[str, Any]:
    return {'kind': self.kind, **{k: v for k, v in dataclasses.asdict(self).items() if v is not None}}

  @staticmethod
  def from_dict(data: dict[str, Any]) -> 'Step':
    data = dict(data)
    kind = data.pop('kind', None)
    step_types = {cls.kind: cls for cls in (FillMissing, ZScore, MinMax, Vocabulary, OneHot)}
    if kind not in step_types:
      raise ValueError(f'unknown step kind {kind!r}; expected one of {sorted(step_types)}')
    try:
      return step_types[kind](**data)
    except TypeError as e:
      raise ValueError(f'bad {kind!r} step {data}: {e}') from None


@dataclasses.dataclass(frozen=True)
class FillMissing(Step):
  """Replaces missing values with a constant, the training mean, or the most frequent value."""
  kind: ClassVar[str] = 'fill_missing'
  strategy: str = 'constant'  # 'constant' | 'mean' | 'most_frequent'
  value: Optional[Union[float, str]] = None

  def __post_init__(self):
    if self.strategy not in ('constant', 'mean', 'most_frequent'):
      raise ValueError(f"fill_missing strategy must be 'constant', 'mean' or 'most_frequent', got {self.strategy!r}")
    if self.strategy == 'constant' and self.value is None:
      raise ValueError("fill_missing with strategy 'constant' needs a value")

  def analyzer(self):
    if self.value is not None:
      return None
    return MomentsFn() if self.strategy == 'mean' else ValueCountsFn()

  def fitted(self, statistics, previous):
    if self.value is not None:
      return self
    value = statistics['mean'] if self.strategy == 'mean' else statistics[0][0] if statistics else None
    if value is None:
      raise ValueError('no non-missing values to fit on')
    return dataclasses.replace(self, value=value)

  @property
  def is_fitted(self) -> bool:
    return self.value is not None

  def apply(self, values: Values) -> Values:
    if isinstance(values, np.ndarray):
      return np.where(np.isnan(values), self.value, values)
    return pc.fill_null(values, pa.scalar(self.value, values.type))


@dataclasses.dataclass(frozen=True)
class ZScore(Step):
  """Centres on the training mean and divides by the training standard deviation."""
  kind: ClassVar[str] = 'z_score'
  mean: Optional[float] = None
  std: Optional[float] = None

  def analyzer(self):
    return MomentsFn()

  def fitted(self, statistics, previous):
    return dataclasses.replace(self, mean=statistics['mean'], std=statistics['std'])

  @property
  def is_fitted(self) -> bool:
    return self.mean is not None and self.std is not None

  def apply(self, values: Values) -> np.ndarray:
    # A constant training column carries no signal: map it to 0 instead of dividing by 0.
    return (to_float64(values) - self.mean) / (self.std or 1.0)


@dataclasses.dataclass(frozen=True)
class MinMax(Step):
  """Scales the training range to [0, 1]; serving values outside it fall outside [0, 1]."""
  kind: ClassVar[str] = 'min_max'
  min: Optional[float] = None
  max: Optional[float] = None

  def analyzer(self):
    return MomentsFn()

  def fitted(self, statistics, previous):
    return dataclasses.replace(self, min=statistics['min'], max=statistics['max'])

  @property
  def is_fitted(self) -> bool:
    return self.min is not None and self.max is not None

  def apply(self, values: Values) -> np.ndarray:
    return (to_float64(values) - self.min) / ((self.max - self.min) or 1.0)


@dataclasses.dataclass(frozen=True)
class Vocabulary(Step):
  """Maps strings to integer ids; unseen values go to `num_oov_buckets` extra ids by hash."""
  kind: ClassVar[str] = 'vocabulary'
  vocabulary: Optional[tuple[str, ...]] = None
  num_oov_buckets: int = 1
  max_tokens: Optional[int] = None
  min_frequency: int = 1

  def __post_init__(self):
    if self.num_oov_buckets < 1:
      raise ValueError('vocabulary needs num_oov_buckets >= 1 so unseen values have an id')
    if self.vocabulary is not None:
      object.__setattr__(self, 'vocabulary', tuple(self.vocabulary))

  def analyzer(self):
    return None if self.vocabulary is not None else ValueCountsFn()

  def fitted(self, statistics, previous):
    if self.vocabulary is not None:
      return self
    tokens = [str(v) for v, count in statistics if count >= self.min_frequency]
    return dataclasses.replace(self, vocabulary=tuple(tokens[:self.max_tokens]))

  @property
  def is_fitted(self) -> bool:
    return self.vocabulary is not None

  @property
  def size(self) -> int:
    """Number of distinct ids this step produces: vocabulary plus OOV buckets."""
    return len(self.vocabulary) + self.num_oov_buckets

  def apply(self, values: Values) -> np.ndarray:
    if isinstance(values, np.ndarray):
      values = pa.array(values)
    values = values.cast(pa.string())
    ids = pc.index_in(values, value_set=pa.array(self.vocabulary, pa.string()))
    in_vocab = ids.is_valid().to_numpy(zero_copy_only=False)
    out = ids.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    if not in_vocab.all():
      oov = len(self.vocabulary)
      if self.num_oov_buckets > 1:
        hashes = np.array([_stable_hash(v) for v in values.filter(pa.array(~in_vocab)).to_pylist()], np.int64)
        out[~in_vocab] = oov + hashes % self.num_oov_buckets
      else:
        out[~in_vocab] = oov
    return out


def _stable_hash(value: Optional[str]) -> int:
  """A process-independent hash (Python's `hash` is salted per process)."""
  return zlib.crc32((value or '').encode('utf-8'))


@dataclasses.dataclass(frozen=True)
class OneHot(Step):
  """Turns integer ids from a preceding `Vocabulary` into indicator columns."""
  kind: ClassVar[str] = 'one_hot'
  depth: Optional[int] = None

  def fitted(self, statistics, previous):
    if self.depth is not None:
      return self
    if not isinstance(previous, Vocabulary):
      raise ValueError('one_hot without a depth must follow a vocabulary step')
    return dataclasses.replace(self, depth=previous.size)

  @property
  def is_fitted(self) -> bool:
    return self.depth is not None

  def apply(self, values: Values) -> np.ndarray:
    ids = np.asarray(values, dtype=np.int64)
    out = np.zeros((ids.shape[0], self.depth), dtype=np.float32)
    out[np.arange(ids.shape[0]), np.clip(ids, 0, self.depth - 1)] = 1.0
    return out
