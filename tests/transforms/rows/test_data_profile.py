"""Run profiles: columnar statistics of the input and the predictions."""

import datetime

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.rows.data_profile import InputProfileFn, PredictionProfileFn, ProfileRun, profile_in_memory
from transforms.features.spec import Feature, FeatureSpec
from transforms.features.preprocessing import FillMissing, OneHot, Vocabulary, ZScore

SPEC = FeatureSpec((
    Feature('colour', 'string', (FillMissing('constant', 'none'), Vocabulary(('red', 'blue')), OneHot(3))),
    Feature('size', 'float', (ZScore(2.0, 1.0),)),
))


def _raw(colours, sizes) -> pa.RecordBatch:
  return pa.RecordBatch.from_pydict({'colour': pa.array(colours, pa.string()), 'size': pa.array(sizes, pa.string())})


def test_input_profile__missing_oov_frequencies_and_moments_over_batches():
  profile = profile_in_memory(SPEC, [
      _raw(['red', 'red', ' ', 'green'], ['1', '3', None, 'abc']),  # blank is missing; 'abc' is invalid
      _raw(['blue', None, 'red', 'red'], ['2', '2', '', '2']),
  ])
  assert profile['rows'] == 8
  colour, size = profile['features']['colour'], profile['features']['size']
  assert colour['missing_rate'] == pytest.approx(2 / 8)
  assert colour['oov_rate'] == pytest.approx(1 / 6)  # 'green' among six present values
  assert colour['frequencies'] == pytest.approx({'red': 4 / 6, 'blue': 1 / 6})
  assert size['missing_rate'] == pytest.approx(2 / 8)  # None and '': 'abc' is a type error, not missing
  assert size['mean'] == pytest.approx(2.0) and size['std'] == pytest.approx((2 / 5) ** 0.5)


def test_input_profile__a_column_absent_from_the_file_is_all_missing():
  batch = pa.RecordBatch.from_pydict({'size': pa.array([1.0, 2.0])})
  assert profile_in_memory(SPEC, [batch])['features']['colour']['missing_rate'] == 1.0


def test_input_profile__merging_partial_accumulators_equals_one_pass():
  fn = InputProfileFn(SPEC)
  a = fn.add_input(fn.create_accumulator(), _raw(['red', 'x'], ['1', '2']))
  b = fn.add_input(fn.create_accumulator(), _raw([None, 'blue'], ['5', None]))
  merged = fn.extract_output(fn.merge_accumulators([a, b]))
  assert merged == profile_in_memory(SPEC, [_raw(['red', 'x'], ['1', '2']), _raw([None, 'blue'], ['5', None])])


def _predictions(classes, probabilities, second: int) -> pa.RecordBatch:
  at = datetime.datetime(2026, 1, 1, 0, 0, second, tzinfo=datetime.timezone.utc)
  return pa.RecordBatch.from_pydict({
      'predicted_class': pa.array(classes, pa.string()),
      'predicted_probability': pa.array(probabilities, pa.float32()),
      'predicted_at': pa.array([at] * len(classes), pa.timestamp('us', tz='UTC'))})


def test_profile_run__through_a_pipeline():
  epoch = int(datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
  with test_pipeline.TestPipeline() as p:
    raw = p | 'Raw' >> beam.Create([_raw(['red', 'blue'], ['1', '3']), _raw(['red'], [None])])
    predictions = p | 'Predictions' >> beam.Create([_predictions(['a', 'b'], [0.9, 0.61], 0),
                                                    _predictions(['a'], [0.904], 2)])
    profile = (raw, predictions) | ProfileRun(SPEC)
    summary = profile | beam.Map(lambda d: (d['input']['rows'], d['input']['features']['size']['missing_rate'],
                                            d['predictions']['classes'], d['predictions']['confidence'],
                                            d['predictions']['per_second']))
    assert_that(summary, equal_to([(3, 1 / 3, [['a', 2], ['b', 1]], [[0.61, 1], [0.9, 2]],
                                    [[epoch, 2], [epoch + 2, 1]])]))


def test_profile_run__with_no_predictions_has_an_empty_prediction_profile():
  with test_pipeline.TestPipeline() as p:
    raw = p | 'Raw' >> beam.Create([_raw(['red'], [None])])
    predictions = p | 'Predictions' >> beam.Create([]).with_output_types(pa.RecordBatch)
    profile = (raw, predictions) | ProfileRun(SPEC)
    summary = profile | beam.Map(lambda d: (d['input']['rows'], d['predictions']))
    assert_that(summary, equal_to([(1, {'classes': [], 'scores': [], 'confidence': [], 'per_second': []})]))


def test_prediction_profile__scores_kept_at_three_significant_digits():
  fn = PredictionProfileFn()
  batch = pa.RecordBatch.from_pydict({
      'score': pa.array([12345.0, 12349.0, 0.0012344, -3.0], pa.float32()),
      'predicted_at': pa.array([datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)] * 4,
                               pa.timestamp('us', tz='UTC'))})
  out = fn.extract_output(fn.add_input(fn.create_accumulator(), batch))
  assert [v for v, _ in out['scores']] == pytest.approx([-3.0, 0.00123, 12300.0])
  assert [n for _, n in out['scores']] == [1, 1, 2]


def test_profile_run__of_no_rows_is_nothing_and_its_empty_profile_stands_in():
  """No default-injecting steps: a run that read nothing reads `empty()` as the side input's default."""
  step = ProfileRun(SPEC)
  with test_pipeline.TestPipeline() as p:
    raw = p | 'Raw' >> beam.Create([]).with_output_types(pa.RecordBatch)
    predictions = p | 'Predictions' >> beam.Create([]).with_output_types(pa.RecordBatch)
    profile = (raw, predictions) | step
    assert_that(profile, equal_to([]), label='NoProfile')
    seen = p | 'One' >> beam.Create([0]) | beam.Map(
        lambda _, d: (d['input']['rows'], d['input']['features']['size']['missing_rate'], d['predictions']['classes']),
        d=beam.pvalue.AsSingleton(profile, default_value=step.empty()))
    assert_that(seen, equal_to([(0, None, [])]), label='Default')
