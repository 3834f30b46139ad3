"""The predict step: RunInference over (rows, features) pairs with real SavedModels."""

import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from models.bundle import Outputs
from models.handlers.tensorflow import SavedModelHandler, SavedModelPredictor
from models.inference import Predict, PredictionColumns
from models.examples.penguins import train
from testing.saved_models import linear, save_linear_model
from transforms.rows import dead_letters as dl
from transforms.rows.dead_letters import DEAD_LETTERS, Rejected
from transforms.files.readers import read_file
from transforms.rows.validation import validate

WEIGHTS = np.array([[0.1, -0.2], [0.3, 0.4]])
BIAS = np.array([0.0, 0.5])
POISON = 100.0


@pytest.fixture(scope='module')
def poisoned_model(tmp_path_factory) -> str:
  """A two-class linear model that raises on any batch holding a row whose first feature is >= POISON."""
  return save_linear_model(str(tmp_path_factory.mktemp('model') / 'poisoned'), WEIGHTS, BIAS, poison_at=POISON)


def _columns(outputs: Outputs, passthrough=(pa.field('note', pa.string()),)) -> PredictionColumns:
  return PredictionColumns(outputs, 'row_id', tuple(passthrough), 'tiny', '3', 'run-1')


def _pair(keys, features):
  """A validated batch (its key, a passthrough note and its positions) with its feature matrix."""
  rows = pa.RecordBatch.from_pydict({
      dl.KEY: keys, 'note': [f'note {k}' for k in keys], dl.SOURCE: ['in.csv'] * len(keys),
      dl.ROW: list(range(1, len(keys) + 1))})
  return rows, np.asarray(features, np.float32)


def _run(pairs, handler, columns, *, check_predictions, check_dead_letters) -> dict[str, int]:
  """Runs Predict; the checks get every output row as a dict. Returns the batch_inference counters."""
  pipeline = test_pipeline.TestPipeline()
  result = pipeline | beam.Create(pairs, reshuffle=False) | Predict(handler, columns)
  assert_that(result['predictions'] | 'PredictionRows' >> beam.FlatMap(lambda b: b.to_pylist()),
              check_predictions, label='CheckPredictions')
  assert_that(result[DEAD_LETTERS] | 'LetterRows' >> beam.FlatMap(lambda b: b.to_pylist()),
              check_dead_letters, label='CheckDeadLetters')
  run = pipeline.run()
  run.wait_until_finish()
  return {c.key.metric.name: c.committed
          for c in run.metrics().query(MetricsFilter().with_namespace('batch_inference'))['counters']}


def test_prediction_columns__classification_rows_carry_key_passthrough_and_provenance():
  columns = _columns(Outputs('classification', ('no', 'yes sir')))
  rows, _ = _pair(['a', 'b'], np.zeros((2, 2)))
  out = columns.format(rows, np.array([[0.2, 0.8], [0.9, 0.1]]))
  assert out.schema == columns.schema
  assert out.schema.names == ['row_id', 'note', 'predicted_class', 'predicted_probability', 'probability_no',
                              'probability_yes_sir', 'model_name', 'model_version', 'run_id', 'predicted_at']
  got = out.to_pylist()
  assert [(r['row_id'], r['note'], r['predicted_class']) for r in got] == [('a', 'note a', 'yes sir'),
                                                                          ('b', 'note b', 'no')]
  assert [r['predicted_probability'] for r in got] == pytest.approx([0.8, 0.9])
  assert {(r['model_name'], r['model_version'], r['run_id']) for r in got} == {('tiny', '3', 'run-1')}


def test_prediction_columns__regression_has_a_score_and_missing_passthrough_is_null():
  columns = _columns(Outputs('regression'), passthrough=(pa.field('region', pa.int64()),))
  rows, _ = _pair(['a'], np.zeros((1, 2)))
  out = columns.format(rows, np.array([2.5]))
  assert 'predicted_class' not in out.schema.names
  assert out.to_pylist()[0]['score'] == 2.5 and out.to_pylist()[0]['region'] is None


def test_prediction_columns__dictionary_columns_leave_out_keys_scores_and_numbers():
  passthrough = (pa.field('note', pa.string()), pa.field('region', pa.int64()), pa.field('day', pa.date32()))
  classification = _columns(Outputs('classification', ('no', 'yes')), passthrough=passthrough)
  assert classification.dictionary_columns == ['predicted_class', 'model_name', 'model_version', 'run_id',
                                               'predicted_at', 'note', 'day']
  assert set(classification.dictionary_columns) < set(classification.schema.names)
  assert _columns(Outputs('regression'), passthrough=()).dictionary_columns == [
      'model_name', 'model_version', 'run_id', 'predicted_at']


def test_prediction_columns__an_embedding_is_one_list_column_of_each_rows_floats():
  columns = _columns(Outputs('embedding', dimension=3))
  rows, _ = _pair(['a', 'b'], np.zeros((2, 2)))
  values = np.array([[0.5, -1.25, 3e-8], [7.0, 0.0, -2.5]], np.float32)
  out = columns.format(rows, values)
  assert out.schema == columns.schema
  assert out.schema.names == ['row_id', 'note', 'embedding', 'model_name', 'model_version', 'run_id', 'predicted_at']
  assert out.schema.field('embedding').type == pa.list_(pa.float32())
  np.testing.assert_array_equal(np.array(out.column('embedding').to_pylist(), np.float32), values)
  assert columns.score_names == [] and 'embedding' in columns.descriptions
  # A database table's column says the length (pgvector's vector(n)); the values are the same.
  table = columns.table_rows(out)
  assert table.schema == columns.table_schema and columns.table_schema.field('embedding').type == pa.list_(
      pa.float32(), 3)
  assert table.column('embedding').to_pylist() == out.column('embedding').to_pylist()


def test_prediction_columns__top_k_classes_best_first_beside_every_probability():
  classes = ('a', 'b', 'c', 'd', 'e')
  columns = _columns(Outputs('classification', classes, top_k=3))
  scores = np.random.default_rng(0).dirichlet(np.ones(5), size=200).astype(np.float32)
  scores[0] = [0.3, 0.3, 0.1, 0.2, 0.1]  # a tie: the first class, as predicted_class's argmax takes it
  rows, _ = _pair([f'k{i}' for i in range(200)], np.zeros((200, 2)))
  out = columns.format(rows, scores)
  assert out.schema.names[2:6] == ['predicted_class', 'predicted_probability', 'top_classes', 'top_probabilities']
  assert out.schema.field('top_classes').type == pa.list_(pa.string())
  assert out.schema.field('top_probabilities').type == pa.list_(pa.float32())
  order = np.argsort(-scores, axis=1, kind='stable')[:, :3]
  assert out.column('top_classes').to_pylist() == [[classes[j] for j in row] for row in order]
  np.testing.assert_array_equal(np.array(out.column('top_probabilities').to_pylist(), np.float32),
                                np.take_along_axis(scores, order, axis=1))
  assert [t[0] for t in out.column('top_classes').to_pylist()] == out.column('predicted_class').to_pylist()
  assert out.column('probability_e').to_numpy().tolist() == scores[:, 4].tolist()


def test_predict__the_penguin_bundle_predicts_what_the_model_predicts_outside_beam(penguin_bundle):
  with open(train.EXAMPLE_DATA, 'rb') as f:
    batches = [b for b in read_file(f, 'penguins.csv', 'csv', batch_size=100) if not isinstance(b, Rejected)]
  valid = [validate(b, penguin_bundle.features)[0] for b in batches]
  pairs = [(rows, penguin_bundle.features.transform(rows)) for rows in valid]
  expected = SavedModelPredictor(penguin_bundle.saved_model_path).predict(np.concatenate([f for _, f in pairs]))
  keys = [k for rows, _ in pairs for k in rows.column(dl.KEY).to_pylist()]
  columns = PredictionColumns(penguin_bundle.outputs, 'row_id', (pa.field('species', pa.string()),),
                              penguin_bundle.name, penguin_bundle.version, 'run-1')
  handler = SavedModelHandler(penguin_bundle.saved_model_path, max_batch_rows=128)

  def check_predictions(predictions):
    assert len(predictions) == len(keys) == 342
    by_key = {r['row_id']: r for r in predictions}
    for key, want in zip(keys, expected):
      got = by_key[key]
      np.testing.assert_allclose([got[f'probability_{c}'] for c in train.CLASSES], want, rtol=1e-5, atol=1e-6)
      assert got['predicted_class'] == train.CLASSES[int(np.argmax(want))]
      assert (got['model_name'], got['model_version'], got['run_id']) == ('penguin-species', '1', 'run-1')
    assert np.mean([r['species'] == r['predicted_class'] for r in predictions]) > 0.9

  counters = _run(pairs, handler, columns, check_predictions=check_predictions,
                  check_dead_letters=equal_to([]))
  assert counters['rows_predicted'] == 342
  # No model call failed: not even on the empty batches Beam's batching emits between large elements.
  assert counters.get('failed_batches_counter', 0) == 0


def test_predict__a_poisonous_row_is_rejected_alone_and_its_neighbours_are_predicted(poisoned_model):
  x = np.array([[1.0, 2.0], [POISON + 1, 0.0], [3.0, -1.0], [0.5, 0.5], [-2.0, 1.0]])
  pairs = [_pair(['a', 'b', 'c'], x[:3]), _pair(['d', 'e'], x[3:])]
  columns = _columns(Outputs('classification', ('left', 'right')))

  def check_predictions(predictions):
    by_key = {r['row_id']: r for r in predictions}
    assert sorted(by_key) == ['a', 'c', 'd', 'e']
    expected = linear(np.delete(x, 1, axis=0), WEIGHTS, BIAS)
    for key, want in zip('acde', expected):
      np.testing.assert_allclose([by_key[key]['probability_left'], by_key[key]['probability_right']], want,
                                 rtol=1e-5)

  def check_dead_letters(letters):
    (letter,) = letters
    assert (letter['key'], letter['row'], letter['stage'], letter['reason_code']) == (
        'b', 2, 'predict', 'model_error')
    assert letter['reason'].startswith('model failed on this row: InvalidArgumentError')
    assert 'poisonous row: first feature too large' in letter['reason']
    assert json.loads(letter['record']) == {'note': 'note b'}

  counters = _run(pairs, SavedModelHandler(poisoned_model), columns, check_predictions=check_predictions,
                  check_dead_letters=check_dead_letters)
  assert counters['rows_predicted'] == 4
  assert counters['rows_rejected'] == counters['rejected_model_error'] == 1


def test_predict__a_model_that_fails_every_row_rejects_every_row(poisoned_model):
  pairs = [_pair(['a', 'b'], [[POISON, 0.0], [POISON * 2, 1.0]])]

  def check_dead_letters(letters):
    assert sorted((d['key'], d['reason_code']) for d in letters) == [('a', 'model_error'), ('b', 'model_error')]

  counters = _run(pairs, SavedModelHandler(poisoned_model), _columns(Outputs('classification', ('left', 'right'))),
                  check_predictions=equal_to([]), check_dead_letters=check_dead_letters)
  assert counters['rejected_model_error'] == counters['rows_rejected'] == 2
  assert counters.get('rows_predicted', 0) == 0
