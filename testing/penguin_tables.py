"""The example penguins as typed columns with an id, the shape a warehouse table has."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from google.cloud import bigquery

from models.examples.penguins import train
from transforms.bigquery import tables as bq
from transforms.bigquery import read as bqr

KEY = 'penguin_id'
PASSTHROUGH = 'species,year'


def table() -> pa.Table:
  """penguin_id (STRING), the CSV's columns typed (FLOAT64 measures, INT64 year), 344 rows, 2 with nulls."""
  data = pcsv.read_csv(train.EXAMPLE_DATA, convert_options=pcsv.ConvertOptions(
      strings_can_be_null=True, column_types={'year': pa.int64(), 'flipper_length_mm': pa.float64(),
                                              'body_mass_g': pa.float64()}))
  ids = pa.array([f'p{i:04d}' for i in range(data.num_rows)], pa.string())
  return data.add_column(0, KEY, ids)


def write_parquet(prefix: str, parts: int = 2) -> list[str]:
  """Writes the table as `parts` Parquet files under a local or gs:// prefix."""
  data = table()
  size = -(-data.num_rows // parts)
  paths = []
  for i in range(parts):
    path = f'{prefix}/penguins-{i}.parquet'
    sink = pa.BufferOutputStream()
    pq.write_table(data.slice(i * size, size), sink)
    with FileSystems.create(path) as f:
      f.write(sink.getvalue().to_pybytes())
    paths.append(path)
  return paths


def read_predictions(run_dir: str) -> pa.Table:
  """Every prediction file of a run (local or gs://), sorted by key, without the wall-clock column."""
  matches = FileSystems.match([f'{run_dir}/predictions-*.parquet'])[0].metadata_list
  assert matches, f'no prediction files in {run_dir}'
  tables = []
  for m in matches:
    with FileSystems.open(m.path) as f:
      tables.append(pq.read_table(pa.BufferReader(f.read())))
  return pa.concat_tables(tables).sort_by(KEY).drop_columns(['predicted_at'])


def many(rows: int) -> pa.Table:
  """The penguins repeated to `rows` rows, each with its own key."""
  data = table()
  data = pa.concat_tables([data] * -(-rows // data.num_rows)).slice(0, rows)
  return data.set_column(0, KEY, pa.array([f'p{i:07d}' for i in range(rows)], pa.string()))


def load_table(client: bigquery.Client, bucket: str, dataset: str, name: str, data: pa.Table) -> bq.TableRef:
  """A table holding `data`, made by a Parquet load job from the GCS emulator (fast for many rows)."""
  ref = bq.TableRef.parse(f'bq://{dataset}.{name}')
  path = f'gs://{bucket}/{uuid.uuid4().hex[:8]}/{name}.parquet'
  sink = pa.BufferOutputStream()
  pq.write_table(data, sink)
  with FileSystems.create(path) as f:
    f.write(sink.getvalue().to_pybytes())
  fields = [bigquery.SchemaField.from_api_repr(f) for f in bq.table_schema(data.schema)['fields']]
  client.load_table_from_uri(path, ref.dotted, job_config=bigquery.LoadJobConfig(
      source_format=bigquery.SourceFormat.PARQUET, schema=fields)).result()
  return ref


def table_schema(client: bigquery.Client, ref: bq.TableRef, names=None) -> pa.Schema:
  fields = [f.to_api_repr() for f in client.get_table(ref.dotted).schema]
  return bq.arrow_schema([f for f in fields if names is None or f['name'] in names])


def read_session(session: bqr.ReadSession, batch_size: int = 100) -> pa.Table:
  """Every stream of a session through the reading DoFn, without a pipeline."""
  fn = bqr._ReadStreamFn(session, batch_size)  # pylint: disable=protected-access
  fn.setup()
  try:
    batches = [b for stream in session.streams for b in fn.process(stream)]
  finally:
    fn.teardown()
  schema = batches[0].schema if batches else session.schema.append(pa.field(bqr.dl.SOURCE, pa.string())).append(
      pa.field(bqr.dl.ROW, pa.int64()))
  return pa.Table.from_batches(batches, schema)


def read_table(client: bigquery.Client, project: str, ref: bq.TableRef) -> pa.Table:
  """A whole table through the Storage Read API (list_rows pages JSON: slow for many rows)."""
  session = bqr.create_read_session(ref, table_schema(client, ref), project=project)
  return read_session(session, batch_size=65536).drop_columns([bqr.dl.SOURCE, bqr.dl.ROW])
