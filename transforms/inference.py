"""The predict step: `RunInference` over feature matrices, keyed by their input rows.

Each element is `(rows, features)`: the validated RecordBatch is the key, so a
prediction can never come apart from the row it belongs to. A batch the model
fails on is retried row by row, so one poisonous row is rejected alone.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import uuid
from typing import Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.ml.inference.base import PredictionResult, RunInference

from models.bundle import Outputs
from models.handler import KeyedRowsHandler, SavedModelHandler
from transforms import dead_letters as dl
from transforms.validation import DEAD_LETTERS, METRICS_NAMESPACE, count_rejections


@dataclasses.dataclass(frozen=True)
class PredictionColumns:
  """How predictions become output columns, and the schema they are written with.

  Args:
    outputs: the bundle's output description.
    key_name: the name of the key column in the output.
    passthrough: input columns copied to the output, with their types.
    model_name, model_version, run_id: stamped on every row.
  """
  outputs: Outputs
  key_name: str
  passthrough: tuple[pa.Field, ...]
  model_name: str
  model_version: str
  run_id: str

  @property
  def score_names(self) -> list[str]:
    if self.outputs.kind == 'regression':
      return ['score']
    return ['probability_' + re.sub(r'\W', '_', str(c)) for c in self.outputs.classes]

  @property
  def schema(self) -> pa.Schema:
    fields = [pa.field(self.key_name, pa.string(), nullable=False), *self.passthrough]
    if self.outputs.kind == 'classification':
      fields += [pa.field('predicted_class', pa.string()), pa.field('predicted_probability', pa.float32())]
    fields += [pa.field(name, pa.float32()) for name in self.score_names]
    fields += [pa.field('model_name', pa.string()), pa.field('model_version', pa.string()),
               pa.field('run_id', pa.string()), pa.field('predicted_at', pa.timestamp('us', tz='UTC'))]
    return pa.schema(fields)

  def format(self, rows: pa.RecordBatch, scores: np.ndarray) -> pa.RecordBatch:
    """One output row per input row: key, passthrough, prediction, provenance."""
    n = rows.num_rows
    scores = np.asarray(scores, dtype=np.float32).reshape(n, -1)
    arrays = [rows.column(dl.KEY)]
    for field in self.passthrough:
      if field.name in rows.schema.names:
        arrays.append(rows.column(field.name).cast(field.type))
      else:
        arrays.append(pa.nulls(n, field.type))
    if self.outputs.kind == 'classification':
      best = scores.argmax(axis=1)
      arrays += [pa.array(np.asarray(self.outputs.classes, dtype=object)[best], pa.string()),
                 pa.array(scores[np.arange(n), best])]
    arrays += [pa.array(scores[:, i]) for i in range(scores.shape[1])]
    now = datetime.datetime.now(datetime.timezone.utc)
    arrays += [pa.array([self.model_name] * n, pa.string()), pa.array([self.model_version] * n, pa.string()),
               pa.array([self.run_id] * n, pa.string()),
               pa.array(np.full(n, np.datetime64(now.replace(tzinfo=None), 'us')), pa.timestamp('us', tz='UTC'))]
    return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def _single_rows(failed: tuple[Sequence[tuple[pa.RecordBatch, np.ndarray]], Exception]):
  """Splits a failed model batch into one-row elements for the retry."""
  elements, _ = failed
  for rows, features in elements:
    for i in range(rows.num_rows):
      yield rows.slice(i, 1), features[i:i + 1]


def _error_text(error) -> str:
  """`Type: message` of a failure, without stack frames (which name machine paths).

  Beam's exception handling passes `(type, repr, formatted traceback lines)`,
  whose last line holds the message; TensorFlow messages also list frames.
  """
  if isinstance(error, BaseException):
    name, text = type(error).__name__, str(error)
  else:
    exc_type, exc_repr, lines = error
    name = getattr(exc_type, '__name__', str(exc_type))
    text = lines[-1].split(': ', 1)[-1] if lines else exc_repr
  kept = [line.strip() for line in text.splitlines() if line.strip() and not line[:1].isspace()]
  return f'{name}: {" ".join(kept)}'[:500]


def _model_error_letters(failed: tuple[Sequence[tuple[pa.RecordBatch, np.ndarray]], Exception]):
  elements, error = failed
  message = f'model failed on this row: {_error_text(error)}'
  for rows, _ in elements:
    letters = dl.from_batch(rows, np.ones(rows.num_rows, dtype=bool), stage='predict',
                            codes=[dl.MODEL_ERROR] * rows.num_rows, reasons=[message] * rows.num_rows)
    count_rejections(letters)
    yield letters


class _FormatFn(beam.DoFn):

  def __init__(self, columns: PredictionColumns):
    self._columns = columns
    self._rows_predicted = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'rows_predicted')

  def process(self, element: tuple[pa.RecordBatch, PredictionResult]):
    rows, result = element
    self._rows_predicted.inc(rows.num_rows)
    yield self._columns.format(rows, result.inference)


class Predict(beam.PTransform):
  """Predicts `(rows, features)` elements; returns output RecordBatches and dead letters.

  Args:
    handler: the model handler (its batch settings bound rows per model call).
    columns: how to lay out the output rows.
    model_identifier: the tag under which the loaded model is shared, so the
      row-by-row retry uses the same copy as the main step.
  """

  def __init__(self, handler: SavedModelHandler, columns: PredictionColumns, *,
               model_identifier: Optional[str] = None):
    super().__init__()
    self._handler = handler
    self._columns = columns
    # One tag per pipeline: its processes share one model copy, and Beam's files that
    # locate the shared-model server (named by the tag) never collide across runs.
    self._model_identifier = model_identifier or f'batch-inference-{uuid.uuid4().hex}'

  def expand(self, pairs):
    predicted, failed = pairs | 'RunInference' >> RunInference(
        KeyedRowsHandler(self._handler), model_identifier=self._model_identifier).with_exception_handling()
    repredicted, refailed = (
        failed.failed_inferences
        | 'SplitFailedBatches' >> beam.FlatMap(_single_rows)
        | 'RetryRowByRow' >> RunInference(KeyedRowsHandler(self._handler.row_by_row()),
                                          model_identifier=self._model_identifier).with_exception_handling())
    letters = refailed.failed_inferences | 'ModelErrors' >> beam.FlatMap(_model_error_letters)
    formatted = ((predicted, repredicted) | 'AllPredictions' >> beam.Flatten()
                 | 'Format' >> beam.ParDo(_FormatFn(self._columns)))
    return {'predictions': formatted, DEAD_LETTERS: letters}
