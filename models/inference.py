"""The predict step: `RunInference` over feature matrices, keyed by their input rows.

Each element is `(rows, features)`: the validated RecordBatch is the key, so a
prediction can never come apart from the row it belongs to. A batch the model
fails on is retried row by row (by the handler), so one poisonous row is
rejected alone; predictions never pass through a Flatten, which the
DirectRunner would materialise.
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
from models.lean_imports import PredictionResult, RunInference

from models.bundle import Outputs
from models.handlers.base import KeyedRowsHandler, MatrixModelHandler, RowFailures, error_text
from transforms.rows import coders as _coders  # noqa: F401  (registers the coders of the declared element types)
from transforms.rows import counters
from transforms.rows import ranking
from transforms.rows import dead_letters as dl
from transforms.rows.dead_letters import DEAD_LETTERS, count_rejections
from transforms.text import entities

# The list columns of an embedding model, and of a classifier's top-K classes (outputs.json "top_k").
EMBEDDING = 'embedding'
TOP_CLASSES, TOP_PROBABILITIES = 'top_classes', 'top_probabilities'
# A token classifier's column: the entities found in each row's text.
ENTITIES = 'entities'


@dataclasses.dataclass(frozen=True)
class PredictionColumns:
  """How predictions become output columns, and the schema they are written with.

  Args:
    outputs: the bundle's output description.
    key_name: the name of the key column in the output.
    passthrough: input columns copied to the output, with their types.
    model_name, model_version, run_id: stamped on every row.
    key_type: the key column's type: an integer key stays int64; every other key
      (and the generated row id) is text.
    top_k: for a ranking model, how many of the best items each row keeps.
    model_resource: the Vertex AI Model Registry version the model came from
      (projects/P/locations/L/models/M@VERSION), stamped on every row; None for a bundle path.
    text_column: for a token classifier, the column of each row's text, which its entities are cut from.
  """
  outputs: Outputs
  key_name: str
  passthrough: tuple[pa.Field, ...]
  model_name: str
  model_version: str
  run_id: str
  key_type: pa.DataType = pa.string()
  top_k: int = 10
  model_resource: Optional[str] = None
  text_column: Optional[str] = None

  @property
  def descriptions(self) -> dict[str, str]:
    """Each output column's description, for a table's schema."""
    described = {
        self.key_name: 'Key of the input row the prediction belongs to.',
        'predicted_class': 'The most probable class.',
        'predicted_probability': 'The probability of predicted_class.',
        'score': 'The model\'s score.',
        'model_name': 'Name of the model bundle that predicted the row.',
        'model_version': 'Version of the model bundle.',
        'run_id': 'The run that wrote the row; a re-run of the same id replaces its rows.',
        'predicted_at': 'When the row was predicted (UTC); the table is partitioned by its day.',
    }
    described.update({f.name: f'Input column {f.name}, copied unchanged.' for f in self.passthrough})
    if self.outputs.kind == 'classification':
      described.update({name: f'Probability of class {cls!r}.'
                        for name, cls in zip(self.score_names, self.outputs.classes)})
    if self.outputs.top_k:
      described[TOP_CLASSES] = f'The {self.outputs.top_k} most probable classes, most probable first.'
      described[TOP_PROBABILITIES] = 'The probabilities of top_classes, in the same order.'
    if self.outputs.kind == 'embedding':
      described[EMBEDDING] = f'The model\'s embedding of the row: {self.outputs.dimension} floats.'
    if self.outputs.kind == 'entities':
      described[ENTITIES] = ('The entities in the row\'s text: their text, label, start and end character '
                             '(end exclusive) and score (the mean of their tokens\' tag probabilities).')
    return described

  @property
  def provenance(self) -> list[tuple[str, str]]:
    """The constant columns stamped on every row, with their values."""
    stamps = [('model_name', self.model_name), ('model_version', self.model_version)]
    if self.model_resource:
      stamps.append(('model_resource', self.model_resource))
    return stamps + [('run_id', self.run_id)]

  @property
  def score_names(self) -> list[str]:
    if self.outputs.kind == 'regression':
      return ['score']
    if self.outputs.kind in ('ranking', 'embedding', 'entities'):
      return []
    return ['probability_' + re.sub(r'\W', '_', str(c)) for c in self.outputs.classes]

  @property
  def schema(self) -> pa.Schema:
    fields = [pa.field(self.key_name, self.key_type, nullable=False), *self.passthrough]
    if self.outputs.kind == 'classification':
      fields += [pa.field('predicted_class', pa.string()), pa.field('predicted_probability', pa.float32())]
    if self.outputs.top_k:
      fields += [pa.field(TOP_CLASSES, pa.list_(pa.string())), pa.field(TOP_PROBABILITIES, pa.list_(pa.float32()))]
    if self.outputs.kind == 'embedding':
      fields.append(pa.field(EMBEDDING, pa.list_(pa.float32())))
    if self.outputs.kind == 'entities':
      fields.append(pa.field(ENTITIES, entities.ENTITIES))
    if self.outputs.kind == 'ranking':
      fields += [pa.field(ranking.ITEMS, pa.list_(pa.string())), pa.field(ranking.SCORES, pa.list_(pa.float32()))]
    fields += [pa.field(name, pa.float32()) for name in self.score_names]
    fields += [pa.field(name, pa.string()) for name, _ in self.provenance]
    fields.append(pa.field('predicted_at', pa.timestamp('us', tz='UTC')))
    return pa.schema(fields)

  @property
  def table_schema(self) -> pa.Schema:
    """The schema of a keyed database table: one row per key, or per (key, rank) for a ranking.

    An embedding is a fixed-size list here, so the table's column can say its length (pgvector's vector(n)).
    """
    if self.outputs.kind == 'ranking':
      return ranking.rank_schema(self.schema)
    if self.outputs.kind == 'embedding':
      index = self.schema.get_field_index(EMBEDDING)
      return self.schema.set(index, self.schema.field(index).with_type(self._fixed_embedding))
    return self.schema

  @property
  def _fixed_embedding(self) -> pa.DataType:
    return pa.list_(pa.float32(), int(self.outputs.dimension))

  @property
  def primary_key(self) -> list[str]:
    return [self.key_name, ranking.RANK] if self.outputs.kind == 'ranking' else [self.key_name]

  def table_rows(self, batch: pa.RecordBatch) -> pa.RecordBatch:
    """A prediction batch laid out as the database table's rows."""
    if self.outputs.kind == 'ranking':
      return ranking.rank_rows(batch)
    if self.outputs.kind == 'embedding':  # the same buffers, typed with their length
      index = batch.schema.get_field_index(EMBEDDING)
      return batch.set_column(index, batch.schema.field(index).with_type(self._fixed_embedding),
                              batch.column(index).cast(self._fixed_embedding))
    return batch

  @property
  def dictionary_columns(self) -> list[str]:
    """Columns with few distinct values, worth dictionary-encoding in Parquet.

    Keys and scores are nearly all distinct: trying a dictionary on them and
    falling back made the files bigger and the writes about twice as slow.
    """
    names = ['predicted_class'] if self.outputs.kind == 'classification' else []
    names += [name for name, _ in self.provenance] + ['predicted_at']
    numeric = (pa.types.is_floating, pa.types.is_integer)
    return names + [f.name for f in self.passthrough if not any(is_type(f.type) for is_type in numeric)]

  def format(self, rows: pa.RecordBatch, scores: np.ndarray) -> pa.RecordBatch:
    """One output row per input row: key, passthrough, prediction, provenance."""
    n = rows.num_rows
    scores = np.asarray(scores, dtype=np.float32).reshape(n, -1)
    arrays = [rows.column(dl.KEY).cast(self.key_type)]  # text until here; validation checked it casts
    for field in self.passthrough:
      if field.name in rows.schema.names:
        arrays.append(rows.column(field.name).cast(field.type))
      else:
        arrays.append(pa.nulls(n, field.type))
    if self.outputs.kind == 'classification':
      best = scores.argmax(axis=1)
      arrays += [pa.array(self.outputs.classes, pa.string()).take(best), pa.array(scores[np.arange(n), best])]
    if self.outputs.top_k:  # the same top-K selection as a ranking's, over the classes
      arrays += list(ranking.ranking_arrays(scores, self.outputs.classes, self.outputs.top_k))
    if self.outputs.kind == 'embedding':
      arrays.append(embedding_array(scores))
    elif self.outputs.kind == 'entities':
      arrays.append(entities.entities_array(scores, self.outputs.labels, rows.column(self.text_column).to_pylist()))
    elif self.outputs.kind == 'ranking':
      arrays += list(ranking.ranking_arrays(scores, self.outputs.items, self.top_k))
    else:
      arrays += [pa.array(scores[:, i]) for i in range(scores.shape[1])]
    now = datetime.datetime.now(datetime.timezone.utc)
    # Constant columns are built in Arrow, not from one Python object per row.
    arrays += [pa.repeat(pa.scalar(value, pa.string()), n) for _, value in self.provenance]
    arrays.append(pa.repeat(pa.scalar(now, pa.timestamp('us', tz='UTC')), n))
    return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def embedding_array(values: np.ndarray) -> pa.ListArray:
  """A (rows, dimension) float32 matrix as one list per row, over the matrix's own buffer (no copy per row)."""
  rows, width = values.shape
  offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
  return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1)))


def model_error_letters(failed: tuple[Sequence[tuple[pa.RecordBatch, np.ndarray]], Exception]):
  """Dead letters for every row of a batch that failed outside the model call itself."""
  elements, error = failed
  message = f'model failed on this row\'s batch: {error_text(error)}'
  for rows, _ in elements:
    letters = dl.from_batch(rows, np.ones(rows.num_rows, dtype=bool), stage='predict',
                            codes=[dl.MODEL_ERROR] * rows.num_rows, reasons=[message] * rows.num_rows)
    count_rejections(letters)
    yield letters


class FormatFn(beam.DoFn):
  """Lays out predicted rows; rows the model failed on go to the dead letters."""

  def __init__(self, columns: PredictionColumns):
    self._columns = columns
    self._rows_predicted = counters.counter('rows_predicted')

  def process(self, element: tuple[pa.RecordBatch, PredictionResult]):
    rows, result = element
    scores = result.inference
    if isinstance(scores, RowFailures):
      failed = np.zeros(rows.num_rows, dtype=bool)
      failed[list(scores.errors)] = True
      reasons = [f'model failed on this row: {scores.errors[i]}' for i in np.flatnonzero(failed)]
      letters = dl.from_batch(rows, failed, stage='predict', codes=[dl.MODEL_ERROR] * len(reasons), reasons=reasons)
      count_rejections(letters)
      yield beam.pvalue.TaggedOutput(DEAD_LETTERS, letters)
      rows, scores = rows.filter(pa.array(~failed)), scores.outputs[~failed]
    if rows.num_rows:
      self._rows_predicted.inc(rows.num_rows)
      yield self._columns.format(rows, scores)


@dataclasses.dataclass
class Predict(beam.PTransform):
  """Predicts `(rows, features)` elements; returns output RecordBatches and dead letters.

  Args:
    handler: the model handler (its batch settings bound rows per model call).
    columns: how to lay out the output rows.
    model_identifier: the tag under which the loaded model is shared across
      the processes of a worker.
  """

  handler: MatrixModelHandler
  columns: PredictionColumns
  _: dataclasses.KW_ONLY
  # One tag per pipeline: its processes share one model copy, and Beam's files that
  # locate the shared-model server (named by the tag) never collide across runs.
  model_identifier: Optional[str] = None

  def __post_init__(self):
    super().__init__()
    self.model_identifier = self.model_identifier or f'batch-inference-{uuid.uuid4().hex}'

  def expand(self, pairs):
    predicted, failed = pairs | 'RunInference' >> RunInference(
        KeyedRowsHandler(self.handler), model_identifier=self.model_identifier).with_exception_handling()
    formatted = predicted | 'Format' >> beam.ParDo(FormatFn(self.columns)).with_output_types(
        pa.RecordBatch).with_outputs(
        DEAD_LETTERS, main='predictions')
    letters = (
        (formatted[DEAD_LETTERS], failed.failed_inferences | 'ModelErrors' >> beam.FlatMap(model_error_letters))
        | 'AllModelErrors' >> beam.Flatten())
    return {'predictions': formatted['predictions'], DEAD_LETTERS: letters}
