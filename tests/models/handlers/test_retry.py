"""A batch the model fails on is retried row by row inside the handler, with a real SavedModel."""

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from models.bundle import Outputs
from models.handlers.base import RowFailures
from models.handlers.tensorflow import SavedModelHandler
from models.inference import Predict, PredictionColumns
from transforms.rows import dead_letters as dl
from testing.saved_models import save_poisoned_softmax
from transforms.rows.dead_letters import DEAD_LETTERS


@pytest.fixture(scope='module')
def poisoned_model(tmp_path_factory) -> str:
  """A SavedModel that softmaxes two features and raises on a first feature of 100 or more."""
  return save_poisoned_softmax(str(tmp_path_factory.mktemp('poisoned') / 'saved_model'), poison_at=100.0,
                               outputs=('scores',), poison_message='feature 0 is too large')


def _softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - x.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def test_run_inference__failing_row_is_isolated_and_neighbours_predicted(poisoned_model):
  handler = SavedModelHandler(poisoned_model, share_across_processes=False)
  model = handler.load_model()
  clean = np.array([[1, 2], [3, 1]], np.float32)
  mixed = np.array([[0, 1], [150, 0], [2, 2]], np.float32)

  results = handler.run_inference([clean, mixed], model)

  assert isinstance(results[0].inference, np.ndarray)
  np.testing.assert_allclose(results[0].inference, _softmax(clean), rtol=1e-5)
  failures = results[1].inference
  assert isinstance(failures, RowFailures)
  assert list(failures.errors) == [1] and 'feature 0 is too large' in failures.errors[1]
  np.testing.assert_allclose(failures.outputs[[0, 2]], _softmax(mixed[[0, 2]]), rtol=1e-5)
  assert np.isnan(failures.outputs[1]).all()


def test_predict__model_errors_become_dead_letters_and_the_rest_predictions(poisoned_model):
  columns = PredictionColumns(Outputs('classification', ('a', 'b')), 'id', (), 'poisoned', '1', 'run')
  rows = pa.RecordBatch.from_pydict({dl.KEY: ['k0', 'k1', 'k2'], dl.SOURCE: ['f'] * 3, dl.ROW: [1, 2, 3],
                                     'x': [0.0, 150.0, 2.0]})
  features = np.array([[0, 1], [150, 0], [2, 2]], np.float32)
  handler = SavedModelHandler(poisoned_model, share_across_processes=False)
  with TestPipeline() as p:
    out = p | beam.Create([(rows, features)]) | Predict(handler, columns)
    keys = out['predictions'] | 'PredictedKeys' >> beam.FlatMap(lambda b: b.column('id').to_pylist())
    letters = out[DEAD_LETTERS] | 'Letters' >> beam.FlatMap(
        lambda b: [(r['key'], r['row'], r['reason_code']) for r in b.to_pylist()])
    assert_that(keys, equal_to(['k0', 'k2']), label='Predicted')
    assert_that(letters, equal_to([('k1', 2, dl.MODEL_ERROR)]), label='DeadLetters')
