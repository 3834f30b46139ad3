"""The batch-inference job graph: read → validate → deduplicate → features → predict → write → finish.

The features step of an image model reads and decodes each row's image.

`build_pipeline` only builds, from a plan the launcher resolved
(`pipelines.launcher.resolve.resolve`), with no I/O; `pipelines.run` runs it. Tests build
the same graph and assert on the PCollections it returns. Each step holds its own
options (`pipelines.graph.steps`), and each output writes itself (its destination).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import apache_beam as beam
import pyarrow as pa

from models.handlers.base import MatrixModelHandler
from models.inference import PredictionColumns
from pipelines.graph.plan import JobPlan
from pipelines.graph.steps import DeduplicateKeys, Features, ReadInput, WritePredictions, last_steps, predictor
from transforms.destination import WRITTEN
from transforms.rows.dead_letters import DEAD_LETTERS, REJECTED_AT, RouteDeadLetters
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


def build_pipeline(pipeline: beam.Pipeline, plan: JobPlan, *,
                   model_handler: Optional[MatrixModelHandler] = None) -> PipelineOutputs:
  """Adds the job to `pipeline`, from a resolved plan alone; does no I/O.

  `model_handler` replaces the handler the bundle's format chooses (`steps.predictor`).
  """
  read = pipeline | 'Read' >> ReadInput(plan)
  validated = read['batches'] | 'Validate' >> ValidateRows(
      plan.bundle.features, key_column=plan.key_column, integer_key=pa.types.is_integer(plan.columns.key_type))
  unique = validated.valid | 'DeduplicateKeys' >> DeduplicateKeys(plan)
  prepared = unique['batches'] | 'Features' >> Features(plan)
  predicted = prepared['inputs'] | 'Predict' >> predictor(plan, model_handler)
  written = predicted['predictions'] | 'WritePredictions' >> WritePredictions(plan)
  rejected = ((read[DEAD_LETTERS], validated[DEAD_LETTERS], unique[DEAD_LETTERS], prepared[DEAD_LETTERS],
               predicted[DEAD_LETTERS])
              | 'Rejected' >> beam.Flatten())
  refused = [written[DEAD_LETTERS]] if DEAD_LETTERS in written else []  # rows the destination refused
  routed = (rejected, *refused) | 'WriteDeadLetters' >> RouteDeadLetters(
      plan.run_id, plan.dead_letters.write(), rejected_at=REJECTED_AT in plan.dead_letters.schema.names)
  finished = last_steps(plan, read, predicted, written, routed, rejected, unique.get('found'))
  return PipelineOutputs(predicted['predictions'], routed['dead_letters'], written[WRITTEN], routed['written'],
                         plan.columns, finished['counts'], finished['summary'], finished['profile'])
