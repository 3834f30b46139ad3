"""Benchmark input: the example penguins resampled with noise to any number of rows, as Parquet.

Rows keep the example's gaps (missing measurements, missing sex), so every
variant does the same validation work and rejects the same rows.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from models.examples.penguins import train

# Rows per input file: a run of N rows reads ceil(N / ROWS_PER_FILE) files, so
# multi-process runners have files to spread across processes.
ROWS_PER_FILE = 250_000
MANIFEST = 'manifest.json'
_NUMERIC = ('bill_length_mm', 'bill_depth_mm', 'flipper_length_mm', 'body_mass_g')


def _example() -> pa.Table:
  table = pcsv.read_csv(train.EXAMPLE_DATA, convert_options=pcsv.ConvertOptions(
      strings_can_be_null=True, column_types={c: pa.float64() for c in _NUMERIC}))
  return table.drop_columns(['species', 'year'])


def required_columns(spec) -> list[str]:
  return [f.name for f in spec.features if f.required]


def make_dataset(directory: str, rows: int, *, seed: int = 0, rows_per_file: int = ROWS_PER_FILE) -> dict:
  """Writes `rows` resampled rows as Parquet files under `directory`, once.

  Returns the manifest (rows, files, rows with a missing required value); an
  existing dataset with the same manifest is reused.
  """
  manifest_path = os.path.join(directory, MANIFEST)
  want = {'rows': rows, 'seed': seed, 'rows_per_file': rows_per_file}
  if os.path.exists(manifest_path):
    with open(manifest_path, encoding='utf-8') as f:
      manifest = json.load(f)
    if all(manifest.get(k) == v for k, v in want.items()):
      return manifest
  os.makedirs(directory, exist_ok=True)
  example = _example()
  required = required_columns(train.FEATURES)
  rng = np.random.default_rng(seed)
  files, incomplete = [], 0
  for start in range(0, rows, rows_per_file):
    n = min(rows_per_file, rows - start)
    sample = example.take(pa.array(rng.integers(0, example.num_rows, n)))
    for name in _NUMERIC:  # 2% noise keeps values realistic and rows distinct
      values = sample.column(name).combine_chunks()
      noise = 1 + rng.normal(0, 0.02, n)
      sample = sample.set_column(sample.schema.get_field_index(name), name, pc.multiply(values, pa.array(noise)))
    sample = sample.add_column(0, 'id', pa.array(np.arange(start, start + n, dtype=np.int64)))
    missing = np.zeros(n, dtype=bool)
    for name in required:
      missing |= sample.column(name).is_null().to_numpy(zero_copy_only=False)
    incomplete += int(missing.sum())
    path = os.path.join(directory, f'penguins-{len(files):05d}.parquet')
    pq.write_table(sample, path, row_group_size=64 * 1024)
    files.append(path)
  manifest = {**want, 'files': len(files), 'incomplete_rows': incomplete, 'complete_rows': rows - incomplete}
  with open(manifest_path, 'w', encoding='utf-8') as f:
    json.dump(manifest, f, indent=2)
  return manifest
