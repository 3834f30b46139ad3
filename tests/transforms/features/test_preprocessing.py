"""Each preprocessing step fitted with its own combiner and applied to small real columns."""

import json
import math
from typing import Optional

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.features.preprocessing import (
  FillMissing,
  MinMax,
  MomentsFn,
  OneHot,
  Step,
  ValueCountsFn,
  Vocabulary,
  ZScore,
  _stable_hash,
)


def _combine(fn, *batches):
  """Runs a CombineFn the way a runner does: one accumulator per batch, then a merge."""
  accumulators = [fn.add_input(fn.create_accumulator(), batch) for batch in batches]
  return fn.extract_output(fn.merge_accumulators(accumulators))


def _fit(step: Step, *batches, previous: Optional[Step] = None) -> Step:
  analyzer = step.analyzer()
  statistics = _combine(analyzer, *batches) if analyzer is not None else None
  return step.fitted(statistics, previous)


EMPTY_FLOATS = pa.array([], pa.float64())
EMPTY_STRINGS = pa.array([], pa.string())


# MomentsFn

@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.lists(st.floats(-1e6, 1e6), max_size=20), min_size=1, max_size=6).filter(
    lambda parts: any(parts)))
def test_moments__merge_equals_numpy_over_the_concatenation(parts):
  stats = _combine(MomentsFn(), *[pa.array(p, pa.float64()) for p in parts])
  everything = np.concatenate([np.asarray(p, np.float64) for p in parts])
  assert stats['count'] == everything.size
  np.testing.assert_allclose(stats['mean'], everything.mean(), rtol=1e-9, atol=1e-6)
  np.testing.assert_allclose(stats['std'], everything.std(), rtol=1e-6, atol=1e-4)
  assert (stats['min'], stats['max']) == (everything.min(), everything.max())


def test_moments__merge_order_does_not_change_the_result():
  fn = MomentsFn()
  a, b, c = (fn.add_input(fn.create_accumulator(), pa.array(x)) for x in ([1.0, 2.0], [10.0], [-3.0, 4.0, 5.0]))
  left = fn.merge_accumulators([fn.merge_accumulators([a, b]), c])
  right = fn.merge_accumulators([a, fn.merge_accumulators([c, b])])
  for key in ('count', 'mean', 'std', 'min', 'max'):
    assert fn.extract_output(left)[key] == pytest.approx(fn.extract_output(right)[key])


def test_moments__skips_nulls_and_nan():
  stats = _combine(MomentsFn(), pa.array([1.0, None, 3.0]), np.array([np.nan, 5.0]))
  assert stats == pytest.approx({'count': 3, 'mean': 3.0, 'std': math.sqrt(8 / 3), 'min': 1.0, 'max': 5.0})


def test_moments__empty_batches_leave_the_statistics_unchanged():
  with_empty = _combine(MomentsFn(), EMPTY_FLOATS, pa.array([2.0, 4.0]), pa.array([None], pa.float64()))
  assert with_empty == _combine(MomentsFn(), pa.array([2.0, 4.0]))


def test_moments__reads_integer_and_chunked_columns():
  stats = _combine(MomentsFn(), pa.chunked_array([pa.array([1, 2]), pa.array([3])]))
  assert (stats['count'], stats['mean']) == (3, 2.0)


def test_moments__no_values_at_all_is_an_error():
  with pytest.raises(ValueError, match='no non-missing values'):
    _combine(MomentsFn(), EMPTY_FLOATS, pa.array([None, None], pa.float64()))


# ValueCountsFn

def test_value_counts__most_frequent_first_and_ties_broken_by_value():
  counts = _combine(ValueCountsFn(), pa.array(['b', 'c', 'a', 'c']), pa.array(['b', 'd', 'c', None]))
  assert counts == [('c', 3), ('b', 2), ('a', 1), ('d', 1)]


def test_value_counts__ignores_nulls_and_empty_batches():
  assert _combine(ValueCountsFn(), EMPTY_STRINGS, pa.array([None, 'x', None])) == [('x', 1)]
  assert _combine(ValueCountsFn(), EMPTY_STRINGS) == []


def test_value_counts__counts_numbers_from_numpy_arrays():
  assert _combine(ValueCountsFn(), np.array([2.0, 1.0, 2.0])) == [(2.0, 2), (1.0, 1)]


# FillMissing

def test_fill_missing__constant_fills_nulls_and_keeps_values():
  step = _fit(FillMissing('constant', -1.0), pa.array([5.0]))
  assert step.analyzer() is None
  assert step.apply(pa.array([1.5, None, 3.0])).to_pylist() == [1.5, -1.0, 3.0]
  assert FillMissing('constant', 'unknown').apply(pa.array(['a', None])).to_pylist() == ['a', 'unknown']


def test_fill_missing__mean_is_learned_from_non_missing_values():
  step = _fit(FillMissing('mean'), pa.array([1.0, None]), pa.array([5.0, 6.0]))
  assert step.is_fitted and step.value == pytest.approx(4.0)
  assert step.apply(pa.array([None, 2.0])).to_pylist() == [pytest.approx(4.0), 2.0]


def test_fill_missing__most_frequent_value_is_learned():
  step = _fit(FillMissing('most_frequent'), pa.array(['x', 'y', None]), pa.array(['y', None]))
  assert step.value == 'y'
  assert step.apply(pa.array([None, 'x', None])).to_pylist() == ['y', 'x', 'y']


def test_fill_missing__fills_nan_in_numpy_arrays():
  filled = FillMissing('constant', 0.0).apply(np.array([np.nan, 2.0]))
  np.testing.assert_array_equal(filled, [0.0, 2.0])


def test_fill_missing__empty_batch_stays_empty():
  assert len(FillMissing('constant', 1.0).apply(EMPTY_FLOATS)) == 0
  assert FillMissing('constant', 'u').apply(EMPTY_STRINGS).type == pa.string()


def test_fill_missing__an_all_missing_training_column_cannot_be_fitted():
  with pytest.raises(ValueError, match='no non-missing values'):
    _fit(FillMissing('most_frequent'), pa.array([None, None], pa.string()))
  with pytest.raises(ValueError, match='no non-missing values'):
    _fit(FillMissing('mean'), pa.array([None], pa.float64()))


def test_fill_missing__bad_settings_are_rejected():
  with pytest.raises(ValueError, match='strategy'):
    FillMissing('median')
  with pytest.raises(ValueError, match='needs a value'):
    FillMissing('constant')
  assert not FillMissing('mean').is_fitted


# ZScore

def test_z_score__centres_and_scales_by_training_statistics():
  step = _fit(ZScore(), pa.array([1.0, 2.0]), pa.array([3.0, None]))
  assert (step.mean, step.std) == pytest.approx((2.0, math.sqrt(2 / 3)))
  np.testing.assert_allclose(step.apply(pa.array([2.0, 4.0])), [0.0, 2.0 / math.sqrt(2 / 3)])


def test_z_score__constant_training_column_maps_to_zero():
  step = _fit(ZScore(), pa.array([7.0, 7.0, 7.0]))
  assert step.std == 0.0
  np.testing.assert_array_equal(step.apply(pa.array([7.0, 7.0])), [0.0, 0.0])


def test_z_score__nulls_become_nan_and_empty_batches_stay_empty():
  step = ZScore(mean=1.0, std=2.0)
  out = step.apply(pa.array([None, 3.0], pa.float64()))
  assert np.isnan(out[0]) and out[1] == 1.0
  assert step.apply(EMPTY_FLOATS).shape == (0,)
  assert not ZScore().is_fitted


# MinMax

def test_min_max__maps_the_training_range_to_unit_interval():
  step = _fit(MinMax(), pa.array([2.0, 6.0]), pa.array([4.0]))
  assert (step.min, step.max) == (2.0, 6.0)
  np.testing.assert_allclose(step.apply(pa.array([2.0, 4.0, 6.0, 10.0])), [0.0, 0.5, 1.0, 2.0])


def test_min_max__constant_training_column_maps_to_zero():
  step = _fit(MinMax(), pa.array([3.0, 3.0]))
  np.testing.assert_array_equal(step.apply(pa.array([3.0])), [0.0])
  assert step.apply(EMPTY_FLOATS).shape == (0,)


# Vocabulary

def test_vocabulary__learns_tokens_most_frequent_first():
  step = _fit(Vocabulary(), pa.array(['b', 'a', 'b']), pa.array(['c', 'a', 'b', None]))
  assert step.vocabulary == ('b', 'a', 'c')
  assert step.size == 4
  assert step.apply(pa.array(['a', 'b', 'c'])).tolist() == [1, 0, 2]


def test_vocabulary__unseen_values_go_to_the_oov_bucket():
  step = Vocabulary(vocabulary=('x', 'y'))
  assert step.apply(pa.array(['y', 'never-seen', 'x', None])).tolist() == [1, 2, 0, 2]


def test_vocabulary__several_oov_buckets_hash_unseen_values_stably():
  step = Vocabulary(vocabulary=('x', 'y'), num_oov_buckets=5)
  unseen = [f'token-{i}' for i in range(40)]
  ids = step.apply(pa.array(['x'] + unseen + ['y']))
  assert ids[0] == 0 and ids[-1] == 1
  oov = ids[1:-1]
  assert ((2 <= oov) & (oov < 7)).all()
  assert len(set(oov.tolist())) > 1  # unseen values spread over the buckets
  # The same value always lands in the same bucket (a process-independent hash).
  assert oov.tolist() == [2 + _stable_hash(t) % 5 for t in unseen]
  assert step.apply(pa.array(unseen)).tolist() == oov.tolist()


def test_vocabulary__max_tokens_and_min_frequency_limit_the_vocabulary():
  column = pa.array(['a'] * 5 + ['b'] * 4 + ['c'] * 3 + ['d'])
  assert _fit(Vocabulary(max_tokens=2), column).vocabulary == ('a', 'b')
  assert _fit(Vocabulary(min_frequency=3), column).vocabulary == ('a', 'b', 'c')
  assert _fit(Vocabulary(min_frequency=3, max_tokens=1), column).vocabulary == ('a',)
  # Dropped tokens are unseen values when serving.
  assert _fit(Vocabulary(min_frequency=3), column).apply(pa.array(['d'])).tolist() == [3]


def test_vocabulary__encodes_numpy_and_empty_batches():
  step = Vocabulary(vocabulary=('1', '2'))
  assert step.apply(np.array(['2', '3'], dtype=object)).tolist() == [1, 2]
  empty = step.apply(EMPTY_STRINGS)
  assert empty.shape == (0,) and empty.dtype == np.int64


def test_vocabulary__oov_buckets_are_a_whole_number_not_below_zero():
  for bad in (-1, True, 1.5):
    with pytest.raises(ValueError, match='num_oov_buckets'):
      Vocabulary(num_oov_buckets=bad)


def test_vocabulary__with_no_oov_bucket_an_unknown_value_gets_minus_one():
  step = Vocabulary(vocabulary=('x', 'y'), num_oov_buckets=0)
  assert step.size == 2
  assert step.apply(pa.array(['y', 'never-seen', 'x', None])).tolist() == [1, -1, 0, -1]
  assert 'any other value → -1 (no id)' in step.describe()


def test_vocabulary__looks_values_up_exactly_as_read_by_default():
  step = Vocabulary(vocabulary=('one_year', 'two_year'))
  assert step.apply(pa.array(['one_year', ' one_year ', 'One_Year'])).tolist() == [0, 2, 2]


def test_vocabulary__trim_and_case_normalise_when_looking_up_and_when_fitting():
  step = Vocabulary(vocabulary=('one_year', 'two_year'), trim=True, case='lower')
  assert step.apply(pa.array(['one_year', ' one_year ', 'One_Year\t', 'monthly'])).tolist() == [0, 0, 0, 2]
  fitted = _fit(Vocabulary(trim=True), pa.array([' a', 'a ', 'b', 'a']))
  assert fitted.vocabulary == ('a', 'b') and fitted.trim
  assert 'values trimmed, lower case' in step.describe()
  assert Step.from_dict(step.to_dict()) == step


def test_vocabulary__a_given_entry_that_normalising_would_never_match_is_refused():
  with pytest.raises(ValueError, match=r"' a' would never match \(write 'a'\)"):
    Vocabulary(vocabulary=(' a', 'b'), trim=True)
  with pytest.raises(ValueError, match="case must be 'lower' or 'upper'"):
    Vocabulary(vocabulary=('a',), case='title')


# OneHot

def test_one_hot__depth_comes_from_the_preceding_vocabulary():
  vocabulary = Vocabulary(vocabulary=('a', 'b'), num_oov_buckets=2)
  step = _fit(OneHot(), previous=vocabulary)
  assert step.depth == 4
  out = step.apply(vocabulary.apply(pa.array(['b', 'a'])))
  np.testing.assert_array_equal(out, [[0, 1, 0, 0], [1, 0, 0, 0]])
  assert out.dtype == np.float32


def test_one_hot__after_a_vocabulary_without_oov_bucket_an_unknown_value_is_all_zeros():
  vocabulary = Vocabulary(vocabulary=('a', 'b'), num_oov_buckets=0)
  step = _fit(OneHot(), previous=vocabulary)
  assert step.depth == 2
  np.testing.assert_array_equal(step.apply(vocabulary.apply(pa.array(['b', 'z', 'a', None]))),
                                [[0, 1], [0, 0], [1, 0], [0, 0]])


def test_one_hot__empty_batch_gives_zero_rows_of_full_depth():
  assert OneHot(depth=3).apply(np.array([], np.int64)).shape == (0, 3)


def test_one_hot__without_depth_must_follow_a_vocabulary():
  with pytest.raises(ValueError, match='must follow a vocabulary'):
    _fit(OneHot(), previous=ZScore(mean=0.0, std=1.0))


# Serialisation

@pytest.mark.parametrize('step', [
    FillMissing('constant', 'unknown'), FillMissing('mean', 3.5), ZScore(mean=1.0, std=2.0),
    MinMax(min=-1.0, max=1.0), Vocabulary(vocabulary=('a', 'b'), num_oov_buckets=3, max_tokens=10),
    OneHot(depth=5)])
def test_step__dict_round_trip_keeps_every_setting(step):
  data = step.to_dict()
  assert data['kind'] == step.kind
  assert Step.from_dict(data) == step


def test_step__unknown_kind_and_unknown_settings_are_named():
  with pytest.raises(ValueError, match="unknown step kind 'log'"):
    Step.from_dict({'kind': 'log'})
  with pytest.raises(ValueError, match="bad 'z_score' step"):
    Step.from_dict({'kind': 'z_score', 'centre': 1.0})


# Vocabulary order: documented, deterministic, and part of what the bundle states

MONTHS = pa.array(['1'] * 3 + ['10'] * 3 + ['2'] * 2 + ['9'] * 4)


@pytest.mark.parametrize('order, expected', [
    (None, ('9', '1', '10', '2')),  # frequency: most frequent first, ties by value as text
    ('frequency', ('9', '1', '10', '2')),
    ('lexical', ('1', '10', '2', '9')),
    ('numeric', ('1', '2', '9', '10'))])
def test_vocabulary__fits_in_the_order_asked_for_and_records_it(order, expected):
  step = _fit(Vocabulary(order=order), MONTHS[:5], MONTHS[5:])
  assert step.vocabulary == expected
  assert step.to_dict()['order'] == (order or 'frequency')
  assert Step.from_dict(step.to_dict()) == step


def test_vocabulary__order_applies_after_max_tokens_picks_the_most_frequent():
  assert _fit(Vocabulary(order='numeric', max_tokens=2), MONTHS).vocabulary == ('1', '9')


def test_vocabulary__numeric_order_of_text_is_refused_naming_the_value():
  with pytest.raises(ValueError, match="'numeric' needs every value to be a number; 'x' is not"):
    _fit(Vocabulary(order='numeric'), pa.array(['1', 'x']))


def test_vocabulary__a_given_list_must_match_a_stated_order_and_hold_each_value_once():
  assert Vocabulary(vocabulary=['1', '2', '10'], order='numeric').vocabulary == ('1', '2', '10')
  with pytest.raises(ValueError, match=r"not in 'lexical' order.*for example \{\"kind\": \"vocabulary\""):
    Vocabulary(vocabulary=['1', '2', '10'], order='lexical')
  with pytest.raises(ValueError, match=r"lists \['a'\] more than once"):
    Vocabulary(vocabulary=['a', 'b', 'a'])
  with pytest.raises(ValueError, match='order must be one of'):
    Vocabulary(order='alphabetical')
  with pytest.raises(ValueError, match='list of values as text'):
    Vocabulary(vocabulary='abc')
  # Integers from JSON are the values as text.
  assert Vocabulary(vocabulary=[3, 1]).apply(pa.array(['1', '3'])).tolist() == [1, 0]


def test_steps__errors_name_the_parameter_and_show_a_working_example():
  with pytest.raises(ValueError, match=r"no parameter 'avg' \(it takes mean, std\); for example (\{.*\})") as e:
    Step.from_dict({'kind': 'z_score', 'avg': 1.0})
  example = json.loads(str(e.value).split('for example ', 1)[1])
  assert Step.from_dict(example).is_fitted
  with pytest.raises(ValueError, match='mean must be a number'):
    Step.from_dict({'kind': 'z_score', 'mean': '12', 'std': 1})
  with pytest.raises(ValueError, match='depth must be an integer'):
    Step.from_dict({'kind': 'one_hot', 'depth': 0})


@pytest.mark.parametrize('kind', sorted(Step.types()))
def test_steps__every_example_loads_fitted(kind):
  step = Step.from_dict(json.loads(Step.types()[kind].example_json()))
  if kind == 'one_hot':  # its depth comes from the vocabulary before it
    step = step.resolved(Vocabulary(vocabulary=('a', 'b')))
  assert step.is_fitted and step.describe().startswith(kind)


def test_given_statistics_are_kept_when_others_are_fitted():
  assert ZScore(mean=1.0, std=2.0).analyzer() is None
  assert _fit(MinMax(min=0.0, max=10.0)) == MinMax(min=0.0, max=10.0)


def test_vocabulary__out_of_vocabulary_ids_can_come_first_as_keras_numbers_them():
  step = Vocabulary(vocabulary=('a', 'b'), num_oov_buckets=2, oov_position='first')
  ids = step.apply(pa.array(['b', 'a', 'zzz']))
  assert ids[:2].tolist() == [3, 2] and ids[2] in (0, 1) and step.size == 4
  assert step.describe().startswith('vocabulary (2 values, order as given): "a"→2, "b"→3; any other value → 0..1')
  with pytest.raises(ValueError, match="oov_position must be 'last' or 'first'"):
    Vocabulary(oov_position='start')
