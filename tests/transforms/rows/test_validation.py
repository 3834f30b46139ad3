"""Row validation: typing each feature column and rejecting rows with a reason."""

import decimal
import json

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.rows import dead_letters as dl
from transforms.rows.dead_letters import DEAD_LETTERS
from transforms.features.spec import Feature, FeatureSpec
from transforms.features.preprocessing import FillMissing, Vocabulary, ZScore
from transforms.rows.validation import ValidateRows, coerce_column, validate

SPEC = FeatureSpec((
    Feature('length', 'float', (ZScore(mean=0.0, std=1.0),)),
    Feature('colour', 'string', (FillMissing('constant', 'none'), Vocabulary(vocabulary=('red',)))),
))


def _coerce(values, dtype):
  typed, invalid, non_finite = coerce_column(values, dtype)
  return typed.to_pylist(), invalid.tolist(), non_finite.tolist()


def _raw(**columns) -> pa.RecordBatch:
  """A batch as a source yields it: the columns plus its file and row positions."""
  n = len(next(iter(columns.values())))
  return pa.RecordBatch.from_pydict({**columns, dl.SOURCE: ['in.csv'] * n, dl.ROW: list(range(2, n + 2))})


# coerce_column to float

def test_coerce_float__numbers_written_as_text_are_parsed():
  values = pa.array(['1', ' 2.5 ', '-1e3', '+.5', '3.', '1E-2'])
  assert _coerce(values, 'float') == ([1.0, 2.5, -1000.0, 0.5, 3.0, 0.01], [False] * 6, [False] * 6)


def test_coerce_float__text_that_is_not_a_number_is_invalid():
  typed, invalid, _ = _coerce(pa.array(['forty', '1,000', '0x10', '12kg', '7']), 'float')
  assert typed == [None, None, None, None, 7.0]
  assert invalid == [True, True, True, True, False]


def test_coerce_float__blanks_and_nan_are_missing_not_invalid():
  typed, invalid, non_finite = _coerce(pa.array(['', '   ', None, 'nan', 'NaN']), 'float')
  assert typed == [None] * 5 and not any(invalid) and not any(non_finite)
  typed, invalid, non_finite = _coerce(pa.array([float('nan'), 1.0]), 'float')
  assert typed == [None, 1.0] and not any(invalid) and not any(non_finite)


def test_coerce_float__infinities_are_flagged_non_finite():
  typed, invalid, non_finite = _coerce(pa.array(['inf', '-Infinity', '1']), 'float')
  assert typed == [None, None, 1.0] and non_finite == [True, True, False] and not any(invalid)
  typed, _, non_finite = _coerce(pa.array([float('-inf'), 2.0]), 'float')
  assert typed == [None, 2.0] and non_finite == [True, False]


@pytest.mark.parametrize('values, expected', [
    (pa.array([True, False, None]), [1.0, 0.0, None]),
    (pa.array([3, None, -4], pa.int32()), [3.0, None, -4.0]),
    (pa.array([1.5, None], pa.float32()), [1.5, None]),
    (pa.array([decimal.Decimal('2.25')]), [2.25]),
    (pa.array(['4', '5', '4']).dictionary_encode(), [4.0, 5.0, 4.0]),
    (pa.array(['6.5', None], pa.large_string()), [6.5, None]),
    (pa.chunked_array([pa.array(['1']), pa.array(['2'])]), [1.0, 2.0]),
    (pa.nulls(2), [None, None]),
])
def test_coerce_float__every_numeric_like_input_type(values, expected):
  typed, invalid, non_finite = _coerce(values, 'float')
  assert typed == expected and not any(invalid) and not any(non_finite)


@pytest.mark.parametrize('values', [
    pa.array([[1.0], None, [2.0, 3.0]]),
    pa.array([{'a': 1}, None, {'a': 2}]),
    pa.array([b'1', None, b'2']),
])
def test_coerce_float__nested_and_binary_values_are_invalid_but_nulls_are_missing(values):
  typed, invalid, _ = _coerce(values, 'float')
  assert typed == [None, None, None] and invalid == [True, False, True]


# coerce_column to string

def test_coerce_string__text_is_kept_as_read_and_blanks_are_missing():
  assert _coerce(pa.array([' red ', '', '  ', None, 'blue']), 'string') == (
      [' red ', None, None, None, 'blue'], [False] * 5, [False] * 5)


@pytest.mark.parametrize('values, expected', [
    (pa.array([1, None, 20]), ['1', None, '20']),
    (pa.array([True, False]), ['true', 'false']),
    (pa.array([2.5, 1.0]), ['2.5', '1']),
    (pa.array(['a', 'b', 'a']).dictionary_encode(), ['a', 'b', 'a']),
    (pa.array(['a', None], pa.large_string()), ['a', None]),
    (pa.nulls(1), [None]),
])
def test_coerce_string__every_scalar_input_type_becomes_text(values, expected):
  typed, invalid, _ = _coerce(values, 'string')
  assert typed == expected and not any(invalid)


def test_coerce_string__nan_is_missing_not_the_text_nan():
  typed, invalid, _ = _coerce(pa.array([float('nan'), 3.0]), 'string')
  assert typed == [None, '3'] and not any(invalid)


def test_coerce_string__nested_values_are_invalid():
  typed, invalid, _ = _coerce(pa.array([['a'], None]), 'string')
  assert typed == [None, None] and invalid == [True, False]


# validate()

def test_validate__all_good_rows_give_typed_columns_and_no_dead_letters():
  batch = _raw(length=['1.5', '2'], colour=['red', None], note=['x', 'y'])
  valid, letters = validate(batch, SPEC)
  assert letters is None
  assert valid.column('length').to_pylist() == [1.5, 2.0]
  assert valid.column('colour').to_pylist() == ['red', None]  # optional: filled later, by the features
  assert valid.column('note').to_pylist() == ['x', 'y']  # non-feature columns pass through untouched
  assert valid.column(dl.KEY).to_pylist() == ['in.csv:2', 'in.csv:3']


def test_validate__each_rejected_row_gets_its_first_problem_and_keeps_its_record():
  batch = _raw(length=['1', 'forty', None, 'inf', '  ', 'x'], colour=['red', 'red', 'blue', None, 'red', None])
  valid, letters = validate(batch, SPEC)
  assert valid.column(dl.KEY).to_pylist() == ['in.csv:2']
  rows = letters.to_pylist()
  assert [(r['row'], r['reason_code']) for r in rows] == [
      (3, 'invalid_type'), (4, 'missing_value'), (5, 'non_finite'), (6, 'missing_value'), (7, 'invalid_type')]
  assert rows[0]['reason'] == "length: 'forty' is not a valid float"
  assert rows[1]['reason'] == 'length: missing required value (the model has no fill value for it)'
  assert rows[2]['reason'] == "length: 'inf' is not a finite number"
  assert json.loads(rows[3]['record']) == {'length': '  ', 'colour': 'red'}  # as it arrived, not trimmed
  assert all(r['stage'] == 'validate' and r['source'] == 'in.csv' for r in rows)
  assert letters.schema == dl.SCHEMA


def test_validate__a_missing_feature_column_rejects_every_row():
  valid, letters = validate(_raw(colour=['red', 'red']), SPEC)
  assert valid.num_rows == 0
  assert letters.column('reason_code').to_pylist() == ['missing_value', 'missing_value']


def test_validate__key_column_is_the_key_and_a_missing_key_is_rejected():
  batch = _raw(id=pa.array([7, None, 9]), length=['1', '2', 'oops'], colour=['red'] * 3)
  valid, letters = validate(batch, SPEC, key_column='id')
  assert valid.column(dl.KEY).to_pylist() == ['7']
  assert letters.column('reason_code').to_pylist() == ['missing_key', 'invalid_type']
  assert letters.column('key').to_pylist() == [None, '9']
  assert letters.column('reason').to_pylist()[0] == 'id: missing key value'


def test_validate__integer_key_takes_every_int64_and_rejects_what_int64_cannot_hold():
  keys = ['9223372036854775807', '-9223372036854775808', '1465432123456789012', '007',  # 19 digits: snowflake ids
          '9223372036854775808', '-9223372036854775809', '12345678901234567890', '+5', ' 5', '5.0', 'x']
  batch = _raw(id=keys, length=['1'] * len(keys), colour=['red'] * len(keys))
  valid, letters = validate(batch, SPEC, key_column='id', integer_key=True)
  assert valid.column(dl.KEY).cast(pa.int64()).to_pylist() == [2**63 - 1, -2**63, 1465432123456789012, 7]
  assert letters.column('key').to_pylist() == keys[4:]
  assert set(letters.column('reason_code').to_pylist()) == {'invalid_type'}


def test_validate__integer_key_column_of_integers_passes_whole_and_uint64_is_still_checked():
  signed = pa.array([2**63 - 1, -2**63, 0], pa.int64())
  valid, letters = validate(_raw(id=signed, length=['1'] * 3, colour=['red'] * 3), SPEC, key_column='id',
                            integer_key=True)
  assert valid.column(dl.KEY).to_pylist() == ['9223372036854775807', '-9223372036854775808', '0'] and letters is None
  unsigned = pa.array([2**63 - 1, 2**63, 2**64 - 1], pa.uint64())  # the last two are beyond int64
  valid, letters = validate(_raw(id=unsigned, length=['1'] * 3, colour=['red'] * 3), SPEC, key_column='id',
                            integer_key=True)
  assert valid.column(dl.KEY).to_pylist() == ['9223372036854775807']
  assert letters.column('key').to_pylist() == ['9223372036854775808', '18446744073709551615']
  assert set(letters.column('reason_code').to_pylist()) == {'invalid_type'}


def test_validate__key_column_absent_from_the_input_rejects_every_row():
  _, letters = validate(_raw(length=['1'], colour=['red']), SPEC, key_column='id')
  assert letters.column('reason_code').to_pylist() == ['missing_key']


# ValidateRows

def test_validate_rows__splits_a_pipeline_into_valid_batches_and_dead_letters():
  batches = [
      _raw(length=['1', 'x', '3'], colour=['red', 'red', None]),
      _raw(length=['4'], colour=['blue']),
      _raw(length=['', 'inf'], colour=['red', 'red']),  # all rejected: no valid batch comes out
  ]
  with test_pipeline.TestPipeline() as p:
    result = p | beam.Create(batches, reshuffle=False) | ValidateRows(SPEC)
    valid = result.valid | 'ValidRows' >> beam.FlatMap(
        lambda b: zip(b.column(dl.KEY).to_pylist(), b.column('length').to_pylist()))
    letters = result[DEAD_LETTERS] | 'LetterRows' >> beam.FlatMap(
        lambda b: zip(b.column('key').to_pylist(), b.column('reason_code').to_pylist()))
    assert_that(valid, equal_to([('in.csv:2', 1.0), ('in.csv:4', 3.0), ('in.csv:2', 4.0)]), label='Valid')
    assert_that(letters, equal_to([('in.csv:3', 'invalid_type'), ('in.csv:2', 'missing_value'),
                                   ('in.csv:3', 'non_finite')]), label='DeadLetters')


def test_validate_rows__no_empty_valid_batches_are_emitted():
  with test_pipeline.TestPipeline() as p:
    result = p | beam.Create([_raw(length=['bad'], colour=['red'])]) | ValidateRows(SPEC)
    assert_that(result.valid | beam.Map(lambda b: b.num_rows), equal_to([]), label='Valid')
    assert_that(result[DEAD_LETTERS] | beam.Map(lambda b: b.num_rows), equal_to([1]), label='DeadLetters')
