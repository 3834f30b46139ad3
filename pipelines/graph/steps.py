"""The job's steps, each holding the optional behaviour it owns, so `build_pipeline` reads as the story.

- `ReadInput`: the input's batches, and with `--only_unscored` the rows scored
  before left out (and counted);
- `DeduplicateKeys`: with `--key_column`, every key counted before a row goes on,
  and the rows of a repeated key handled as `--on_duplicate_key` says;
- `Features` and `predictor`: the model's feature step (an image model's: read,
  decode and resize each image; a text model's: tokenise, batched by tokens) and predict step, or both models' with
  `--challenger`; only the predict step asks for a GPU;
- `WritePredictions`: the predictions to their destination, with the keys
  scored beside them (`--only_unscored`), and the rows the destination refused;
- `last_steps`: profile, count, compare, digest and publish, after every write.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import apache_beam as beam

from models.challenger import COMPARISON, challenger_features, challenger_predict
from models.comparison import CompareModels
from models.handlers import handler_for
from models.handlers.base import MatrixModelHandler
from models.inference import Predict
from models.inputs import ApplyModelInputs
from pipelines.graph import gate
from pipelines.graph.finish import CountRows, FinishRun
from pipelines.graph.manifest import DigestPredictions
from pipelines.graph.plan import JobPlan
from transforms.destination import WRITTEN
from transforms.files.scored_keys import KEYS_BASE, KEYS_SCHEMA, SKIPPED, ReadScoredKeys, SkipScored, scored_keys
from transforms.files.write import WriteBatches
from transforms.images.prepare import PrepareImages
from transforms.text.prepare import PrepareText
from transforms.rows.data_profile import ProfileRun
from transforms.rows.dead_letters import DEAD_LETTERS
from transforms.rows.duplicate_keys import HandleDuplicateKeys

# The outputs of `WritePredictions` beside `WRITTEN` and the refused rows: everything the last step waits on.
DONE = 'done'


@dataclasses.dataclass(eq=False)
class ReadInput(beam.PTransform):
  """The input as RecordBatches: `{'batches': to predict, DEAD_LETTERS: unreadable records, and the
  tallies of `CountRows` ('read', and where they apply 'files', 'skipped', 'skipped_by_bigquery')}`."""
  plan: JobPlan

  def __post_init__(self):
    super().__init__()

  def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
    plan, incremental = self.plan, self.plan.incremental
    read = pbegin | 'Source' >> plan.input.read(plan.columns_read, plan.read_batch_size)
    out = {'batches': read['batches'], 'read': read['batches'], DEAD_LETTERS: read[DEAD_LETTERS]}
    out.update({name: read[tag] for name, tag in plan.input.tallies.items()})  # e.g. each file read
    if incremental is not None and incremental.key_files is not None:  # a file output: skip keys scored before
      scored = pbegin | 'ScoredKeys' >> ReadScoredKeys(incremental.key_files,
                                                       with_versions=bool(incremental.version_column))
      split = read['batches'] | 'SkipScored' >> SkipScored(scored, plan.key_column, incremental.version_column)
      out['batches'], out['skipped'] = split['unscored'], split[SKIPPED]
    if incremental is not None and incremental.skipped_by_bigquery:  # BigQuery's anti-join left these out
      out['skipped_by_bigquery'] = pbegin | 'SkippedByBigQuery' >> beam.Create([incremental.skipped_by_bigquery])
    return out


@dataclasses.dataclass(eq=False)
class DeduplicateKeys(beam.PTransform):
  """Validated batches → `{'batches': the rows that go on, DEAD_LETTERS: the rows of repeated keys it
  drops, 'found': what it found (with --key_column)}`. Without --key_column every key is generated from
  the row's position, so none repeats and the batches pass as they are."""
  plan: JobPlan

  def __post_init__(self):
    super().__init__()

  def expand(self, batches: beam.PCollection) -> dict[str, beam.PCollection]:
    if self.plan.duplicates is None:
      return {'batches': batches, DEAD_LETTERS: batches.pipeline | 'NoDuplicates' >> beam.Create([])}
    return batches | 'Keys' >> HandleDuplicateKeys(self.plan.duplicates)


@dataclasses.dataclass(eq=False)
class Features(beam.PTransform):
  """Validated rows → `{'inputs': (rows, model input), DEAD_LETTERS: rows it could not prepare}`: the
  model's feature steps or its table's columns, as its inputs.json says; both models' matrices with a
  challenger; for an image model, each row's image read, decoded and made its tensor (images.json); or, for
  a text model, each row's text tokenised, sorted by length and cut into model calls by tokens (text.json)."""
  plan: JobPlan

  def __post_init__(self):
    super().__init__()

  def expand(self, batches: beam.PCollection) -> dict[str, beam.PCollection]:
    bundle = self.plan.bundle
    if bundle.images is not None:
      return batches | 'Images' >> PrepareImages(bundle.images, bundle.image_column, self.plan.model.max_batch_rows)
    if bundle.text is not None:
      column, entities = bundle.text_column, bundle.outputs.kind == 'entities'  # entities are cut from the text
      return batches | 'Text' >> PrepareText(
          bundle.text, bundle.tokenizer_path, column, self.plan.model.max_batch_rows,
          keep_column=entities or column in (self.plan.key_column, *self.plan.passthrough), offsets=entities)
    if self.plan.challenger is None:
      inputs = batches | 'Inputs' >> ApplyModelInputs(bundle.features, bundle.inputs)
    else:
      inputs = batches | 'Inputs' >> challenger_features(bundle, self.plan.challenger)
    return {'inputs': inputs, DEAD_LETTERS: batches.pipeline | 'NoneRejected' >> beam.Create([])}


def predictor(plan: JobPlan, model_handler: Optional[MatrixModelHandler] = None) -> beam.PTransform:
  """`(rows, features)` → `{'predictions', DEAD_LETTERS}` (and COMPARISON with a challenger).

  The bundle's format chooses the handler; `model_handler` replaces it (same contract: float32 feature
  matrices in, a row of outputs per row out), to serve another model through the same job.
  """
  settings = plan.model.handler_arguments
  if plan.challenger is None:
    predict = Predict(model_handler or handler_for(plan.bundle, **settings), plan.columns)
  else:
    predict = challenger_predict(plan.bundle, plan.challenger, plan.columns, settings,
                                 segment_column=plan.segment_column)
  if plan.model.inference_accelerator:
    # Only the predict step asks for the GPU; reading and features stay on plain workers
    # where the runner fits machines to steps (Dataflow right fitting).
    predict = predict.with_resource_hints(accelerator=plan.model.inference_accelerator)
  return predict


@dataclasses.dataclass(eq=False)
class WritePredictions(beam.PTransform):
  """Predictions → their destination: `{WRITTEN, DONE: what the last step waits on, and DEAD_LETTERS: the
  rows the destination refused, where it can}`. With `--only_unscored` into files, the keys scored are
  written beside them, published with the attempt."""
  plan: JobPlan

  def __post_init__(self):
    super().__init__()

  def expand(self, predictions: beam.PCollection) -> dict[str, beam.PCollection]:
    plan, incremental = self.plan, self.plan.incremental
    out = dict(predictions | 'Write' >> plan.predictions.write())
    out[DONE] = out[WRITTEN]
    if incremental is not None and incremental.index is not None:
      key_files = (predictions
                   | 'KeysScored' >> beam.Map(scored_keys, key_name=plan.columns.key_name,
                                              version_column=incremental.version_column)
                   | 'WriteKeysScored' >> WriteBatches(f'{plan.predictions.folder}/{KEYS_BASE}', KEYS_SCHEMA))
      out[DONE] = (out[WRITTEN], key_files) | 'AllWritten' >> beam.Flatten()
    return out


def last_steps(plan: JobPlan, read: dict[str, beam.PCollection], predicted: dict[str, beam.PCollection],
               written: dict[str, beam.PCollection], dead_letters: dict[str, beam.PCollection],
               rejected: beam.PCollection, duplicates: Optional[beam.PCollection] = None) -> dict[str, beam.PCollection]:
  """Profile, count, compare and digest the run, then publish it once every write is done: `{'counts',
  'summary', 'profile'}`. Top-level steps, so a runner's page shows each."""
  tallies = {'read': read['read'], 'unreadable': read[DEAD_LETTERS], 'predicted': predicted['predictions'],
             'rejected': rejected, **{k: read[k] for k in ('files', 'skipped', 'skipped_by_bigquery') if k in read}}
  if DEAD_LETTERS in written:
    tallies['not_written'] = written[DEAD_LETTERS]
  profile = profile_view = None
  if plan.report or gate.needs_training_statistics(plan.gate):
    profiling = ProfileRun(plan.bundle.features)
    profile = (read['read'], predicted['predictions']) | 'Profile' >> profiling
    profile_view = beam.pvalue.AsSingleton(profile, default_value=profiling.empty())
  counts = tallies | 'Count' >> CountRows(plan.columns.top_k if plan.columns.outputs.kind == 'ranking' else None)
  comparison = predicted[COMPARISON] | 'CompareModels' >> CompareModels(plan.bundle, plan.challenger) if plan.challenger else None
  digesting = DigestPredictions(plan.columns.score_names)
  digest = predicted['predictions'] | 'Digest' >> digesting
  summary = counts | 'Finish' >> FinishRun(
      plan, written[DONE], dead_letters[WRITTEN], profile_view, comparison=comparison,
      digest=beam.pvalue.AsSingleton(digest, default_value=digesting.empty()), duplicates=duplicates)
  return {'counts': counts, 'summary': summary, 'profile': profile}
