"""Row validation: coerce each feature column to its declared type, reject what cannot be used.

Checks run per column over the whole batch (pyarrow compute and numpy); only
rejected rows, which are rare, cost Python work to describe. A rejected row
goes to the dead letters with its first problem; its neighbours carry on.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.rows import coders as _coders  # noqa: F401  (registers the coders of the declared element types)
from transforms.rows import dead_letters as dl
from transforms.features.spec import Feature, FeatureSpec

FLOAT32_MAX = float(np.finfo(np.float32).max)
_INTEGER = r'^-?\d{1,19}$'  # what pyarrow casts to int64: no '+', no spaces
# int64's bounds as 19 digits: a 19-digit key fits when its digits compare no greater, as text.
_INT64_MAX_DIGITS = {False: '9223372036854775807', True: '9223372036854775808'}  # by sign: negative or not
_NUMBER = r'(?i)^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$|^[+-]?(inf|infinity|nan)$'


def _as_array(values) -> pa.Array:
  if isinstance(values, pa.ChunkedArray):
    values = values.combine_chunks()
  if pa.types.is_dictionary(values.type):
    values = values.cast(values.type.value_type)
  if pa.types.is_large_string(values.type):
    values = values.cast(pa.string())
  return values


def _blank_to_null(strings: pa.Array) -> pa.Array:
  """Text as read, with blank values (empty, or only whitespace) missing. Other values keep their
  spaces: `' one_year '` is not `'one_year'` to the user's own model, so it is not here either (a
  `vocabulary` step trims only when its `trim` says so)."""
  blank = pc.equal(pc.utf8_trim_whitespace(strings), '')
  return pc.if_else(blank, pa.scalar(None, pa.string()), strings)


def _trimmed_blank_to_null(strings: pa.Array) -> pa.Array:
  """Text of a number: spaces around it carry no meaning, so they go before parsing."""
  trimmed = pc.utf8_trim_whitespace(strings)
  return pc.if_else(pc.equal(trimmed, ''), pa.scalar(None, pa.string()), trimmed)


def text_counts(values: pa.Array) -> Optional[dict[str, int]]:
  """Rows per text value of a string column as `coerce_column` types it (as read; missing and blank
  values left out); None for a column of another type.

  Counts the values as read in one hash pass, then checks only the distinct ones for blanks,
  instead of every row: a profile of a category column costs one pass.
  """
  values = _as_array(values)
  if not pa.types.is_string(values.type):
    return None
  counts = pc.value_counts(values)
  typed = _blank_to_null(counts.field('values')).to_pylist()
  found: dict[str, int] = {}
  for value, n in zip(typed, counts.field('counts').to_pylist()):
    if value is not None:
      found[value] = found.get(value, 0) + n
  return found


def coerce_column(values: pa.Array, dtype: str) -> tuple[pa.Array, np.ndarray, np.ndarray]:
  """Casts values to `dtype` ('float', 'string', 'image': a URI as text, or an image's bytes as they are; or
  'text': a text model's text, blanks kept).

  Returns:
    The typed column (nulls where missing or invalid), a mask of values of the
    wrong type, and a mask of non-finite numbers. Blank strings and NaN count
    as missing, not invalid. Text is kept as read (only a number's text is trimmed to parse it).
  """
  values = _as_array(values)
  n = len(values)
  no = np.zeros(n, dtype=bool)
  kind = values.type
  if pa.types.is_null(kind):
    return pa.nulls(n, pa.float64() if dtype == 'float' else pa.string()), no, no
  if dtype == 'image' and (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
    empty = pc.equal(pc.binary_length(values), 0)
    return pc.if_else(empty, pa.scalar(None, kind), values), no, no  # no bytes: missing, like a blank string
  if dtype == 'text' and pa.types.is_string(kind):
    return values, no, no  # a blank text is the text step's to reject (empty_text), not a missing value
  if dtype in ('string', 'image', 'text'):
    if pa.types.is_string(kind):
      return _blank_to_null(values), no, no
    if pa.types.is_floating(kind):  # NaN is missing here too, not the text 'nan'
      values = pc.if_else(pc.is_nan(values), pa.scalar(None, kind), values)
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_floating(kind):
      return values.cast(pa.string()), no, no
    return pa.nulls(n, pa.string()), values.is_valid().to_numpy(zero_copy_only=False), no
  # dtype == 'float'
  invalid = no
  if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) or pa.types.is_decimal(kind):
    numbers = values.cast(pa.float64())
  elif pa.types.is_string(kind):
    text = _trimmed_blank_to_null(values)
    parsable = pc.fill_null(pc.match_substring_regex(text, _NUMBER), True)
    invalid = ~parsable.to_numpy(zero_copy_only=False)
    numbers = pc.if_else(parsable, text, pa.scalar(None, pa.string())).cast(pa.float64())
  else:
    return pa.nulls(n, pa.float64()), values.is_valid().to_numpy(zero_copy_only=False), no
  x = numbers.to_numpy(zero_copy_only=False)
  with np.errstate(invalid='ignore'):  # the model takes float32: a larger magnitude would become inf there
    non_finite = np.isinf(x) | (np.abs(x) > FLOAT32_MAX)
  if not non_finite.any() and np.count_nonzero(np.isnan(x)) == numbers.null_count:
    return numbers, invalid, non_finite  # no NaN or infinity to clear: skip building a copy
  x = np.where(non_finite, np.nan, x)
  return pa.array(x, pa.float64(), from_pandas=True), invalid, non_finite


def accepts(kind: pa.DataType, dtype: str) -> bool:
  """Whether `coerce_column` can turn values of arrow type `kind` into `dtype`
  (per value: a string column may still hold text that is not a number)."""
  if pa.types.is_dictionary(kind):
    kind = kind.value_type
  if dtype == 'image' and (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
    return True
  common = (pa.types.is_null(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind))
  return common or (dtype == 'float' and pa.types.is_decimal(kind))


@dataclasses.dataclass(frozen=True)
class SchemaCheck:
  """What an input's columns lack for a feature spec; the one check preflight runs on files and tables
  alike, each rendering it in its own terms."""
  missing: tuple[str, ...]  # required features with no column
  unreadable: tuple[str, ...]  # features whose column type they cannot take (`accepts`)
  absent: tuple[tuple[str, str], ...]  # (flag, column) for a key or passthrough column that is not there
  filled: tuple[str, ...]  # optional features with no column: every row gets the fill value

  @property
  def ok(self) -> bool:
    return not (self.missing or self.unreadable or self.absent)


def check_schema(schema: pa.Schema, spec: FeatureSpec, *, key_column: Optional[str] = None,
                 passthrough: Sequence[str] = ()) -> SchemaCheck:
  """Checks an input's Arrow schema against a feature spec, column by column."""
  names = set(schema.names)
  absent_features = [f for f in spec.features if f.name not in names]
  flags = [('--key_column', key_column)] + [('--passthrough_columns', c) for c in passthrough]
  return SchemaCheck(
      missing=tuple(f.name for f in absent_features if f.required),
      unreadable=tuple(f.name for f in spec.features
                       if f.name in names and not accepts(schema.field(f.name).type, f.dtype)),
      absent=tuple((flag, column) for flag, column in flags if column and column not in names),
      filled=tuple(f.name for f in absent_features if not f.required))


def _fits_int64(keys: pa.Array) -> np.ndarray:
  """Per key text, whether it is an integer that int64 holds (missing keys count as fitting)."""
  digits = pc.utf8_ltrim(keys, characters='-')
  negative = pc.starts_with(keys, '-')
  limit = pc.if_else(negative, _INT64_MAX_DIGITS[True], _INT64_MAX_DIGITS[False])
  in_range = pc.or_(pc.less(pc.utf8_length(digits), 19), pc.less_equal(digits, limit))
  fits = pc.and_(pc.match_substring_regex(keys, _INTEGER), in_range)
  return pc.fill_null(fits, True).to_numpy(zero_copy_only=False)


def _problem(feature: Feature, code: str, raw) -> str:
  if code == dl.MISSING_VALUE:
    return f'{feature.name}: missing required value (the model has no fill value for it)'
  if code == dl.NON_FINITE:
    return f'{feature.name}: {raw!r} is not a finite number' + (
        '' if raw is None or not np.isfinite(float(raw)) else ' in float32, the model\'s input type')
  return f'{feature.name}: {raw!r} is not a valid {feature.dtype}'


def validate(batch: pa.RecordBatch, spec: FeatureSpec, *, key_column: Optional[str] = None,
             integer_key: bool = False) -> tuple[pa.RecordBatch, Optional[pa.RecordBatch]]:
  """Splits a raw batch into typed valid rows and dead letters.

  The valid batch holds every input column, with feature columns replaced by
  their typed values, plus the row key in `KEY` (the key column as text, or
  `source:row` when there is none). With `integer_key`, a key that is not an
  integer is rejected, since the output keeps the key column's integer type.
  """
  n = batch.num_rows
  names = batch.schema.names
  rejected = np.zeros(n, dtype=bool)
  codes = np.full(n, '', dtype=object)
  reasons = np.full(n, '', dtype=object)

  def reject(mask: np.ndarray, code: str, describe) -> None:
    fresh = mask & ~rejected  # a bool mask: comparing the object array of codes costs per row
    for i in np.flatnonzero(fresh):
      codes[i], reasons[i] = code, describe(i)
    rejected[fresh] = True

  if key_column:
    keys = _as_array(batch.column(key_column)) if key_column in names else pa.nulls(n, pa.string())
    # Every value of a signed or narrower integer column fits int64: no need to check its text.
    fits = pa.types.is_integer(keys.type) and keys.type != pa.uint64()
    keys = keys.cast(pa.string())
    reject(keys.is_null().to_numpy(zero_copy_only=False), dl.MISSING_KEY,
           lambda i: f'{key_column}: missing key value')
    if integer_key and not fits:
      whole = _fits_int64(keys)
      reject(~whole, dl.INVALID_TYPE,
             lambda i: f'{key_column}: key {keys[i].as_py()!r} is not an integer, as the key column is elsewhere')
  else:
    keys = pc.binary_join_element_wise(batch.column(dl.SOURCE).cast(pa.string()),
                                       batch.column(dl.ROW).cast(pa.string()), ':')

  columns = {name: batch.column(name) for name in names}
  for feature in spec.features:
    raw = _as_array(columns[feature.name]) if feature.name in columns else pa.nulls(n)
    typed, invalid, non_finite = coerce_column(raw, feature.dtype)
    reject(invalid, dl.INVALID_TYPE, lambda i, f=feature, r=raw: _problem(f, dl.INVALID_TYPE, r[i].as_py()))
    reject(non_finite, dl.NON_FINITE, lambda i, f=feature, r=raw: _problem(f, dl.NON_FINITE, r[i].as_py()))
    if feature.required:
      reject(typed.is_null().to_numpy(zero_copy_only=False), dl.MISSING_VALUE,
             lambda i, f=feature: _problem(f, dl.MISSING_VALUE, None))
    columns[feature.name] = typed
  columns[dl.KEY] = keys

  typed_batch = pa.RecordBatch.from_pydict(columns)
  if not rejected.any():
    return typed_batch, None
  # Dead letters keep the record as it arrived, not the coerced values.
  original = pa.RecordBatch.from_pydict({**{name: batch.column(name) for name in names}, dl.KEY: keys})
  letters = dl.from_batch(original, rejected, stage='validate', codes=codes[rejected], reasons=reasons[rejected])
  return typed_batch.filter(pa.array(~rejected)), letters


@dataclasses.dataclass
class ValidateRows(beam.PTransform):
  """Validates raw RecordBatches against a feature spec.

  Returns a tuple-tagged result: the main output holds typed valid batches,
  `dead_letters` holds rejected rows. Counts rejections by reason code.
  """

  spec: FeatureSpec
  _: dataclasses.KW_ONLY
  key_column: Optional[str] = None
  integer_key: bool = False

  def __post_init__(self):
    super().__init__()

  def expand(self, batches):
    return batches | 'Validate' >> beam.ParDo(
        _ValidateFn(self.spec, self.key_column, self.integer_key)).with_output_types(
        pa.RecordBatch).with_outputs(
        dl.DEAD_LETTERS, main='valid')


class _ValidateFn(beam.DoFn):

  def __init__(self, spec: FeatureSpec, key_column: Optional[str], integer_key: bool = False):
    self._spec = spec
    self._key_column = key_column
    self._integer_key = integer_key

  def process(self, batch: pa.RecordBatch):
    valid, letters = validate(batch, self._spec, key_column=self._key_column, integer_key=self._integer_key)
    if valid.num_rows:
      yield valid
    if letters is not None:
      dl.count_rejections(letters)
      yield beam.pvalue.TaggedOutput(dl.DEAD_LETTERS, letters)

