"""Property-based tests of validation and the feature steps: for any batch, each
row is either valid (and becomes finite model input) or rejected with the
reason an independent oracle expects; none is lost or duplicated."""

import decimal
import math
import re

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.examples.penguins import train
from transforms.rows import dead_letters as dl
from transforms.features.spec import fit_in_memory
from transforms.rows.validation import FLOAT32_MAX, accepts, coerce_column, text_counts, validate

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NUMBER = re.compile(r'[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?|[+-]?(inf|infinity|nan)', re.IGNORECASE | re.ASCII)
# Plain text without the control characters that Python and pyarrow disagree are whitespace.
TEXT = st.text(alphabet=st.characters(whitelist_categories=('L', 'N', 'P', 'S', 'Zs'), max_codepoint=0x2FFF),
               max_size=12)
NUMERIC_TEXT = st.one_of(
    st.floats().map(repr), st.integers(-10**9, 10**9).map(str),
    st.sampled_from(['', '  ', ' 1.5 ', '+.5', '1e3', '1E400', '-1e-400', 'inf', '-Infinity', 'NaN', 'nan ',
                     '1,5', '1_000', '0x10', '١٢', 'e5', '.', '--1', 'Torgersen', 'Biscoe', 'ünseen']),
    TEXT)
KINDS = ('float', 'int', 'bool', 'string', 'numeric_text', 'null', 'list', 'dictionary', 'decimal', 'large_string')


@pytest.fixture(scope='module')
def spec():
  """The penguin feature spec, fitted on the example data (no model needed)."""
  from transforms.rows.dead_letters import Rejected
  from transforms.files.readers import read_file
  with open(train.EXAMPLE_DATA, 'rb') as f:
    batches = [b for b in read_file(f, 'penguins.csv', 'csv', batch_size=400) if not isinstance(b, Rejected)]
  valid = [validate(b, train.FEATURES)[0] for b in batches]
  return fit_in_memory(train.FEATURES, valid)


def _values(draw, kind: str, n: int) -> tuple[list, pa.Array]:
  def listed(strategy):
    return draw(st.lists(st.one_of(st.none(), strategy), min_size=n, max_size=n))
  if kind == 'float':
    v = listed(st.floats())
    return v, pa.array(v, pa.float64())
  if kind == 'int':
    v = listed(st.integers(-2**53, 2**53))
    return v, pa.array(v, pa.int64())
  if kind == 'bool':
    v = listed(st.booleans())
    return v, pa.array(v, pa.bool_())
  if kind in ('string', 'dictionary', 'large_string'):
    v = listed(st.one_of(TEXT, st.sampled_from(['Torgersen', 'Dream', 'male', 'FEMALE', 'x' * 10_000])))
    arr = pa.array(v, pa.string())
    return v, arr.dictionary_encode() if kind == 'dictionary' else arr.cast(pa.large_string()) \
        if kind == 'large_string' else arr
  if kind == 'numeric_text':
    v = listed(NUMERIC_TEXT)
    return v, pa.array(v, pa.string())
  if kind == 'decimal':
    v = listed(st.decimals(-10**6, 10**6, places=2, allow_nan=False, allow_infinity=False))
    return v, pa.array(v, pa.decimal128(12, 2))
  if kind == 'list':
    v = listed(st.lists(st.integers(-5, 5), max_size=2))
    return v, pa.array(v, pa.list_(pa.int64()))
  return [None] * n, pa.nulls(n)


def _expected(value, kind: str, dtype: str) -> str:
  """What validation should make of one value: '' (usable), or a reason code."""
  if value is None or kind == 'null':
    return dl.MISSING_VALUE
  if not accepts(pa.list_(pa.int64()) if kind == 'list' else pa.decimal128(12, 2) if kind == 'decimal'
                 else pa.string(), dtype):
    return dl.INVALID_TYPE
  if dtype == 'string':
    blank = isinstance(value, str) and not value.strip()
    return dl.MISSING_VALUE if blank or (isinstance(value, float) and math.isnan(value)) else ''
  if isinstance(value, str):
    text = value.strip()
    if not text:
      return dl.MISSING_VALUE
    if not NUMBER.fullmatch(text):
      return dl.INVALID_TYPE
    value = float(text)
  x = float(value)
  return dl.MISSING_VALUE if math.isnan(x) else dl.NON_FINITE if abs(x) > FLOAT32_MAX else ''


@st.composite
def raw_batches(draw, feature_spec):
  n = draw(st.integers(1, 30))
  columns, plan = {}, {}
  for feature in feature_spec.features:
    if draw(st.integers(0, 9)) == 0:
      continue  # the column is missing
    kind = draw(st.sampled_from(KINDS))
    values, array = _values(draw, kind, n)
    columns[feature.name], plan[feature.name] = array, (kind, values)
  for extra in draw(st.lists(st.sampled_from(['extra', 'ünïcode', 'species']), unique=True, max_size=2)):
    columns[extra] = pa.array(draw(st.lists(st.one_of(st.none(), TEXT), min_size=n, max_size=n)), pa.string())
  columns[dl.SOURCE] = pa.array(['f.parquet'] * n)
  columns[dl.ROW] = pa.array(np.arange(1, n + 1), pa.int64())
  return pa.RecordBatch.from_pydict(columns), plan


@SETTINGS
@given(st.data())
def test_validate__every_row_is_valid_or_rejected_with_the_first_problem(spec, data):
  batch, plan = data.draw(raw_batches(spec))
  valid, letters = validate(batch, spec)
  n = batch.num_rows
  rejected = letters.to_pylist() if letters is not None else []
  assert valid.num_rows + len(rejected) == n  # rows in = valid + rejected

  want = {}
  for i in range(n):
    codes = []
    for feature in spec.features:
      kind, values = plan.get(feature.name, ('null', [None] * n))
      code = _expected(values[i], kind, feature.dtype)
      if code and (code != dl.MISSING_VALUE or feature.required):
        codes.append((feature.name, code))
    want[f'f.parquet:{i + 1}'] = codes
  got = {r['key']: (r['reason_code'], r['reason']) for r in rejected}
  assert set(valid.column(dl.KEY).to_pylist()) == {k for k, codes in want.items() if not codes}
  assert set(got) == {k for k, codes in want.items() if codes}
  for key, (code, reason) in got.items():
    # The first feature with a problem is named; its code is one the oracle saw for it.
    name = reason.split(':', 1)[0]
    assert (name, code) in want[key] and name == want[key][0][0], (key, code, reason, want[key])
    assert code in dl.REASON_CODES

  if valid.num_rows:  # what validation lets through, the feature steps turn into finite numbers
    matrix = spec.transform(valid)
    assert matrix.shape == (valid.num_rows, len(spec.output_names))
    assert np.isfinite(matrix).all()


@SETTINGS
@given(st.sampled_from(KINDS), st.sampled_from(['float', 'string']), st.data())
def test_accepts__agrees_with_coerce_column(kind, dtype, data):
  values, array = _values(data.draw, kind, data.draw(st.integers(1, 10)))
  _, invalid, _ = coerce_column(array, dtype)
  if not accepts(array.type, dtype):
    assert invalid.tolist() == [v is not None for v in values]  # every value present is the wrong type
  elif dtype == 'string' or kind not in ('numeric_text', 'string', 'dictionary', 'large_string'):
    assert not invalid.any()


@SETTINGS
@given(st.sampled_from(KINDS), st.data())
def test_text_counts__count_what_coerce_column_types(kind, data):
  """The profile's one-pass count of a text column equals counting the values validation types."""
  _, array = _values(data.draw, kind, data.draw(st.integers(1, 30)))
  counts = text_counts(array)
  if kind not in ('string', 'dictionary', 'large_string', 'numeric_text'):
    assert counts is None
    return
  typed = coerce_column(array, 'string')[0].to_pylist()
  assert counts == {v: typed.count(v) for v in set(typed) if v is not None}


@SETTINGS
@given(st.lists(st.one_of(st.none(), TEXT, st.just('x' * 50_000)), min_size=1, max_size=30))
def test_unseen_categories__map_to_the_out_of_vocabulary_column(spec, islands):
  island = spec.features[spec.columns.index('island')]
  vocab = island.steps[0].vocabulary
  matrix = np.asarray(island.apply(pa.array(islands, pa.string())))
  assert matrix.shape == (len(islands), len(island.output_names))
  assert (matrix.sum(axis=1) == 1).all()  # exactly one indicator per row
  oov = matrix[:, len(vocab):].sum(axis=1) == 1
  assert oov.tolist() == [v not in vocab for v in islands]


def test_decimal_column__is_read_as_float(spec):
  batch = pa.RecordBatch.from_pydict({
      'island': ['Dream'], 'bill_length_mm': pa.array([decimal.Decimal('39.10')], pa.decimal128(5, 2)),
      'bill_depth_mm': [18.7], 'flipper_length_mm': [181], dl.SOURCE: ['f'], dl.ROW: [1]})
  valid, letters = validate(batch, spec)
  assert letters is None and valid.column('bill_length_mm').to_pylist() == [39.1]
