"""The batch-inference job graph: read → validate → features → predict → write → finish.

`build_pipeline` only builds, from a plan the launcher resolved
(`pipelines.launcher.resolve.resolve`), with no I/O; `pipelines.run` runs it. Tests build
the same graph and assert on the PCollections it returns.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import apache_beam as beam
import pyarrow as pa

from models.challenger import COMPARISON, CompareModels, challenger_step
from models.handlers.base import MatrixModelHandler
from models.handlers import handler_for
from models.inference import Predict, PredictionColumns
from pipelines.graph import gate
from pipelines.graph.finish import CountRows, FinishRun
from transforms.files.scored_keys import KEYS_BASE
from pipelines.graph.manifest import DigestPredictions
from pipelines.graph.plan import Destination, JobPlan
from pipelines.options import BatchInferenceOptions
from transforms.bigquery.tables import WriteBigQueryBatches, refused_rows, table_schema
from transforms.bigquery.read import ReadBigQueryStreams
from transforms.rows.data_profile import ProfileRun
from transforms.rows.dead_letters import DEAD_LETTERS, RouteDeadLetters
from transforms.features.spec import ApplyFeatures
from transforms.files.scored_keys import KEYS_SCHEMA, SKIPPED, ReadScoredKeys, SkipScored, scored_keys
from transforms.postgres.tables import WritePostgres
from transforms.files.write import WriteBatches
from transforms.files.read import FILES, ReadRecordBatches
from transforms.rows.validation import ValidateRows


@dataclasses.dataclass
class PipelineOutputs:
  """The job's PCollections, for tests and callers that extend the graph."""
  predictions: beam.PCollection  # RecordBatches of `columns.schema`
  dead_letters: beam.PCollection  # RecordBatches of the dead letters' schema
  prediction_files: beam.PCollection  # final file names, Beam's BigQuery WriteResult, or rows COPYed per batch
  dead_letter_files: beam.PCollection
  columns: PredictionColumns
  counts: beam.PCollection  # one dict: rows_read, rows_predicted, rows_rejected, ... (CountRows)
  summary: beam.PCollection  # one dict: the published run summary (FinishRun)
  # One dict (transforms.rows.data_profile.ProfileRun) when --report or the gate needs it; empty when no batch was read.
  profile: Optional[beam.PCollection] = None


def _read(pipeline: beam.Pipeline, opts: BatchInferenceOptions, plan: JobPlan, needed: list[str]):
  if plan.bigquery_input is not None:
    return pipeline | 'Read' >> ReadBigQueryStreams(plan.bigquery_input.session, batch_size=opts.read_batch_size)
  return pipeline | 'Read' >> ReadRecordBatches(
      opts.input, file_format=opts.input_format, batch_size=opts.read_batch_size, columns=needed,
      key_column=opts.key_column)


@dataclasses.dataclass(eq=False)
class WriteDestination(beam.PTransform):
  """Writes RecordBatches to one of the job's destinations: files DESTINATION.FOLDER/BASE_NAME-*
  (a table's as Parquet, loaded when the run publishes), or rows streamed into a table.

  Returns the PCollection that is complete once the write is: the file names,
  or the rows a streamed table refused.
  """
  destination: Destination
  base_name: str
  file_format: str
  write_method: str

  def __post_init__(self):
    super().__init__()

  def expand(self, batches: beam.PCollection) -> beam.PCollection:
    destination = self.destination
    if destination.streams_rows:
      return (batches | 'Stream' >> WriteBigQueryBatches(
          destination.table, table_schema(destination.schema, destination.descriptions),
          partition_field=destination.partition_field, method=self.write_method)).failed_rows_with_errors
    dictionary = list(destination.dictionary_columns) if destination.dictionary_columns is not None else None
    return batches | 'Files' >> WriteBatches(f'{destination.folder}/{self.base_name}', destination.schema,
                                             file_format='parquet' if destination.is_table else self.file_format,
                                             dictionary_columns=dictionary)


def build_pipeline(pipeline: beam.Pipeline, opts: BatchInferenceOptions, plan: JobPlan, *,
                   model_handler: Optional[MatrixModelHandler] = None) -> PipelineOutputs:
  """Adds the job to `pipeline`, from a resolved plan; does no I/O.

  The bundle's format (metadata.json) chooses the handler (`models.handlers`).
  `model_handler` replaces it (same contract:
  float32 feature matrices in, a row of outputs per row out), so a benchmark
  can serve another model through the same read, validation, features,
  batching, writes and final steps.
  """
  bundle, columns = plan.bundle, plan.columns
  spec = bundle.features
  challenger = plan.challenger.features.columns if plan.challenger else []
  segment = [opts.segment_column] if plan.challenger and opts.segment_column else []
  needed = list(dict.fromkeys(spec.columns + ([opts.key_column] if opts.key_column else []) + opts.passthrough
                              + challenger + segment))

  read = _read(pipeline, opts, plan, needed)
  batches, skipped = read['batches'], {}
  incremental = plan.incremental
  if incremental is not None and incremental.key_files is not None:  # a file output: skip keys scored before
    scored = pipeline | 'ScoredKeys' >> ReadScoredKeys(incremental.key_files,
                                                       with_versions=bool(incremental.version_column))
    split = batches | 'SkipScored' >> SkipScored(scored, opts.key_column, incremental.version_column)
    batches, skipped['skipped'] = split['unscored'], split[SKIPPED]
  if incremental is not None and incremental.skipped_by_bigquery:  # BigQuery's anti-join left these out
    skipped['skipped_by_bigquery'] = pipeline | 'SkippedByBigQuery' >> beam.Create([incremental.skipped_by_bigquery])
  validated = batches | 'Validate' >> ValidateRows(
      spec, key_column=opts.key_column, integer_key=pa.types.is_integer(columns.key_type))
  settings = dict(min_batch_rows=opts.min_batch_rows, max_batch_rows=opts.max_batch_rows,
                  share_across_processes=opts.share_model(), device=opts.device)
  if plan.challenger is None:
    pairs = validated.valid | 'Features' >> ApplyFeatures(spec)
    predict = Predict(model_handler or handler_for(bundle, **settings), columns)
  else:
    pairs, predict = challenger_step(validated.valid, plan, settings, segment_column=opts.segment_column)
  if opts.inference_accelerator:
    # Only the predict step asks for the GPU; reading and features stay on plain workers
    # where the runner fits machines to steps (Dataflow right fitting).
    predict = predict.with_resource_hints(accelerator=opts.inference_accelerator)
  predicted = pairs | 'Predict' >> predict

  rejected = (read[DEAD_LETTERS], validated[DEAD_LETTERS], predicted[DEAD_LETTERS]) | 'Rejected' >> beam.Flatten()
  tallies = {'read': read['batches'], 'unreadable': read[DEAD_LETTERS], 'predicted': predicted['predictions'],
             'rejected': rejected, **skipped}
  if plan.bigquery_input is None:
    tallies['files'] = read[FILES]

  if plan.database is not None:  # COPY into the attempt's staging table; refused rows are dead letters
    db = plan.database
    written = predicted['predictions'] | 'WritePredictions' >> WritePostgres(
        db.target, db.staging, key_name=columns.key_name, run_id=plan.run_id, password_secret=db.password_secret,
        layout=columns.table_rows)
    prediction_files, tallies['not_written'] = written['written'], written[DEAD_LETTERS]
  else:
    prediction_files = predicted['predictions'] | 'WritePredictions' >> WriteDestination(
        plan.predictions, 'predictions', opts.output_format, opts.bq_write_method)
  if plan.predictions.streams_rows:  # the rows BigQuery refused
    tallies['not_written'] = prediction_files | 'RefusedRows' >> beam.Map(
        refused_rows, key_name=columns.key_name, run_id=plan.run_id)
  routed = (rejected, *([tallies['not_written']] if 'not_written' in tallies else [])) | 'WriteDeadLetters' >> (
      RouteDeadLetters(plan.run_id, WriteDestination(plan.dead_letters, 'dead_letters', 'jsonl', opts.bq_write_method),
                       rejected_at=plan.dead_letters.is_table))
  profile = profile_view = None
  if opts.report or gate.needs_training_statistics(plan.gate):
    profiling = ProfileRun(spec)
    profile = (read['batches'], predicted['predictions']) | 'Profile' >> profiling
    profile_view = beam.pvalue.AsSingleton(profile, default_value=profiling.empty())
  counts = tallies | 'Count' >> CountRows()
  comparison = predicted[COMPARISON] | 'CompareModels' >> CompareModels() if plan.challenger else None
  digesting = DigestPredictions(columns.score_names)
  digest = predicted['predictions'] | 'Digest' >> digesting
  written = prediction_files
  if incremental is not None and incremental.index is not None:  # the keys scored, published with the attempt
    key_files = (predicted['predictions']
                 | 'KeysScored' >> beam.Map(scored_keys, key_name=columns.key_name,
                                            version_column=incremental.version_column)
                 | 'WriteKeysScored' >> WriteBatches(f'{plan.predictions.folder}/{KEYS_BASE}', KEYS_SCHEMA))
    written = (written, key_files) | 'AllWritten' >> beam.Flatten()
  summary = counts | 'Finish' >> FinishRun(
      plan, written, routed['written'],
      profile_view, report=opts.report, comparison=comparison, thresholds=plan.gate,
      digest=beam.pvalue.AsSingleton(digest, default_value=digesting.empty()),
      max_rejected_fraction=opts.max_rejected_fraction)
  return PipelineOutputs(predicted['predictions'], routed['dead_letters'], prediction_files, routed['written'], columns,
                         counts, summary, profile)

