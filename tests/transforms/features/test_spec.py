"""The feature spec: its JSON form, fitting in memory and in Beam, and applying it to batches."""

import json
import math

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.features.spec import ApplyFeatures, Feature, FeatureSpec, FitFeatures, fit_in_memory
from transforms.features.preprocessing import FillMissing, MinMax, OneHot, Vocabulary, ZScore

SPEC = FeatureSpec((
    Feature('size', 'float', (FillMissing('mean'), ZScore())),
    Feature('weight', 'float', (MinMax(),)),
    Feature('colour', 'string', (FillMissing('constant', 'none'), Vocabulary(num_oov_buckets=2), OneHot())),
    Feature('shape', 'string', (Vocabulary(),)),
))

BATCHES = [
    pa.RecordBatch.from_pydict({
        'size': pa.array([1.0, None, 3.0], pa.float64()), 'weight': [10.0, 20.0, 30.0],
        'colour': ['red', 'red', None], 'shape': ['square', 'round', 'square']}),
    pa.RecordBatch.from_pydict({
        'size': pa.array([5.0], pa.float64()), 'weight': [50.0], 'colour': ['blue'], 'shape': ['round']}),
    pa.RecordBatch.from_pydict({
        'size': pa.array([], pa.float64()), 'weight': pa.array([], pa.float64()),
        'colour': pa.array([], pa.string()), 'shape': pa.array([], pa.string())}),
]


def _same_spec(a: FeatureSpec, b: FeatureSpec) -> bool:
  """Equal up to float rounding: combiners may merge batches in any order."""

  def close(x, y) -> bool:
    if isinstance(x, dict):
      return isinstance(y, dict) and x.keys() == y.keys() and all(close(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
      return isinstance(y, (list, tuple)) and len(x) == len(y) and all(map(close, x, y))
    if isinstance(x, float):
      return isinstance(y, (int, float)) and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
    return x == y

  return close(a.to_dict(), b.to_dict())


# The spec file

def test_spec__json_round_trip_gives_the_same_spec_and_features():
  fitted = fit_in_memory(SPEC, BATCHES)
  loaded = FeatureSpec.from_dict(json.loads(fitted.to_json()))
  assert loaded == fitted
  np.testing.assert_array_equal(loaded.transform(BATCHES[0]), fitted.transform(BATCHES[0]))


def test_spec__json_records_required_from_the_steps():
  data = json.loads(SPEC.to_json())
  assert {f['name']: f['required'] for f in data['features']} == {
      'size': False, 'weight': True, 'colour': False, 'shape': True}


def test_spec__unknown_step_kind_is_an_error():
  data = SPEC.to_dict()
  data['features'][1]['steps'] = [{'kind': 'log_scale'}]
  with pytest.raises(ValueError, match="unknown step kind 'log_scale'"):
    FeatureSpec.from_dict(data)


def test_spec__duplicate_feature_names_are_an_error():
  with pytest.raises(ValueError, match='unique'):
    FeatureSpec((Feature('a', 'float'), Feature('a', 'float', (ZScore(),))))


def test_spec__string_feature_without_a_vocabulary_is_an_error():
  with pytest.raises(ValueError, match="'colour': a string feature needs a vocabulary"):
    FeatureSpec.from_dict({'features': [{'name': 'colour', 'dtype': 'string', 'steps': []}]})


def test_spec__required_flag_that_contradicts_the_steps_is_an_error():
  data = SPEC.to_dict()
  data['features'][0]['required'] = True  # but 'size' starts with fill_missing
  with pytest.raises(ValueError, match="'size': 'required' is True but its steps make it False"):
    FeatureSpec.from_dict(data)


def test_spec__bad_shapes_are_named():
  with pytest.raises(ValueError, match="'features' list"):
    FeatureSpec.from_dict([{'name': 'a'}])
  with pytest.raises(ValueError, match='at least one feature'):
    FeatureSpec.from_dict({'features': []})
  with pytest.raises(ValueError, match="dtype must be one of"):
    Feature('a', 'int')


def test_spec__output_names_follow_feature_order_and_one_hot_columns():
  fitted = fit_in_memory(SPEC, BATCHES)
  assert fitted.output_names == [
      'size', 'weight', 'colour=red', 'colour=blue', 'colour=none', 'colour=<oov0>', 'colour=<oov1>', 'shape']


@pytest.mark.parametrize('one_hot', [OneHot(), OneHot(depth=2), OneHot(depth=6)])
def test_spec__output_names_name_every_column_of_the_matrix(one_hot):
  spec = FeatureSpec((Feature('colour', 'string', (Vocabulary(vocabulary=('red', 'blue')), one_hot)),
                      Feature('size', 'float', (ZScore(mean=0.0, std=1.0),))))
  fitted = fit_in_memory(spec, BATCHES)
  assert fitted.transform(BATCHES[0]).shape == (3, len(fitted.output_names))
  assert fitted.output_names[-1] == 'size'


def test_spec__one_hot_of_integer_codes_names_a_column_per_code():
  spec = FeatureSpec((Feature('code', 'float', (OneHot(depth=3),)),))
  batch = pa.RecordBatch.from_pydict({'code': [2.0, 0.0]})
  assert spec.output_names == ['code=0', 'code=1', 'code=2']
  np.testing.assert_array_equal(spec.transform(batch), [[0, 0, 1], [1, 0, 0]])


# Fitting

def test_fit_in_memory__later_steps_see_the_column_after_earlier_steps():
  fitted = fit_in_memory(SPEC, BATCHES)
  size, weight, colour, shape = fitted.features
  assert size.steps[0].value == pytest.approx(3.0)
  # ZScore is fitted on the filled column: 1, 3, 3, 5.
  assert (size.steps[1].mean, size.steps[1].std) == pytest.approx((3.0, math.sqrt(2.0)))
  assert (weight.steps[0].min, weight.steps[0].max) == (10.0, 50.0)
  # The filled 'none' is part of the vocabulary, ordered by frequency then value.
  assert colour.steps[1].vocabulary == ('red', 'blue', 'none')
  assert colour.steps[2].depth == 5
  assert shape.steps[0].vocabulary == ('round', 'square')


def test_fit_in_memory__a_column_with_no_values_names_the_feature():
  empty = pa.RecordBatch.from_pydict({'size': pa.array([None], pa.float64()), 'weight': [1.0],
                                      'colour': ['red'], 'shape': ['round']})
  with pytest.raises(ValueError, match="feature 'size'"):
    fit_in_memory(SPEC, [empty])


def test_fit_features__in_a_pipeline_equals_fit_in_memory():
  expected = fit_in_memory(SPEC, BATCHES)
  with test_pipeline.TestPipeline() as p:
    fitted = p | beam.Create(BATCHES, reshuffle=False) | FitFeatures(SPEC)
    assert_that(fitted, equal_to([expected], equals_fn=_same_spec))


def test_fit_features__no_rows_at_all_fails_naming_the_feature():
  with pytest.raises(Exception, match="fitting feature 'size': no non-missing values"):
    with test_pipeline.TestPipeline() as p:
      _ = p | beam.Create(BATCHES[2:]) | FitFeatures(SPEC)


# Applying

def test_transform__gives_one_float32_row_per_input_row():
  fitted = fit_in_memory(SPEC, BATCHES)
  batch = pa.RecordBatch.from_pydict({
      'size': pa.array([None, 5.0], pa.float64()), 'weight': [30.0, 90.0], 'colour': ['purple', 'red'],
      'shape': ['round', 'triangle']})
  matrix = fitted.transform(batch)
  assert matrix.dtype == np.float32
  purple = fitted.features[2].steps[1].apply(pa.array(['purple']))[0]
  assert purple in (3, 4)  # unseen: one of the two OOV ids, after red, blue, none
  expected = np.zeros((2, 8), np.float32)
  expected[0, :2] = [0.0, 0.5]
  expected[1, :2] = [2.0 / math.sqrt(2.0), 2.0]
  expected[0, 2 + purple] = 1.0
  expected[1, 2] = 1.0
  expected[:, 7] = [0.0, 2.0]  # 'triangle' is unseen: the OOV id
  np.testing.assert_allclose(matrix, expected, rtol=1e-6)


def test_transform__zero_row_batch_gives_a_zero_by_width_matrix():
  fitted = fit_in_memory(SPEC, BATCHES)
  matrix = fitted.transform(BATCHES[2])
  assert matrix.shape == (0, len(fitted.output_names)) and matrix.dtype == np.float32


def test_transform__unfitted_spec_is_an_error():
  with pytest.raises(ValueError, match='not fitted'):
    SPEC.transform(BATCHES[0])
  with pytest.raises(ValueError, match='fitted feature spec'):
    ApplyFeatures(SPEC)


def test_apply_features__pairs_each_batch_with_its_matrix():
  fitted = fit_in_memory(SPEC, BATCHES)
  expected = [(b.column('shape').to_pylist(), fitted.transform(b).tolist()) for b in BATCHES]
  with test_pipeline.TestPipeline() as p:
    pairs = p | beam.Create(BATCHES, reshuffle=False) | ApplyFeatures(fitted)
    summary = pairs | beam.Map(lambda pair: (pair[0].column('shape').to_pylist(), pair[1].tolist()))
    assert_that(summary, equal_to(expected))


def test_feature__one_hot_after_a_given_vocabulary_needs_no_depth():
  # The report: {"kind": "one_hot"} after an explicit vocabulary failed with "no statistics".
  spec = FeatureSpec.from_dict({'features': [{'name': 'month', 'dtype': 'string', 'steps': [
      {'kind': 'vocabulary', 'vocabulary': ['1', '2', '3'], 'num_oov_buckets': 2}, {'kind': 'one_hot'}]}]})
  assert spec.is_fitted and spec.features[0].steps[1].depth == 5
  assert spec.output_names == ['month=1', 'month=2', 'month=3', 'month=<oov0>', 'month=<oov1>']
  np.testing.assert_array_equal(spec.transform(pa.RecordBatch.from_pydict({'month': ['2']})), [[0, 1, 0, 0, 0]])


def test_feature__one_hot_without_depth_or_vocabulary_is_refused_when_loaded():
  with pytest.raises(ValueError, match="feature 'code': one_hot needs 'depth'"):
    FeatureSpec.from_dict({'features': [{'name': 'code', 'dtype': 'float', 'steps': [{'kind': 'one_hot'}]}]})


def test_spec__missing_names_each_step_parameter_with_an_example():
  spec = FeatureSpec((Feature('t', 'float', (ZScore(mean=1.0),)),
                      Feature('month', 'string', (Vocabulary(), OneHot()))))
  assert spec.missing() == [
      'feature \'t\', step z_score: no \'std\'; give it, for example {"kind": "z_score", "mean": 16.4, "std": 7.2}',
      'feature \'month\', step vocabulary: no \'vocabulary\'; give it, for example '
      '{"kind": "vocabulary", "vocabulary": ["Europe", "Japan", "USA"]}']


def test_spec__describe_prints_every_learned_value_and_the_one_hot_columns():
  fitted = fit_in_memory(SPEC, BATCHES)
  text = '\n'.join(fitted.describe())
  colour = fitted.features[2]
  assert 'colour (string) -> columns 2-6:' in text
  assert ('vocabulary (3 values, frequency order): "red"→0, "blue"→1, "none"→2; any other value → 3..4 by hash'
          in text)
  assert ('one_hot: 5 columns, in this order: colour=red, colour=blue, colour=none, colour=<oov0>, colour=<oov1> '
          '(colour=<oov0>, colour=<oov1> are the out-of-vocabulary buckets)') in text
  assert f'z_score: (x - {fitted.features[0].steps[1].mean!r}) / {fitted.features[0].steps[1].std!r}' in text
  assert colour.steps[0].describe() in text


@pytest.mark.parametrize('feature, message', [
    ({'name': 'temp', 'dtype': 'float', 'step': [{'kind': 'z_score'}]}, r"feature 'temp': no key 'step'"),
    ({'name': 'temp', 'type': 'float'}, r"feature 'temp': no 'dtype'"),
    ({'name': 'temp', 'dtype': 'float', 'steps': {'kind': 'z_score'}}, 'steps must be a list'),
    ({'name': 'temp', 'dtype': 'float', 'steps': [{'kind': 'z_score', 'avg': 1}]},
     r"feature 'temp': bad 'z_score' step .*no parameter 'avg'")])
def test_feature__a_misspelt_key_is_an_error_with_an_example_not_a_feature_without_steps(feature, message):
  with pytest.raises(ValueError, match=message) as e:
    FeatureSpec.from_dict({'features': [feature]})
  example = str(e.value).rsplit('for example ', 1)[-1] if 'for example' in str(e.value) else None
  if example and example.startswith('{"name"'):
    assert FeatureSpec.from_dict({'features': [json.loads(example)]}).is_fitted
