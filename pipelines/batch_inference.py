"""The batch-inference job graph: read → validate → features → predict → write.

`build_pipeline` only builds; `pipelines.run` runs it. Tests build the same
graph and assert on the PCollections it returns.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions

from models.bundle import ModelBundle
from models.handler import SavedModelHandler
from pipelines import preflight_bigquery as bqp
from pipelines.options import BatchInferenceOptions, new_run_id
from transforms import dead_letters as dl
from transforms.bigquery import (ReadBigQueryBatches, TableRef, WriteBigQueryBatches, is_table, refused_rows,
                                 table_schema)
from transforms.features import ApplyFeatures
from transforms.inference import Predict, PredictionColumns
from transforms.profile import ProfileRun
from transforms.sinks import WriteBatches
from transforms.sources import ReadRecordBatches, peek_schema
from transforms.validation import DEAD_LETTERS, ValidateRows

DEFAULT_KEY = 'row_id'
DEAD_LETTER_SCHEMA = dl.SCHEMA.append(pa.field('run_id', pa.string()))
# The run's input and prediction statistics, beside the predictions; the report is drawn from it.
PROFILE_FILE = 'profile.json'
# In BigQuery, dead letters also carry when they were written: the table is
# partitioned by it, and a re-run replaces rows written before it started.
BIGQUERY_DEAD_LETTER_SCHEMA = DEAD_LETTER_SCHEMA.append(pa.field('rejected_at', pa.timestamp('us', tz='UTC')))


@dataclasses.dataclass
class PipelineOutputs:
  """The job's PCollections, for tests and callers that extend the graph."""
  predictions: beam.PCollection  # RecordBatches of `columns.schema`
  dead_letters: beam.PCollection  # RecordBatches of DEAD_LETTER_SCHEMA
  prediction_files: beam.PCollection  # final file names, or Beam's BigQuery WriteResult
  dead_letter_files: beam.PCollection
  columns: PredictionColumns
  profile: Optional[beam.PCollection] = None  # one dict (transforms.profile.ProfileRun), when --report
  bigquery_input: Optional[bqp.BigQueryInput] = None


def run_directory(base: str, run_id: str) -> str:
  """Where one run's files go: BASE/RUN_ID. (Not a Hive-style `run_id=` folder:
  readers would then see run_id twice, as a partition and as a column.)"""
  return FileSystems.join(base.rstrip('/'), run_id)


def _passthrough_fields(opts: BatchInferenceOptions,
                        bq_input: Optional[bqp.BigQueryInput] = None) -> tuple[pa.Field, ...]:
  """Passthrough columns keep the type they have in the input table or the first input file."""
  if not opts.passthrough:
    return ()
  if bq_input is not None:
    return tuple(bq_input.schema.field(c).with_nullable(True) for c in opts.passthrough)
  schema = peek_schema(opts.input, file_format=opts.input_format, columns=opts.passthrough)
  missing = [c for c in opts.passthrough if c not in schema.names]
  if missing:
    raise ValueError(f'--passthrough_columns {missing} are not in {opts.input} (it has {schema.names})')
  return tuple(pa.field(c, schema.field(c).type) for c in opts.passthrough)


def _stamp_run_id(letters: pa.RecordBatch, run_id: str) -> pa.RecordBatch:
  return letters.append_column('run_id', pa.array([run_id] * letters.num_rows, pa.string()))


def bigquery_input(opts: BatchInferenceOptions, bundle: ModelBundle, project: Optional[str]) -> bqp.BigQueryInput:
  """Checks a BigQuery input (saving a query's result first) and returns what to read."""
  home = TableRef.parse(opts.input).project if opts.input else (opts.bq_temp_dataset.split('.')[0]
                                                              if '.' in opts.bq_temp_dataset else None)
  bq = bqp.client(project or home)
  bytes_processed = None
  if opts.input_query:
    parameters = [bqp.parse_parameter(p) for p in opts.query_parameter or ()]
    table, bytes_processed = bqp.materialize_query(bq, opts.input_query, parameters,
                                                   temp_dataset=opts.bq_temp_dataset, run_id=opts.run_id)
  else:
    table = TableRef.parse(opts.input)
  schema = bqp.check_input_table(bq, table, bundle.features, key_column=opts.key_column, passthrough=opts.passthrough)
  return bqp.BigQueryInput(table, schema, bytes_processed)


def _read(pipeline: beam.Pipeline, opts: BatchInferenceOptions, bq_input: Optional[bqp.BigQueryInput],
          needed: list[str]):
  if bq_input is not None:
    return pipeline | 'Read' >> ReadBigQueryBatches(
        bq_input.table, bq_input.schema, row_restriction=opts.input_filter, batch_size=opts.read_batch_size,
        temp_dataset=opts.bq_temp_dataset)
  return pipeline | 'Read' >> ReadRecordBatches(
      opts.input, file_format=opts.input_format, batch_size=opts.read_batch_size, columns=needed)


def _write_json(value: dict, path: str) -> None:
  """Writes one small JSON file. A plain write, not a sharded file sink: there is one element, and
  a retried bundle rewrites the same file (ten fewer steps, each with its own start-up)."""
  with FileSystems.create(path) as f:
    f.write(json.dumps(value).encode('utf-8'))


def _stamp_rejected_at(letters: pa.RecordBatch) -> pa.RecordBatch:
  now = datetime.datetime.now(datetime.timezone.utc)
  return letters.append_column('rejected_at', pa.array([now] * letters.num_rows, pa.timestamp('us', tz='UTC')))


@dataclasses.dataclass(frozen=True)
class _Target:
  """Where one of the job's outputs goes, and how it is laid out there."""
  uri: str  # bq://PROJECT.DATASET.TABLE, or a base folder for files
  schema: pa.Schema
  descriptions: dict[str, str]  # column descriptions, for a table
  partition_field: str  # the timestamp column a table is partitioned by
  dictionary_columns: Optional[list[str]] = None  # for Parquet files; None: every column

  @property
  def is_table(self) -> bool:
    return is_table(self.uri)


def _targets(opts: BatchInferenceOptions, columns: PredictionColumns) -> tuple[_Target, _Target]:
  """The predictions' and the dead letters' targets."""
  dead = opts.dead_letter_target
  return (_Target(opts.output, columns.schema, bqp.prediction_descriptions(columns), 'predicted_at',
                  columns.dictionary_columns),
          _Target(dead, BIGQUERY_DEAD_LETTER_SCHEMA if is_table(dead) else DEAD_LETTER_SCHEMA,
                  bqp.DEAD_LETTER_DESCRIPTIONS, 'rejected_at'))


def bigquery_outputs(opts: BatchInferenceOptions, columns: PredictionColumns) -> list[tuple[TableRef, dict, str]]:
  """The bq:// outputs of the job: (table, BigQuery schema, the timestamp column it is partitioned by)."""
  return [(TableRef.parse(t.uri), table_schema(t.schema, t.descriptions), t.partition_field)
          for t in _targets(opts, columns) if t.is_table]


def _write(batches: beam.PCollection, label: str, target: _Target, directory: Optional[str], base_name: str, *,
           opts: BatchInferenceOptions, file_format: str):
  """Writes to the target's table, or to files DIRECTORY/BASE_NAME-*."""
  if target.is_table:
    return batches | label >> WriteBigQueryBatches(
        TableRef.parse(target.uri), table_schema(target.schema, target.descriptions),
        partition_field=target.partition_field, method=opts.bq_write_method)
  return batches | label >> WriteBatches(FileSystems.join(directory, base_name), target.schema,
                                         file_format=file_format, dictionary_columns=target.dictionary_columns)


def build_pipeline(pipeline: beam.Pipeline, opts: BatchInferenceOptions,
                   bundle: Optional[ModelBundle] = None, bq_input: Optional[bqp.BigQueryInput] = None, *,
                   output_dir: Optional[str] = None, dead_letter_dir: Optional[str] = None,
                   model_handler: Optional[SavedModelHandler] = None) -> PipelineOutputs:
  """Adds the job to `pipeline`. Sets `opts.run_id` when it is empty.

  A BigQuery input is checked (and a query's result saved) here unless the
  caller did it already and passes `bq_input`. `output_dir` and
  `dead_letter_dir` replace the run's file folders (OUTPUT/RUN_ID,
  DEAD_LETTER/RUN_ID), e.g. with the staging folders that `pipelines.run`
  publishes; they do not apply to bq:// tables. `model_handler` replaces the
  bundle's SavedModel handler (same contract: float32 feature matrices in, a
  row of outputs per row out), so a benchmark can serve another model through
  the same read, validation, features, batching and writes.
  """
  opts.validate_flags()
  opts.run_id = opts.run_id or new_run_id()
  bundle = bundle or ModelBundle.load(opts.model)
  spec = bundle.features
  if opts.reads_bigquery and bq_input is None:
    bq_input = bigquery_input(opts, bundle, pipeline.options.view_as(GoogleCloudOptions).project)
  key_name = opts.key_column or DEFAULT_KEY
  columns = PredictionColumns(bundle.outputs, key_name, _passthrough_fields(opts, bq_input), bundle.name,
                              bundle.version, opts.run_id)
  needed = list(dict.fromkeys(spec.columns + ([opts.key_column] if opts.key_column else []) + opts.passthrough))

  read = _read(pipeline, opts, bq_input, needed)
  validated = read['batches'] | 'Validate' >> ValidateRows(spec, key_column=opts.key_column)
  pairs = validated.valid | 'Features' >> ApplyFeatures(spec)
  handler = model_handler or SavedModelHandler(
      bundle.saved_model_path, signature=bundle.outputs.signature, output_key=bundle.outputs.output_key,
      min_batch_rows=opts.min_batch_rows, max_batch_rows=opts.max_batch_rows,
      share_across_processes=opts.share_model(), device=opts.device)
  predict = Predict(handler, columns)
  if opts.inference_accelerator:
    # Only the predict step asks for the GPU; reading and features stay on plain workers
    # where the runner fits machines to steps (Dataflow right fitting).
    predict = predict.with_resource_hints(accelerator=opts.inference_accelerator)
  predicted = pairs | 'Predict' >> predict

  dead_letters = (
      (read[DEAD_LETTERS], validated[DEAD_LETTERS], predicted[DEAD_LETTERS])
      | 'AllDeadLetters' >> beam.Flatten()
      | 'StampRunId' >> beam.Map(_stamp_run_id, opts.run_id))

  def folder(target: _Target, override: Optional[str]) -> Optional[str]:
    return None if target.is_table else override or run_directory(target.uri, opts.run_id)

  prediction_target, dead_target = _targets(opts, columns)
  out_dir = folder(prediction_target, output_dir)
  prediction_files = _write(predicted['predictions'], 'WritePredictions', prediction_target, out_dir, 'predictions',
                            opts=opts, file_format=opts.output_format)
  if prediction_target.is_table and opts.bq_write_method != 'FILE_LOADS':  # rows BigQuery refused: dead letters too
    refused = prediction_files.failed_rows_with_errors | 'RefusedRows' >> beam.Map(
        refused_rows, key_name=key_name, run_id=opts.run_id)
    dead_letters = (dead_letters, refused) | 'WithRefusedRows' >> beam.Flatten()
  if dead_target.is_table:
    dead_letters = dead_letters | 'StampRejectedAt' >> beam.Map(_stamp_rejected_at)
  dead_letter_files = _write(dead_letters, 'WriteDeadLetters', dead_target, folder(dead_target, dead_letter_dir),
                             'dead_letters', opts=opts, file_format='jsonl')
  profile = None
  if opts.report:
    profile = (read['batches'], predicted['predictions']) | 'Profile' >> ProfileRun(spec)
    if not prediction_target.is_table:  # the report lives beside file outputs
      _ = profile | 'WriteProfile' >> beam.Map(_write_json, path=FileSystems.join(out_dir, PROFILE_FILE))
  return PipelineOutputs(predicted['predictions'], dead_letters, prediction_files, dead_letter_files, columns,
                         profile, bq_input)
