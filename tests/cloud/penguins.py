"""The example penguins as typed columns with an id, the shape a warehouse table has."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from models.penguins import train

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
