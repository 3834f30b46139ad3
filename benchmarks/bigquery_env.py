"""The BigQuery side of a benchmark run: local emulators, the input tables, a fresh output per run.

The BigQuery variants read and write through the emulators that
testing/emulators.py starts (bqemulator over DuckDB, gcp-storage-emulator),
started once per benchmark run on free 127.0.0.1 ports and stopped at its end.
The input is the same rows the Parquet variants read, loaded once per row
count. Every variant run writes a table of its own: the emulator's MERGE is
quadratic in the size of a target that already holds rows, so reusing a table
across rounds would slow each round more than the last.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pathlib
import shutil
from typing import Optional

import pyarrow.parquet as pq

from benchmarks import emulated
from testing.emulators import BigQueryEmulator, GcsEmulator

PROJECT = 'bench-project'
DATASET = 'bench'
# For Beam's read to keep its temporary table in (see benchmarks/textbook_bq.py).
TEMP_DATASET = 'bench_temp'
BUCKET = 'bench-bucket'


@dataclasses.dataclass(frozen=True)
class Destination:
  """Where one variant run writes.

  Attributes:
    table: the output table, bq://PROJECT.DATASET.TABLE, which does not exist yet.
    temp_location: a gs:// folder for its files.
    temp_dir: where that folder's objects lie on this machine's disk (for the
      time to the first prediction file).
  """
  table: str
  temp_location: str
  temp_dir: str

  @property
  def dotted(self) -> str:
    return self.table[len('bq://'):]


class BigQueryBench:
  """The emulators of one benchmark run, with clients, a bucket and a dataset in them.

  Use as a context manager: the emulators stop, leaving no process, when it exits.
  """

  def __init__(self, work_dir: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery, storage

    root = pathlib.Path(work_dir).resolve()
    shutil.rmtree(root, ignore_errors=True)  # the storage emulator keeps its buckets on disk
    root.mkdir(parents=True)
    self._gcs = GcsEmulator(root)
    self._bigquery: Optional[BigQueryEmulator] = None
    try:
      self._bigquery = BigQueryEmulator(root, project=PROJECT, gcs_root=self._gcs.objects_root)
      # Explicit endpoints rather than the emulator variables: this process's environment stays as it was.
      credentials = AnonymousCredentials()
      self.bq = bigquery.Client(project=PROJECT, credentials=credentials,
                                client_options={'api_endpoint': self._bigquery.rest_url})
      self.gcs = storage.Client(project=PROJECT, credentials=credentials,
                                client_options={'api_endpoint': self._gcs.endpoint})
      self.bucket = self.gcs.create_bucket(BUCKET)
      for dataset in (DATASET, TEMP_DATASET):
        self.bq.create_dataset(f'{PROJECT}.{dataset}')
    except BaseException:
      self.stop()
      raise
    self._loaded: dict[int, str] = {}

  def __enter__(self) -> 'BigQueryBench':
    return self

  def __exit__(self, *unused_exc) -> None:
    self.stop()

  def stop(self) -> None:
    """Stops both emulators and drops the stored objects (gigabytes at 4M rows); their logs stay."""
    if self._bigquery is not None:
      self._bigquery.stop()
    self._gcs.stop()
    shutil.rmtree(self._gcs.data_dir, ignore_errors=True)

  def pids(self) -> list[int]:
    """The emulators' process ids (for their CPU time: they share the machine with the runs)."""
    return [e._process.process.pid for e in (self._bigquery, self._gcs) if e is not None]  # pylint: disable=protected-access

  def environment(self) -> dict[str, str]:
    """Variables for a child run under `python -m benchmarks.emulated`."""
    return emulated.environment(self._bigquery.rest_url, self._bigquery.grpc_endpoint, self._gcs.endpoint, PROJECT)

  def observations(self, data_dir: str, rows: int) -> str:
    """The table holding the Parquet files of `data_dir` (a dataset of `rows` rows), loaded once.

    The files go to Cloud Storage, then one load job takes them all. The schema
    is explicit, in the files' column order: the emulator infers none from
    Parquet and loads columns by position.
    """
    if rows not in self._loaded:
      from google.cloud import bigquery

      from transforms.bigquery.tables import table_schema

      files = sorted(glob.glob(os.path.join(data_dir, '*.parquet')))
      uris = []
      for path in files:
        name = f'observations-{rows}/{os.path.basename(path)}'
        self.bucket.blob(name).upload_from_filename(path)
        uris.append(f'gs://{BUCKET}/{name}')
      fields = table_schema(pq.read_schema(files[0]).remove_metadata())['fields']
      table = f'{PROJECT}.{DATASET}.observations_{rows}'
      config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET,
                                      schema=[bigquery.SchemaField.from_api_repr(f) for f in fields],
                                      write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE)
      self.bq.load_table_from_uri(uris, table, job_config=config).result()
      loaded = self.count(table)
      if loaded != rows:
        raise RuntimeError(f'loading {data_dir} into {table} gave {loaded} rows, not {rows}')
      self._loaded[rows] = f'bq://{table}'
    return self._loaded[rows]

  def destination(self, variant: str, rows: int, round_no: int) -> Destination:
    """A table and a temporary folder of their own for one run of `variant`."""
    name = f'{variant.replace("-", "_")}_{rows}_{round_no}'
    return Destination(table=f'bq://{PROJECT}.{DATASET}.predictions_{name}', temp_location=f'gs://{BUCKET}/tmp/{name}',
                       temp_dir=str(self._gcs.objects_root / BUCKET / 'tmp' / name))

  def count(self, table: str) -> int:
    """Rows in `table` (PROJECT.DATASET.TABLE); 0 if it does not exist."""
    from google.api_core.exceptions import NotFound
    try:
      rows = list(self.bq.query(f'SELECT COUNT(*) AS n FROM `{table}`').result())
    except NotFound:
      return 0
    return int(rows[0]['n'])

  def predicted_rows(self, destination: Destination) -> int:
    return self.count(destination.dotted)

  def discard(self, destination: Destination) -> None:
    """Drops what a run wrote (its tables and files), so the emulators do not grow round after round."""
    for table in (destination.dotted, f'{destination.dotted}_dead_letters'):
      self.bq.delete_table(table, not_found_ok=True)
    prefix = destination.temp_location[len(f'gs://{BUCKET}/'):] + '/'
    for blob in list(self.bucket.list_blobs(prefix=prefix)):
      blob.delete()

