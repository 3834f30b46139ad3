"""Column preprocessing steps: fit statistics with Beam combiners, apply them vectorized.

A step transforms one column of a batch. Steps that learn from data (a mean, a
vocabulary) expose an `analyzer()`: a `beam.CombineFn` over the column's values,
one pyarrow/numpy call per batch, so the same code fits on a laptop and on
Dataflow. `fitted(statistics, previous)` returns a copy of the step holding what
was learned; that copy is what the model bundle stores and what serving applies.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from typing import Any, ClassVar, Optional, Union

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# What steps fit with (re-exported: callers import steps and their combiners from one place).
from transforms.features.analyzers import ORDERS, MomentsFn, ValueCountsFn, Values, order_tokens, to_float64  # noqa: F401


def param(default: Any, doc: str) -> Any:
  """A step parameter with its meaning; the generated step reference (`transforms.features.step_reference`) prints `doc`."""
  return dataclasses.field(default=default, metadata={'doc': doc})


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Step:
  """One column transformation. Subclasses are frozen dataclasses, serialised by `kind`.

  Besides the parameters, each subclass states for the reference and for error
  messages what it outputs, what `--data` fits when parameters are left out,
  and a working JSON example with every learned value given.
  """
  kind: ClassVar[str] = ''
  output: ClassVar[str] = ''
  learns: ClassVar[str] = ''
  example: ClassVar[dict[str, Any]] = {}

  def analyzer(self) -> Optional[beam.CombineFn]:
    """The combiner whose output `fitted` needs, or None when nothing is learned."""
    return None

  def fitted(self, statistics: Any, previous: Optional['Step']) -> 'Step':
    """Returns this step with its learned values filled in."""
    del statistics, previous
    return self

  def resolved(self, previous: Optional['Step']) -> 'Step':
    """This step with what follows from the step before it alone (no data) filled in."""
    del previous
    return self

  def missing(self) -> list[str]:
    """The parameters still to be given or fitted from data; empty when the step can run."""
    return []

  @property
  def is_fitted(self) -> bool:
    return not self.missing()

  def apply(self, values: Values) -> Values:
    raise NotImplementedError

  def describe(self) -> str:
    """One line that shows every learned value, for the import to print."""
    return self.kind

  @classmethod
  def example_json(cls) -> str:
    return json.dumps({'kind': cls.kind, **cls.example})

  def _error(self, problem: str) -> ValueError:
    return ValueError(f'{self.kind} step: {problem}; for example {self.example_json()}')

  def _check_numbers(self, *names: str) -> None:
    """Refuses a given statistic that is not a number (JSON text like "12.3" included)."""
    for name in names:
      if getattr(self, name) is not None and not _is_number(getattr(self, name)):
        raise self._error(f'{name} must be a number, got {getattr(self, name)!r}')

  def to_dict(self) -> dict[str, Any]:
    return {'kind': self.kind, **{k: (list(v) if isinstance(v, tuple) else v)
                                  for k, v in dataclasses.asdict(self).items() if v is not None}}

  @staticmethod
  def types() -> dict[str, type['Step']]:
    """Every step kind, in the order the reference lists them."""
    return {cls.kind: cls for cls in (FillMissing, ZScore, MinMax, Vocabulary, OneHot)}

  @staticmethod
  def from_dict(data: dict[str, Any]) -> 'Step':
    if not isinstance(data, dict):
      raise ValueError(f'a step is a JSON object with a "kind", got {data!r}')
    data = dict(data)
    kind = data.pop('kind', None)
    step_types = Step.types()
    if kind not in step_types:
      raise ValueError(f'unknown step kind {kind!r}; expected one of {sorted(step_types)}')
    cls = step_types[kind]
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
      raise ValueError(f'bad {kind!r} step {data}: no parameter {", ".join(map(repr, unknown))} (it takes '
                       f'{", ".join(names)}); for example {cls.example_json()}')
    return cls(**data)


@dataclasses.dataclass(frozen=True)
class FillMissing(Step):
  """Replaces missing values with a constant, the training mean, or the most frequent value.

  Only a `fill_missing` as a feature's first step makes its column optional; a
  missing value in any other column is a dead letter (`missing_value`).
  """
  kind: ClassVar[str] = 'fill_missing'
  output: ClassVar[str] = '1 value per row: the column with no missing values'
  learns: ClassVar[str] = ("`value`, unless given: the mean (`strategy: mean`) or the most frequent value "
                           "(`most_frequent`; ties go to the lowest value as text)")
  example: ClassVar[dict[str, Any]] = {'strategy': 'mean', 'value': 14.2}
  strategy: str = param('constant', "How `value` is chosen: `constant` (you give it), `mean` or `most_frequent` "
                        "(fitted from `--data` unless you give it).")
  value: Optional[Union[float, str]] = param(None, 'The value that replaces a missing one: a number for a '
                                             '`float` column, text for a `string` column.')

  def __post_init__(self):
    if self.strategy not in ('constant', 'mean', 'most_frequent'):
      raise self._error(f"strategy must be 'constant', 'mean' or 'most_frequent', got {self.strategy!r}")
    if self.strategy == 'constant' and self.value is None:
      raise self._error("strategy 'constant' needs a value")
    if self.value is not None and not (_is_number(self.value) or isinstance(self.value, str)):
      raise self._error(f'value must be a number or a string, got {self.value!r}')

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

  def missing(self) -> list[str]:
    return [] if self.value is not None else ['value']

  def apply(self, values: Values) -> Values:
    if isinstance(values, np.ndarray):
      return np.where(np.isnan(values), self.value, values)
    return pc.fill_null(values, pa.scalar(self.value, values.type))

  def describe(self) -> str:
    return f'fill_missing ({self.strategy}): a missing value becomes {self.value!r}'


@dataclasses.dataclass(frozen=True)
class ZScore(Step):
  """Centres on the training mean and divides by the training standard deviation.

  A standard deviation of 0 (a constant training column) divides by 1 instead.
  """
  kind: ClassVar[str] = 'z_score'
  output: ClassVar[str] = '1 value per row: `(x - mean) / std`'
  learns: ClassVar[str] = '`mean` and `std` (population standard deviation, `ddof=0`) of the non-missing values'
  example: ClassVar[dict[str, Any]] = {'mean': 16.4, 'std': 7.2}
  mean: Optional[float] = param(None, 'The training mean.')
  std: Optional[float] = param(None, 'The training standard deviation.')

  def __post_init__(self):
    self._check_numbers('mean', 'std')

  def analyzer(self):
    return MomentsFn() if self.missing() else None

  def fitted(self, statistics, previous):
    if not self.missing():
      return self
    return dataclasses.replace(self, mean=statistics['mean'], std=statistics['std'])

  def missing(self) -> list[str]:
    return [name for name in ('mean', 'std') if getattr(self, name) is None]

  def apply(self, values: Values) -> np.ndarray:
    # A constant training column carries no signal: map it to 0 instead of dividing by 0.
    return (to_float64(values) - self.mean) / (self.std or 1.0)

  def describe(self) -> str:
    return f'z_score: (x - {self.mean!r}) / {self.std!r}'


@dataclasses.dataclass(frozen=True)
class MinMax(Step):
  """Scales the training range to [0, 1]; serving values outside it fall outside [0, 1].

  A training range of 0 divides by 1 instead.
  """
  kind: ClassVar[str] = 'min_max'
  output: ClassVar[str] = '1 value per row: `(x - min) / (max - min)`'
  learns: ClassVar[str] = '`min` and `max` of the non-missing values'
  example: ClassVar[dict[str, Any]] = {'min': -1.6, 'max': 35.6}
  min: Optional[float] = param(None, 'The training minimum.')
  max: Optional[float] = param(None, 'The training maximum.')

  def __post_init__(self):
    self._check_numbers('min', 'max')

  def analyzer(self):
    return MomentsFn() if self.missing() else None

  def fitted(self, statistics, previous):
    if not self.missing():
      return self
    return dataclasses.replace(self, min=statistics['min'], max=statistics['max'])

  def missing(self) -> list[str]:
    return [name for name in ('min', 'max') if getattr(self, name) is None]

  def apply(self, values: Values) -> np.ndarray:
    return (to_float64(values) - self.min) / ((self.max - self.min) or 1.0)

  def describe(self) -> str:
    return f'min_max: (x - {self.min!r}) / ({self.max!r} - {self.min!r})'


@dataclasses.dataclass(frozen=True)
class Vocabulary(Step):
  """Maps each value (as text) to an integer id: its position in `vocabulary`.

  A value not in the vocabulary gets an out-of-vocabulary (OOV) id: after the
  vocabulary's (`len(vocabulary)`, or one of `num_oov_buckets` ids by a stable
  hash of the value), or before them with `oov_position: first`, as Keras'
  `StringLookup` numbers them. With `num_oov_buckets: 0` it gets no id but -1:
  a `one_hot` after it then sets no column (scikit-learn's
  `OneHotEncoder(handle_unknown='ignore')`), and without one the model reads -1
  (`OrdinalEncoder(handle_unknown='use_encoded_value', unknown_value=-1)`). The
  order is part of the model: give the vocabulary in the order your model was
  trained with, or let `--data` fit it in `order`.

  Values are looked up exactly as read: `' one_year '` is not `'one_year'`,
  as it is not to a model trained on the text as it was. Where your own
  preprocessing trimmed spaces or changed case, say so with `trim` and `case`:
  the lookup, the fitting and the import's `--expected` check then do the same.
  """
  kind: ClassVar[str] = 'vocabulary'
  output: ClassVar[str] = ('1 integer id per row, `0 .. len(vocabulary) + num_oov_buckets - 1` (-1 for a value '
                           'outside the vocabulary when `num_oov_buckets` is 0); usually followed by `one_hot`')
  learns: ClassVar[str] = ('`vocabulary`, unless given: the distinct values seen at least `min_frequency` '
                           'times, the `max_tokens` most frequent of them, in `order`')
  example: ClassVar[dict[str, Any]] = {'vocabulary': ['Europe', 'Japan', 'USA']}
  vocabulary: Optional[tuple[str, ...]] = param(None, 'The values as text (a JSON number is taken as its text), in '
                                                'id order: the first gets the first id. Give them in the order '
                                                'your model was trained with.')
  order: Optional[str] = param(None, 'How `--data` orders a fitted vocabulary: `frequency` (most frequent first, '
                               'ties by value as text; used when not given), `lexical` (sorted as text: "1", "10", '
                               '"2") or `numeric` (sorted as numbers: "1", "2", "10"). With a given `vocabulary`, '
                               '`lexical` or `numeric` checks that the list is in that order.')
  num_oov_buckets: int = param(1, 'How many ids values outside the vocabulary share. 0: none; such a value '
                               'gets -1, which a `one_hot` after it encodes as a row of zeros.')
  oov_position: str = param('last', 'Where the OOV ids go: `last` (after the vocabulary) or `first` (ids '
                            '`0 .. num_oov_buckets - 1`, the vocabulary after them, as in Keras `StringLookup`).')
  max_tokens: Optional[int] = param(None, 'Fitting keeps at most this many of the most frequent values. '
                                    'Default: all.')
  min_frequency: int = param(1, 'Fitting keeps only values seen at least this often in `--data`.')
  trim: bool = param(False, 'Removes spaces (any whitespace) around each value before it is looked up or '
                     'counted. Off: values are used exactly as read.')
  case: Optional[str] = param(None, '`lower` or `upper`: changes each value\'s case before it is looked up or '
                              'counted. Left out: case is kept.')

  def __post_init__(self):
    if (not isinstance(self.num_oov_buckets, int) or isinstance(self.num_oov_buckets, bool)
        or self.num_oov_buckets < 0):
      raise self._error('num_oov_buckets must be an integer >= 0 (0: a value outside the vocabulary gets -1, '
                        'no column after a one_hot)')
    if not isinstance(self.trim, bool):
      raise self._error(f'trim must be true or false, got {self.trim!r}')
    if self.case not in (None, 'lower', 'upper'):
      raise self._error(f"case must be 'lower' or 'upper' (or left out to keep it), got {self.case!r}")
    if self.oov_position not in ('last', 'first'):
      raise self._error(f"oov_position must be 'last' or 'first', got {self.oov_position!r}")
    if self.order is not None and self.order not in ORDERS:
      raise self._error(f'order must be one of {list(ORDERS)}, got {self.order!r}')
    if self.vocabulary is None:
      return
    if isinstance(self.vocabulary, str) or not all(
        isinstance(t, str) or (isinstance(t, int) and not isinstance(t, bool)) for t in self.vocabulary):
      raise self._error(f'vocabulary must be a list of values as text, got {self.vocabulary!r}')
    tokens = tuple(str(t) for t in self.vocabulary)
    twice = sorted({t for t in tokens if tokens.count(t) > 1})
    if twice:
      raise self._error(f'vocabulary lists {twice} more than once')
    if self.order in ('lexical', 'numeric') and list(tokens) != order_tokens(tokens, self.order):
      raise self._error(f'vocabulary {list(tokens)} is not in {self.order!r} order')
    changed = [t for t in tokens if self._normal(t) != t]
    if changed:  # such an entry could never match a value, which is normalised first
      raise self._error(f'with trim or case, the vocabulary must be written that way too: {changed[0]!r} '
                        f'would never match (write {self._normal(changed[0])!r})')
    object.__setattr__(self, 'vocabulary', tokens)

  def _normal(self, token: str) -> str:
    token = token.strip() if self.trim else token
    return {'lower': token.lower(), 'upper': token.upper()}.get(self.case, token)

  def normalized(self, values: Values) -> pa.Array:
    """The values as text, as this step looks them up: trimmed and recased only where it says so."""
    if isinstance(values, np.ndarray):
      values = pa.array(values)
    values = values.cast(pa.string())
    if self.trim:
      values = pc.utf8_trim_whitespace(values)
    if self.case is not None:
      values = pc.utf8_lower(values) if self.case == 'lower' else pc.utf8_upper(values)
    return values

  def analyzer(self):
    if self.vocabulary is not None:
      return None
    return ValueCountsFn(self.normalized) if self.trim or self.case else ValueCountsFn()

  def fitted(self, statistics, previous):
    if self.vocabulary is not None:
      return self
    order = self.order or 'frequency'
    tokens = [str(v) for v, count in statistics if count >= self.min_frequency][:self.max_tokens]
    return dataclasses.replace(self, vocabulary=tuple(order_tokens(tokens, order)), order=order)

  def missing(self) -> list[str]:
    return [] if self.vocabulary is not None else ['vocabulary']

  @property
  def size(self) -> int:
    """Number of distinct ids this step produces: vocabulary plus OOV buckets."""
    return len(self.vocabulary) + self.num_oov_buckets

  def apply(self, values: Values) -> np.ndarray:
    values = self.normalized(values)
    ids = pc.index_in(values, value_set=pa.array(self.vocabulary, pa.string()))
    in_vocab = ids.is_valid().to_numpy(zero_copy_only=False)
    first = self.oov_position == 'first'
    out = ids.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    if first:
      out += self.num_oov_buckets
    if not in_vocab.all():
      oov = 0 if first else len(self.vocabulary)
      if not self.num_oov_buckets:
        out[~in_vocab] = -1
      elif self.num_oov_buckets > 1:
        hashes = np.array([_stable_hash(v) for v in values.filter(pa.array(~in_vocab)).to_pylist()], np.int64)
        out[~in_vocab] = oov + hashes % self.num_oov_buckets
      else:
        out[~in_vocab] = oov
    return out

  def describe(self) -> str:
    n, b = len(self.vocabulary), self.num_oov_buckets
    start, oov = (b, 0) if self.oov_position == 'first' else (0, n)
    ids = ', '.join(f'{json.dumps(t)}→{start + i}' for i, t in enumerate(self.vocabulary))
    oov = {0: 'any other value → -1 (no id)', 1: f'any other value → {oov}'}.get(
        b, f'any other value → {oov}..{oov + b - 1} by hash')
    how = f'{self.order} order' if self.order else 'order as given'
    normal = ', '.join(([] if not self.trim else ['trimmed']) + ([] if not self.case else [f'{self.case} case']))
    return f'vocabulary ({n} values, {how}{", values " + normal if normal else ""}): {ids}; {oov}'


def _stable_hash(value: Optional[str]) -> int:
  """A process-independent hash (Python's `hash` is salted per process)."""
  return zlib.crc32((value or '').encode('utf-8'))


@dataclasses.dataclass(frozen=True)
class OneHot(Step):
  """Turns integer ids into indicator columns: id `i` sets column `i` to 1, the others to 0.

  After a `vocabulary` the columns are the vocabulary's values in its order, then
  its out-of-vocabulary buckets; `depth` follows from that vocabulary and is not
  needed. An id at or past `depth` sets the last column; a negative id (a
  vocabulary's unknown value with `num_oov_buckets: 0`) sets none, so the row is
  all zeros, as scikit-learn's `OneHotEncoder(handle_unknown='ignore')` encodes it.
  """
  kind: ClassVar[str] = 'one_hot'
  output: ClassVar[str] = ('`depth` columns: after a `vocabulary` of n values with b OOV buckets, n + b columns, '
                           'the vocabulary in order, then the OOV buckets (with the default b = 1, the last column '
                           'is "not in the vocabulary"; with b = 0 there is none, and an unknown value is all zeros); '
                           'with `oov_position: first`, the OOV buckets come first')
  learns: ClassVar[str] = "nothing itself; `depth` comes from the preceding `vocabulary` once that is given or fitted"
  example: ClassVar[dict[str, Any]] = {}
  depth: Optional[int] = param(None, 'The number of columns. Leave it out after a `vocabulary`; give it only for '
                               'a column that already holds integer ids `0 .. depth - 1`.')

  def __post_init__(self):
    if self.depth is not None and (not isinstance(self.depth, int) or isinstance(self.depth, bool)
                                   or self.depth < 1):
      raise ValueError(f'one_hot step: depth must be an integer >= 1, got {self.depth!r}; after a vocabulary, '
                       f'leave it out: {self.example_json()}')

  def fitted(self, statistics, previous):
    if self.depth is not None:
      return self
    if not isinstance(previous, Vocabulary):
      raise ValueError('one_hot without a depth must follow a vocabulary step: '
                       '[{"kind": "vocabulary"}, {"kind": "one_hot"}], or give {"kind": "one_hot", "depth": N} '
                       'for a column of integer ids 0..N-1')
    return dataclasses.replace(self, depth=previous.size)

  def resolved(self, previous):
    if self.depth is None and isinstance(previous, Vocabulary) and previous.vocabulary is not None:
      return dataclasses.replace(self, depth=previous.size)
    return self

  def missing(self) -> list[str]:
    return [] if self.depth is not None else ['depth']

  def apply(self, values: Values) -> np.ndarray:
    ids = np.asarray(values, dtype=np.int64)
    out = np.zeros((ids.shape[0], self.depth), dtype=np.float32)
    known = ids >= 0  # -1: a value the vocabulary has no id for (num_oov_buckets 0): no column is set
    out[np.flatnonzero(known), np.minimum(ids[known], self.depth - 1)] = 1.0
    return out

  def describe(self) -> str:
    return f'one_hot: {self.depth} columns'
