"""WriteBatches: what a pipeline writes is what a reader reads back, in every output format."""

import datetime
import glob
import json
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that

from transforms.files.write import WriteBatches

SCHEMA = pa.schema([
    pa.field('key', pa.string()), pa.field('label', pa.string()), pa.field('score', pa.float32()),
    pa.field('count', pa.int64()), pa.field('at', pa.timestamp('us', tz='UTC'))])
AT = datetime.datetime(2026, 11, 25, 17, 30, tzinfo=datetime.timezone.utc)
ROWS = [
    {'key': 'a:1', 'label': 'plain', 'score': 0.25, 'count': 1, 'at': AT},
    {'key': 'a:2', 'label': 'with, comma and "quotes"', 'score': 0.5, 'count': None, 'at': AT},
    {'key': 'b:1', 'label': None, 'score': 1.0, 'count': 3, 'at': AT},
    {'key': 'b:2', 'label': 'ünïcode', 'score': -2.0, 'count': 4, 'at': AT},
]
BATCHES = [pa.RecordBatch.from_pylist(ROWS[:2], schema=SCHEMA), pa.RecordBatch.from_pylist([], schema=SCHEMA),
           pa.RecordBatch.from_pylist(ROWS[2:], schema=SCHEMA)]


def _write(tmp_path, file_format: str, batches=BATCHES, num_shards: int = 0, **kwargs) -> list[str]:
  """Runs WriteBatches and returns the files it wrote; asserts they are the names it reported."""
  prefix = str(tmp_path / 'out' / 'predictions')

  def are_the_files_on_disk(names):
    assert names and sorted(names) == sorted(glob.glob(prefix + '-*'))

  with test_pipeline.TestPipeline() as p:
    files = p | beam.Create(batches, reshuffle=False) | WriteBatches(
        prefix, SCHEMA, file_format=file_format, num_shards=num_shards, **kwargs)
    assert_that(files, are_the_files_on_disk)
  found = sorted(glob.glob(prefix + '-*'))
  assert found, 'no files written'
  assert all(f.endswith('.' + file_format) for f in found)
  # Nothing else is left behind: Beam's temporary shards are renamed or removed.
  assert sorted(glob.glob(str(tmp_path / 'out' / '**'), recursive=True)) == sorted(
      [str(tmp_path / 'out') + os.sep] + found)
  return found


def _by_key(rows):
  return sorted(rows, key=lambda r: r['key'])


def test_write_batches__parquet_round_trip_keeps_values_and_types(tmp_path):
  files = _write(tmp_path, 'parquet')
  table = pa.concat_tables([pq.read_table(f) for f in files])
  assert table.schema == SCHEMA
  assert _by_key(table.to_pylist()) == ROWS


def _dictionary_encoded(path: str) -> set[str]:
  row_group = pq.ParquetFile(path).metadata.row_group(0)
  return {row_group.column(i).path_in_schema for i in range(row_group.num_columns)
          if row_group.column(i).has_dictionary_page}


def test_write_batches__parquet_dictionary_encodes_just_the_named_columns(tmp_path):
  files = _write(tmp_path, 'parquet', num_shards=1, dictionary_columns=['label', 'at'])
  assert _dictionary_encoded(files[0]) == {'label', 'at'}
  assert _by_key(pq.read_table(files[0]).to_pylist()) == ROWS


def test_write_batches__parquet_by_default_dictionary_encodes_every_column(tmp_path):
  files = _write(tmp_path, 'parquet', num_shards=1)
  assert _dictionary_encoded(files[0]) == set(SCHEMA.names)


def test_write_batches__jsonl_round_trip_gives_one_object_per_row(tmp_path):
  files = _write(tmp_path, 'jsonl')
  rows = [json.loads(line) for f in files for line in open(f, encoding='utf-8')]
  assert _by_key(rows) == [{**r, 'at': str(AT)} for r in ROWS]


def test_write_batches__csv_round_trip_has_one_header_and_quoted_text(tmp_path):
  files = _write(tmp_path, 'csv', num_shards=1)
  assert len(files) == 1
  with open(files[0], encoding='utf-8') as f:
    text = f.read()
  assert text.splitlines()[0] == 'key,label,score,count,at'
  assert text.count('key,label') == 1
  table = pcsv.read_csv(files[0], convert_options=pcsv.ConvertOptions(
      column_types=SCHEMA, strings_can_be_null=True, quoted_strings_can_be_null=False))
  assert _by_key(table.to_pylist()) == ROWS


def test_write_batches__num_shards_sets_the_number_of_files(tmp_path):
  files = _write(tmp_path, 'jsonl', num_shards=3)
  assert [os.path.basename(f) for f in files] == [f'predictions-0000{i}-of-00003.jsonl' for i in range(3)]
  assert sum(1 for f in files for _ in open(f)) == len(ROWS)


def test_write_batches__unknown_format_is_refused():
  with pytest.raises(ValueError, match="unknown output format 'xlsx'"):
    WriteBatches('out/p', SCHEMA, file_format='xlsx')
