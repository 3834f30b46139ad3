"""SavedModelHandler with a real tiny SavedModel: loading, batching by rows, splitting results back."""

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from models.handlers.base import KeyedRowsHandler, num_rows

from models.handlers.tensorflow import SavedModelHandler, SavedModelPredictor
from testing.saved_models import linear, save_linear_model

WEIGHTS = np.array([[1.0, -1.0], [0.5, 0.0], [0.0, 2.0]])
BIAS = np.array([0.0, 0.25])


@pytest.fixture(scope='module')
def model_path(tmp_path_factory) -> str:
  return save_linear_model(str(tmp_path_factory.mktemp('model') / 'linear'), WEIGHTS, BIAS)


def _matrix(rows: int, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(rows, 3)).astype(np.float32)


# SavedModelPredictor

def test_predictor__reads_widths_from_the_signature_and_predicts_rows(model_path):
  predictor = SavedModelPredictor(model_path)
  assert (predictor.input_width, predictor.output_width) == (3, 2)
  x = _matrix(5, seed=0)
  np.testing.assert_allclose(predictor.predict(x), linear(x, WEIGHTS, BIAS), rtol=1e-5)
  assert predictor.predict(x[:0]).shape == (0, 2)


def test_predictor__a_single_score_output_is_one_column(tmp_path):
  path = save_linear_model(str(tmp_path / 'm'), WEIGHTS[:, :1], BIAS[:1], softmax=False)
  x = _matrix(4, seed=1)
  predictor = SavedModelPredictor(path)
  assert predictor.output_width == 1
  np.testing.assert_allclose(predictor.predict(x), linear(x, WEIGHTS[:, :1], BIAS[:1], softmax=False), rtol=1e-5)


def test_predictor__unknown_signature_names_the_ones_it_has(model_path):
  with pytest.raises(ValueError, match=r"no signature 'predict'; it has \['serving_default'\]"):
    SavedModelPredictor(model_path, signature='predict')


def test_predictor__several_outputs_need_an_output_key(tmp_path):
  path = save_linear_model(str(tmp_path / 'm'), WEIGHTS, BIAS, outputs=('logits', 'probabilities'))
  with pytest.raises(ValueError, match='name the one to use as output_key'):
    SavedModelPredictor(path)
  with pytest.raises(ValueError, match="no output 'classes'"):
    SavedModelPredictor(path, output_key='classes')
  assert SavedModelPredictor(path, output_key='probabilities').output_width == 2


# SavedModelHandler

def test_run_inference__one_model_call_split_back_per_element(model_path):
  handler = SavedModelHandler(model_path, share_across_processes=False)
  batch = [_matrix(3, seed=2), _matrix(0, seed=3), _matrix(1, seed=4), _matrix(4, seed=5)]
  results = list(handler.run_inference(batch, handler.load_model()))
  assert [r.inference.shape for r in results] == [(3, 2), (0, 2), (1, 2), (4, 2)]
  for matrix, result in zip(batch, results):
    assert result.example is matrix and result.model_id == model_path
    np.testing.assert_allclose(result.inference, linear(matrix, WEIGHTS, BIAS), rtol=1e-5)


def test_run_inference__a_single_element_is_not_copied(model_path):
  handler = SavedModelHandler(model_path, share_across_processes=False)
  (result,) = handler.run_inference([_matrix(2, seed=6)], handler.load_model())
  np.testing.assert_allclose(result.inference.sum(axis=1), [1.0, 1.0], rtol=1e-6)


def test_get_num_bytes__is_the_size_of_the_matrices(model_path):
  handler = SavedModelHandler(model_path)
  batch = [_matrix(3, seed=0), _matrix(5, seed=1)]
  assert handler.get_num_bytes(batch) == (3 + 5) * 3 * 4


def test_keyed_get_num_bytes__measures_the_row_batches_without_pickling_them(model_path):
  rows = pa.RecordBatch.from_pydict({'note': ['a', 'bb', 'ccc']})
  matrix = _matrix(3, seed=0)
  keyed = KeyedRowsHandler(SavedModelHandler(model_path))
  assert keyed.get_num_bytes([(rows, matrix), (rows.slice(0, 1), matrix[:1])]) == (
      rows.nbytes + rows.slice(0, 1).nbytes + matrix.nbytes + matrix[:1].nbytes)


def test_batching__counts_rows_not_elements(model_path):
  handler = SavedModelHandler(model_path, min_batch_rows=10, max_batch_rows=500)
  kwargs = handler.batch_elements_kwargs()
  assert (kwargs['min_batch_size'], kwargs['max_batch_size']) == (10, 500)
  assert kwargs['element_size_fn'] is num_rows
  assert num_rows(_matrix(7, seed=0)) == num_rows(('key', _matrix(7, seed=0))) == 7


def test_handler__shares_one_model_per_machine_unless_told_not_to(model_path):
  assert SavedModelHandler(model_path).share_model_across_processes()
  assert not SavedModelHandler(model_path, share_across_processes=False).share_model_across_processes()
  assert SavedModelHandler(model_path).get_metrics_namespace() == 'batch_inference'


def test_run_inference__an_empty_batch_gives_no_results(model_path):
  handler = SavedModelHandler(model_path, share_across_processes=False)
  keyed = KeyedRowsHandler(handler)
  assert list(handler.run_inference([], handler.load_model())) == []
  assert list(keyed.run_inference([], handler.load_model())) == [] and keyed.get_num_bytes([]) == 0


# Through RunInference. Elements hold more rows than Beam's first target batch sizes, so its
# BatchElements emits empty batches between them (see KeyedRowsHandler).

def _same_prediction(actual, expected) -> bool:
  """(id, probabilities) pairs, equal to float32 tolerance."""
  return actual[0] == expected[0] and np.allclose(actual[1], expected[1], rtol=1e-5, atol=1e-7)


def test_run_inference_transform__keyed_matrices_come_back_with_their_keys(model_path):
  elements = [(f'batch-{i}', _matrix(rows, seed=i)) for i, rows in enumerate([4, 1, 3, 2])]
  expected = [(key, linear(m, WEIGHTS, BIAS)) for key, m in elements]
  handler = SavedModelHandler(model_path, max_batch_rows=5, share_across_processes=False)
  with test_pipeline.TestPipeline() as p:
    predicted = (p | beam.Create(elements) | RunInference(KeyedRowsHandler(handler))
                 | beam.MapTuple(lambda key, result: (key, result.inference)))
    assert_that(predicted, equal_to(expected, equals_fn=_same_prediction))


def test_run_inference_transform__unkeyed_matrices_keep_their_rows_together(model_path):
  matrices = [_matrix(rows, seed=10 + rows) for rows in (6, 2, 3)]
  expected = [(m.tobytes(), linear(m, WEIGHTS, BIAS)) for m in matrices]
  with test_pipeline.TestPipeline() as p:
    predicted = (p | beam.Create(matrices) | RunInference(SavedModelHandler(model_path, max_batch_rows=8))
                 | beam.Map(lambda result: (result.example.tobytes(), result.inference)))
    assert_that(predicted, equal_to(expected, equals_fn=_same_prediction))
