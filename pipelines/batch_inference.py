"""The batch-inference job graph: read → validate → features → predict → write.

`build_pipeline` only builds; `pipelines.run` runs it. Tests build the same
graph and assert on the PCollections it returns.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from models.bundle import ModelBundle
from models.handler import SavedModelHandler
from pipelines.options import BatchInferenceOptions, new_run_id
from transforms import dead_letters as dl
from transforms.features import ApplyFeatures
from transforms.inference import Predict, PredictionColumns
from transforms.sinks import WriteBatches
from transforms.sources import ReadRecordBatches, peek_schema
from transforms.validation import DEAD_LETTERS, ValidateRows

DEFAULT_KEY = 'row_id'
DEAD_LETTER_SCHEMA = dl.SCHEMA.append(pa.field('run_id', pa.string()))


@dataclasses.dataclass
class PipelineOutputs:
  """The job's PCollections, for tests and callers that extend the graph."""
  predictions: beam.PCollection  # RecordBatches of `columns.schema`
  dead_letters: beam.PCollection  # RecordBatches of DEAD_LETTER_SCHEMA
  prediction_files: beam.PCollection  # final file names
  dead_letter_files: beam.PCollection
  columns: PredictionColumns


def run_directory(base: str, run_id: str) -> str:
  """Where one run's files go: BASE/RUN_ID. (Not a Hive-style `run_id=` folder:
  readers would then see run_id twice, as a partition and as a column.)"""
  return FileSystems.join(base.rstrip('/'), run_id)


def _passthrough_fields(opts: BatchInferenceOptions) -> tuple[pa.Field, ...]:
  """Passthrough columns keep the type they have in the first input file."""
  if not opts.passthrough:
    return ()
  schema = peek_schema(opts.input, file_format=opts.input_format, columns=opts.passthrough)
  missing = [c for c in opts.passthrough if c not in schema.names]
  if missing:
    raise ValueError(f'--passthrough_columns {missing} are not in {opts.input} (it has {schema.names})')
  return tuple(pa.field(c, schema.field(c).type) for c in opts.passthrough)


def _stamp_run_id(letters: pa.RecordBatch, run_id: str) -> pa.RecordBatch:
  return letters.append_column('run_id', pa.array([run_id] * letters.num_rows, pa.string()))


def build_pipeline(pipeline: beam.Pipeline, opts: BatchInferenceOptions,
                   bundle: Optional[ModelBundle] = None) -> PipelineOutputs:
  """Adds the job to `pipeline`. Sets `opts.run_id` when it is empty."""
  opts.validate_flags()
  opts.run_id = opts.run_id or new_run_id()
  bundle = bundle or ModelBundle.load(opts.model)
  spec = bundle.features
  key_name = opts.key_column or DEFAULT_KEY
  columns = PredictionColumns(bundle.outputs, key_name, _passthrough_fields(opts), bundle.name, bundle.version,
                              opts.run_id)
  needed = list(dict.fromkeys(spec.columns + ([opts.key_column] if opts.key_column else []) + opts.passthrough))

  read = pipeline | 'Read' >> ReadRecordBatches(
      opts.input, file_format=opts.input_format, batch_size=opts.read_batch_size, columns=needed)
  validated = read.batches | 'Validate' >> ValidateRows(spec, key_column=opts.key_column)
  pairs = validated.valid | 'Features' >> ApplyFeatures(spec)
  handler = SavedModelHandler(
      bundle.saved_model_path, signature=bundle.outputs.signature, output_key=bundle.outputs.output_key,
      min_batch_rows=opts.min_batch_rows, max_batch_rows=opts.max_batch_rows,
      share_across_processes=opts.share_model())
  predicted = pairs | 'Predict' >> Predict(handler, columns)

  dead_letters = (
      (read[DEAD_LETTERS], validated[DEAD_LETTERS], predicted[DEAD_LETTERS])
      | 'AllDeadLetters' >> beam.Flatten()
      | 'StampRunId' >> beam.Map(_stamp_run_id, opts.run_id))
  out_dir = run_directory(opts.output, opts.run_id)
  dead_dir = run_directory(opts.dead_letter or opts.output, opts.run_id)
  prediction_files = predicted['predictions'] | 'WritePredictions' >> WriteBatches(
      FileSystems.join(out_dir, 'predictions'), columns.schema, file_format=opts.output_format)
  dead_letter_files = dead_letters | 'WriteDeadLetters' >> WriteBatches(
      FileSystems.join(dead_dir, 'dead_letters'), DEAD_LETTER_SCHEMA, file_format='jsonl')
  return PipelineOutputs(predicted['predictions'], dead_letters, prediction_files, dead_letter_files, columns)
