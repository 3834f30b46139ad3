"""The plan of one attempt of a run: what the launcher resolved, and all `build_pipeline` builds from.

`pipelines.launcher.resolve` makes it, doing every piece of I/O the job needs
before it starts; the graph (`pipelines.graph.batch_inference`) and its final
steps read it and do no I/O to build.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Optional

import pyarrow as pa

from models.bundle import ModelBundle
from models.inference import PredictionColumns
from transforms.bigquery import checks as bqp
from pipelines.graph import gate as gate_
from transforms.files import scored_keys as incremental_
from transforms.postgres import publish as pgpub
from transforms.files import publish
from transforms.bigquery.tables import TableRef, is_table
from transforms.postgres.tables import is_database

# Under --temp_location: the Parquet files a table output is loaded from, TEMP/PARQUET_STAGING/RUN_ID/ATTEMPT/.
PARQUET_STAGING = 'batch-inference'


@dataclasses.dataclass(frozen=True)
class Destination:
  """Where one of the job's outputs goes, and how it is laid out there."""
  uri: str  # bq://PROJECT.DATASET.TABLE, or the base folder of file outputs
  schema: pa.Schema
  descriptions: dict[str, str]  # column descriptions, for a table
  partition_field: str  # the timestamp column a table is partitioned by
  folder: Optional[str]  # this attempt's files: BASE/RUN_ID/ATTEMPT, or a table's staged Parquet; None: streamed
  dictionary_columns: Optional[tuple[str, ...]] = None  # for Parquet files; None: every column

  @property
  def is_table(self) -> bool:
    return is_table(self.uri)

  @property
  def table(self) -> TableRef:
    return TableRef.parse(self.uri)

  @property
  def is_database(self) -> bool:
    """A PostgreSQL or Cloud SQL table (`JobPlan.database` says how it is written)."""
    return is_database(self.uri)

  @property
  def loads_parquet(self) -> bool:
    """A table filled by one load job from Parquet files, then published atomically."""
    return self.is_table and self.folder is not None

  @property
  def streams_rows(self) -> bool:
    """A table whose rows the job streams in as they are predicted (--bq_write_method)."""
    return self.is_table and self.folder is None


@dataclasses.dataclass(frozen=True)
class JobPlan:
  """Everything the launcher resolved for one attempt of a run."""
  run_id: str
  attempt: str
  started_at: datetime.datetime
  bundle: ModelBundle
  columns: PredictionColumns
  source: str  # the input, as the summary names it
  predictions: Destination
  dead_letters: Destination
  records: str  # base folder of the run's summary and report: RECORDS/RUN_ID/
  runner: str
  project: Optional[str] = None  # billing project of BigQuery calls
  bigquery_input: Optional[bqp.BigQueryInput] = None
  parquet_base: Optional[str] = None  # TEMP/PARQUET_STAGING, when a table is loaded from Parquet files
  challenger: Optional[ModelBundle] = None  # --challenger: scores the same rows, compared, never published
  gate: tuple[gate_.Threshold, ...] = ()  # --gate: thresholds checked before publishing
  manifest: Optional[dict] = None  # what the run reads and runs (pipelines.graph.manifest), written beside the summary
  incremental: Optional[incremental_.Incremental] = None  # --only_unscored
  database: Optional[pgpub.DatabaseOutput] = None  # a PostgreSQL / Cloud SQL --output

  @property
  def record_folder(self) -> str:
    """This attempt's folder for the report and profile (beside file predictions)."""
    return publish.attempt_folder(self.records, self.run_id, self.attempt)

  @property
  def bases(self) -> list[str]:
    """The folders holding run folders of this run: file outputs elsewhere, then the records last
    (their pointer is the one `status` and the launcher read, so it is switched last)."""
    folders = [d.uri for d in (self.predictions, self.dead_letters) if not d.is_table and not d.is_database]
    folders += [self.records]
    folders = [f.rstrip('/') for f in folders]
    return [f for f in dict.fromkeys(folders) if f != folders[-1]] + [folders[-1]]

  @property
  def parquet_staging(self) -> list[str]:
    """The base folder of the Parquet files tables are loaded from, if any: BASE/RUN_ID/ATTEMPT/."""
    return [self.parquet_base] if self.parquet_base else []

