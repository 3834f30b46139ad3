"""Challenger scoring: a second model scores the same validated rows in the same step.

Both models run on each batch in one `RunInference` call, so the champion's
prediction and the challenger's for a row meet without a join (a per-row
CoGroupByKey would cost a Python object per row). Where both bundles' feature
specs are equal the feature matrix is computed once and shared; otherwise each
batch carries both matrices side by side. Only the champion's predictions are
written: the challenger never changes the published output, and a row it
cannot score (it raised, or returned NaN) is counted as unscored rather than
rejected. Each predicted batch also gives one comparison batch pairing both
models' verdicts per row (class, score and each ranked score), which
`models.comparison.CompareModels` reduces to one dict.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from models.lean_imports import PredictionResult, RunInference

from models.bundle import BundleError, ModelBundle, Outputs
from models.handlers.base import KeyedRowsHandler, MatrixModelHandler, RowFailures, predict_row_by_row
from models.handlers import handler_for, load_predictor
from models.inference import PredictionColumns, FormatFn, model_error_letters
from models.comparison import CHALLENGER, CHAMPION
from transforms.rows.dead_letters import DEAD_LETTERS
from transforms.features.spec import ApplyFeatures, FeatureSpec
from transforms.rows.validation import coerce_column

COMPARISON = 'comparison'


def specs_agree(a: FeatureSpec, b: FeatureSpec) -> bool:
  """Whether two fitted specs make the same matrix from the same rows (then it is computed once)."""
  return a.to_dict() == b.to_dict()


def check_comparable(champion: ModelBundle, challenger: ModelBundle) -> None:
  """Raises ValueError unless both bundles predict the same kind of thing (the same classes)."""
  a, b = champion.outputs, challenger.outputs
  if 'entities' in (a.kind, b.kind):
    raise ValueError(f'--challenger {challenger.path}: a token classifier\'s entities have no class or score to '
                     'compare row by row; run it without --challenger')
  if 'embedding' in (a.kind, b.kind):
    raise ValueError(f'--challenger {challenger.path}: an embedding model ({(a if a.kind == "embedding" else b).describe()}) '
                     'has no class or score to compare row by row (two embeddings\' dimensions need not mean the '
                     'same); run it without --challenger')
  if a.kind != b.kind or set(a.classes) != set(b.classes):
    raise ValueError(f'--challenger {challenger.path} predicts {b.kind} {list(b.classes) or ""} but the model '
                     f'predicts {a.kind} {list(a.classes) or ""}: only models of the same outputs can be compared')


class PairedPredictor:
  """The champion and the challenger, loaded together (one shared copy of each per worker)."""

  def __init__(self, champion, challenger):
    self._champion = champion
    self._challenger = challenger

  def predict(self, features: np.ndarray) -> np.ndarray:
    return self._champion.predict(features)

  def predict_challenger(self, features: np.ndarray) -> np.ndarray:
    return self._challenger.predict(features)


class _ChallengerView:
  """The challenger alone behind `predict`, for the row-by-row retry."""

  def __init__(self, model: PairedPredictor):
    self._model = model

  def predict(self, features: np.ndarray) -> np.ndarray:
    return self._model.predict_challenger(features)


class ChallengerHandler(MatrixModelHandler):
  """Runs the champion as its own format's handler does, then the challenger on the same rows.

  Each element's matrix is the champion's features, followed by the
  challenger's from column `split` on (or shared by both when `split` is None).
  Each result's `inference` is `(champion output, challenger output)`, the
  latter NaN on rows the challenger failed on.
  """

  def __init__(self, champion: ModelBundle, challenger: ModelBundle, *, split: Optional[int], **settings):
    super().__init__(champion.model_path, **settings)
    self._champion = handler_for(champion, **settings)
    self._challenger = challenger
    self._split = split

  def load_model(self) -> PairedPredictor:
    champion = self._champion.load_model()
    bundle = self._challenger
    try:
      challenger = load_predictor(bundle.format, bundle.model_path, bundle.outputs, self._device, bundle.load_options)
    except Exception as e:  # pylint: disable=broad-except
      raise RuntimeError(f'cannot load the challenger {bundle.model_path} on a worker: {e}') from e
    return PairedPredictor(champion, challenger)

  def run_inference(self, batch: Sequence[np.ndarray], model: PairedPredictor,
                    inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
    if not batch:
      return []
    split = self._split
    champion = super().run_inference([m[:, :split] if split is not None else m for m in batch], model)
    features = np.concatenate([m[:, split:] if split is not None else m for m in batch])
    try:
      challenger = np.asarray(model.predict_challenger(features), dtype=np.float32)
    except Exception:  # pylint: disable=broad-except  (each row is retried; failures stay NaN)
      challenger, _ = predict_row_by_row(_ChallengerView(model), features)
    results, start = [], 0
    for matrix, result in zip(batch, champion):
      end = start + matrix.shape[0]
      results.append(PredictionResult(matrix, (result.inference, challenger[start:end]), self._model_uri))
      start = end
    return results


def _top(scores: np.ndarray, outputs: Outputs) -> tuple[Optional[pa.Array], np.ndarray]:
  """The predicted class (None for a regressor) and its score, per row."""
  if outputs.kind == 'regression':
    return None, scores[:, 0].astype(np.float64)
  best = np.nan_to_num(scores, nan=-np.inf).argmax(axis=1)
  return pa.array(outputs.classes, pa.string()).take(best), scores[np.arange(len(scores)), best].astype(np.float64)


class _FormatWithChallengerFn(FormatFn):
  """Lays out the champion's predictions as `Predict` does, and pairs both models' verdicts per row."""

  def __init__(self, columns: PredictionColumns, challenger: Outputs, segment_column: Optional[str]):
    super().__init__(columns)
    self._challenger = challenger
    self._segment = segment_column

  def process(self, element: tuple[pa.RecordBatch, PredictionResult]):
    rows, result = element
    champion, challenger = result.inference
    yield from super().process((rows, PredictionResult(result.example, champion, result.model_id)))
    ok = np.ones(rows.num_rows, dtype=bool)
    if isinstance(champion, RowFailures):
      ok[list(champion.errors)] = False
      champion = champion.outputs
    if not ok.any():
      return
    rows, champion, challenger = rows.filter(pa.array(ok)), champion[ok], challenger[ok]
    champion_class, champion_score = _top(champion, self._columns.outputs)
    challenger_class, challenger_score = _top(challenger, self._challenger)
    unscored = np.isnan(challenger).any(axis=1)
    segment = (rows.column(self._segment).cast(pa.string()).fill_null('<null>') if self._segment
               else pa.repeat(pa.scalar('', pa.string()), rows.num_rows))
    arrays = {'segment': segment, 'champion_score': pa.array(champion_score),
              'challenger_score': pa.array(np.where(unscored, np.nan, challenger_score)),
              'unscored': pa.array(unscored)}
    if champion_class is not None:
      arrays['champion_class'] = champion_class
      arrays['challenger_class'] = pc.if_else(pa.array(unscored), pa.scalar(None, pa.string()), challenger_class)
      theirs = list(self._challenger.classes)
      for i, cls in enumerate(self._columns.outputs.classes):  # each class's probability, matched by class
        arrays[CHAMPION + str(cls)] = pa.array(champion[:, i].astype(np.float64))
        arrays[CHALLENGER + str(cls)] = pa.array(challenger[:, theirs.index(cls)].astype(np.float64))
    else:
      arrays[CHAMPION + 'score'], arrays[CHALLENGER + 'score'] = arrays['champion_score'], arrays['challenger_score']
    yield beam.pvalue.TaggedOutput(COMPARISON, pa.RecordBatch.from_pydict(arrays))


@dataclasses.dataclass
class PredictWithChallenger(beam.PTransform):
  """`models.inference.Predict` with a challenger scoring the same rows.

  Outputs `{'predictions', DEAD_LETTERS, COMPARISON}`: the champion's
  predictions and dead letters exactly as `Predict` gives them, and one
  RecordBatch per predicted batch pairing both models' class and score.
  """

  handler: ChallengerHandler
  columns: PredictionColumns
  challenger: Outputs
  _: dataclasses.KW_ONLY
  segment_column: Optional[str] = None

  def __post_init__(self):
    super().__init__()
    self._model_identifier = f'batch-inference-challenger-{uuid.uuid4().hex}'

  def expand(self, pairs):
    predicted, failed = pairs | 'RunInference' >> RunInference(
        KeyedRowsHandler(self.handler), model_identifier=self._model_identifier).with_exception_handling()
    formatted = predicted | 'Format' >> beam.ParDo(
        _FormatWithChallengerFn(self.columns, self.challenger, self.segment_column)).with_outputs(
            DEAD_LETTERS, COMPARISON, main='predictions')
    letters = ((formatted[DEAD_LETTERS], failed.failed_inferences | 'ModelErrors' >> beam.FlatMap(model_error_letters))
               | 'AllModelErrors' >> beam.Flatten())
    return {'predictions': formatted['predictions'], DEAD_LETTERS: letters, COMPARISON: formatted[COMPARISON]}


@dataclasses.dataclass
class ApplyBothFeatures(beam.PTransform):
  """`(batch, champion features | challenger features)`: both matrices side by side in one element.

  Rows were validated against the champion's spec; columns only the challenger
  reads are typed here, and a batch the challenger's features fail on gets NaN
  (its rows count as unscored by the challenger, never rejected).
  """

  champion: FeatureSpec
  challenger: FeatureSpec

  def __post_init__(self):
    super().__init__()

  def expand(self, batches):
    return batches | 'Transform' >> beam.Map(
        _both_matrices, champion=self.champion, challenger=self.challenger).with_output_types(
            beam.typehints.Tuple[pa.RecordBatch, np.ndarray])


def _both_matrices(batch: pa.RecordBatch, champion: FeatureSpec,
                   challenger: FeatureSpec) -> tuple[pa.RecordBatch, np.ndarray]:
  own = [f for f in challenger.features if f.name not in champion.columns]
  typed = batch
  for feature in own:
    if feature.name in typed.schema.names:
      column = coerce_column(typed.column(feature.name), feature.dtype)[0]
      typed = typed.set_column(typed.schema.get_field_index(feature.name), feature.name, column)
  try:
    theirs = challenger.transform(typed)
  except Exception:  # pylint: disable=broad-except  (the challenger never rejects a row)
    theirs = np.full((batch.num_rows, len(challenger.output_names)), np.nan, dtype=np.float32)
  return batch, np.hstack([champion.transform(batch), theirs]).astype(np.float32)


def challenger_features(champion: ModelBundle, challenger: ModelBundle) -> beam.PTransform:
  """The feature step of a run with a challenger: one matrix when both models' specs agree, else both
  side by side (the challenger's from column `len(champion outputs)` on). Both models take matrices (float32 here)."""
  for bundle in (champion, challenger):
    if bundle.inputs.shape != 'matrix':
      raise BundleError(f'--challenger compares two models that take a matrix; {bundle.name} '
                        f'v{bundle.version} takes {bundle.inputs.describe()} (its inputs.json)')
  if specs_agree(champion.features, challenger.features):
    return ApplyFeatures(champion.features)
  return ApplyBothFeatures(champion.features, challenger.features)


def challenger_predict(champion: ModelBundle, challenger: ModelBundle, columns: PredictionColumns,
                       settings: dict[str, Any], *, segment_column: Optional[str]) -> PredictWithChallenger:
  """The predict step of a run with a challenger, over what `challenger_features` made.

  `settings` are the champion handler's keyword arguments; the challenger runs with the same.
  """
  split = None if specs_agree(champion.features, challenger.features) else len(champion.features.output_names)
  handler = ChallengerHandler(champion, challenger, split=split, **settings)
  return PredictWithChallenger(handler, columns, challenger.outputs, segment_column=segment_column)
