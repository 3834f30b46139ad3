"""A model that raises on some rows: the batch is retried row by row, so only
the poisonous rows are rejected, with the model's own error text."""

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from models.bundle import Outputs
from models.handlers.tensorflow import SavedModelHandler
from models.inference import Predict, PredictionColumns
from transforms.rows import dead_letters as dl
from testing.saved_models import save_poisoned_softmax
from transforms.rows.dead_letters import DEAD_LETTERS

POISON = 1000.0  # the model refuses any row whose first feature reaches this


@pytest.fixture(scope='module')
def touchy_model(tmp_path_factory) -> str:
  """A real SavedModel whose serving signature fails a whole call if one row is poisonous."""
  return save_poisoned_softmax(str(tmp_path_factory.mktemp('touchy') / 'saved_model'), poison_at=POISON,
                               poison_message='feature 0 out of range')


def _names_the_model_error(reason: str) -> bool:
  """The model's own message, without stack frames or file paths."""
  return (reason.startswith('model failed on this row: InvalidArgumentError: ')
          and 'feature 0 out of range' in reason and 'Traceback' not in reason and 'File "' not in reason)


def _element(keys: list[str], features: list[list[float]]):
  rows = pa.RecordBatch.from_pydict({
      dl.KEY: keys, dl.SOURCE: ['f.csv'] * len(keys), dl.ROW: list(range(1, len(keys) + 1))})
  return rows, np.asarray(features, np.float32)


def test_poisonous_rows_are_rejected_alone_and_their_neighbours_predicted(touchy_model):
  columns = PredictionColumns(Outputs('classification', ('a', 'b')), 'row_id', (), 'touchy', '1', 'run')
  handler = SavedModelHandler(touchy_model, min_batch_rows=1, max_batch_rows=1000, share_across_processes=False)
  elements = [
      _element(['k1', 'k2', 'k3'], [[1, 2], [POISON, 0], [3, 1]]),  # one bad row among good ones
      _element(['k4', 'k5'], [[0, 0], [5, 5]]),  # an all-good element that may share the failing call
      _element(['k6'], [[POISON * 2, 1]]),
  ]
  with test_pipeline.TestPipeline() as p:
    result = p | beam.Create(elements) | Predict(handler, columns)
    predicted = result['predictions'] | 'Keys' >> beam.FlatMap(lambda b: b.column('row_id').to_pylist())
    letters = result[DEAD_LETTERS] | 'Letters' >> beam.FlatMap(lambda b: [
        (r['key'], r['reason_code'], r['stage'], _names_the_model_error(r['reason']), r['row'])
        for r in b.to_pylist()])
    probabilities = result['predictions'] | 'Sums' >> beam.FlatMap(
        lambda b: np.round(b.column('probability_a').to_numpy() + b.column('probability_b').to_numpy(), 4).tolist())
    assert_that(predicted, equal_to(['k1', 'k3', 'k4', 'k5']), label='Predicted')
    assert_that(letters, equal_to([('k2', dl.MODEL_ERROR, 'predict', True, 2),
                                   ('k6', dl.MODEL_ERROR, 'predict', True, 1)]), label='Rejected')
    assert_that(probabilities, equal_to([1.0] * 4), label='Probabilities')
