"""The plan of one attempt of a run: what the launcher resolved, and all `build_pipeline` builds from.

`pipelines.launcher.resolve` makes it, doing every piece of I/O the job needs
before it starts; the graph (`pipelines.graph.batch_inference`) and its final
steps read it and do no I/O to build. The input and both outputs are objects
that know how to read, write and publish themselves (`FileInput` or
`BigQueryInput`; a `transforms.destination.Destination` each), so nothing here
asks which kind they are.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Optional, Union

from models.bundle import ModelBundle
from models.inference import PredictionColumns
from pipelines.graph import gate as gate_
from transforms.bigquery.checks import BigQueryInput
from transforms.destination import Destination
from transforms.files import publish
from transforms.files import scored_keys as incremental_
from transforms.files.read import FileInput
from transforms.images.source import ImageFiles
from transforms.rows import dead_letters as dead_letters_
from transforms.rows import duplicate_keys
from transforms.text.document_files import DocumentFiles

Source = Union[FileInput, BigQueryInput, ImageFiles, DocumentFiles]


@dataclasses.dataclass(frozen=True)
class ModelSettings:
  """How the predict step batches and places the model (the flags of the same names)."""
  min_batch_rows: int = 1
  max_batch_rows: int = 8192
  share_across_processes: bool = True
  device: str = 'auto'
  inference_accelerator: Optional[str] = None  # a Dataflow resource hint for the predict step alone
  threads: Optional[int] = None  # --model_threads; None: the cores each of `worker_processes` owns
  worker_processes: Optional[int] = None  # sharing a machine's cores; None: one per core
  spare_core: bool = True  # the model leaves a core to the job's own work; not for image and text models

  @property
  def handler_arguments(self) -> dict[str, Any]:
    return dict(min_batch_rows=self.min_batch_rows, max_batch_rows=self.max_batch_rows,
                share_across_processes=self.share_across_processes, device=self.device, threads=self.threads,
                worker_processes=self.worker_processes, spare_core=self.spare_core)


@dataclasses.dataclass(frozen=True)
class JobPlan:
  """Everything the launcher resolved for one attempt of a run."""
  run_id: str
  attempt: str
  started_at: datetime.datetime
  bundle: ModelBundle
  columns: PredictionColumns
  source: str  # the input, as the summary names it
  input: Source
  predictions: Destination
  dead_letters: Destination
  records: str  # base folder of the run's summary and report: RECORDS/RUN_ID/
  runner: str
  read_batch_size: int = 4096
  key_column: Optional[str] = None
  passthrough: tuple[str, ...] = ()
  model: ModelSettings = ModelSettings()
  challenger: Optional[ModelBundle] = None  # --challenger: scores the same rows, compared, never published
  segment_column: Optional[str] = None  # splits the challenger comparison
  gate: tuple[gate_.Threshold, ...] = ()  # --gate: thresholds checked before publishing
  report: bool = True  # --report: profile the run and render report.html
  max_rejected_fraction: float = dead_letters_.MAX_REJECTED_FRACTION  # --max_rejected_fraction
  # --on_duplicate_key, with --key_column: what a key on several rows gets (None: keys are generated, unique).
  duplicates: Optional[duplicate_keys.DuplicatePolicy] = None
  manifest: Optional[dict] = None  # what the run reads and runs (pipelines.graph.manifest), written beside the summary
  incremental: Optional[incremental_.Incremental] = None  # --only_unscored

  @property
  def record_folder(self) -> str:
    """This attempt's folder for the report and profile (beside file predictions)."""
    return publish.attempt_folder(self.records, self.run_id, self.attempt)

  @property
  def outputs(self) -> tuple[Destination, Destination]:
    return self.predictions, self.dead_letters

  @property
  def bases(self) -> list[str]:
    """The folders holding run folders of this run: file outputs elsewhere, then the records last
    (their pointer is the one `status` and the launcher read, so it is switched last)."""
    folders = [d.run_base for d in self.outputs if d.run_base is not None] + [self.records.rstrip('/')]
    return [f for f in dict.fromkeys(folders) if f != folders[-1]] + [folders[-1]]

  @property
  def columns_read(self) -> list[str]:
    """The input columns the job reads: the features of both models, the key, passthrough, segment and the
    order that keeps one row of a repeated key."""
    challenger = self.challenger.features.columns if self.challenger else []
    segment = [self.segment_column] if self.challenger and self.segment_column else []
    order = [self.duplicates.column] if self.duplicates is not None and self.duplicates.column else []
    return list(dict.fromkeys(self.bundle.features.columns + ([self.key_column] if self.key_column else [])
                              + list(self.passthrough) + challenger + segment + order))
