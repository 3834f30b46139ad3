"""Reading real files of every format as RecordBatches, with positions and dead letters."""

import gzip
import json
import os

import apache_beam as beam
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.rows import dead_letters as dl
from transforms.rows.dead_letters import DEAD_LETTERS, Rejected
from transforms.files.readers import infer_format, read_file
from transforms.files.read import ReadRecordBatches, peek_schema

ROWS = [
    {'name': 'ada', 'age': 36, 'score': 1.5},
    {'name': 'bob', 'age': None, 'score': 2.0},
    {'name': 'cy', 'age': 41, 'score': None},
]


def _write_csv(path, text: str) -> str:
  opener = gzip.open if str(path).endswith('.gz') else open
  with opener(path, 'wt') as f:
    f.write(text)
  return str(path)


def _write_jsonl(path, lines) -> str:
  path.write_text(''.join(line + '\n' for line in lines))
  return str(path)


def _write_parquet(path, rows=ROWS) -> str:
  pq.write_table(pa.Table.from_pylist(rows), path)
  return str(path)


def _write_avro(path, rows=ROWS) -> str:
  schema = fastavro.parse_schema({'type': 'record', 'name': 'Row', 'fields': [
      {'name': 'name', 'type': 'string'}, {'name': 'age', 'type': ['null', 'long']},
      {'name': 'score', 'type': ['null', 'double']}]})
  with open(path, 'wb') as f:
    fastavro.writer(f, schema, rows)
  return str(path)


def _example(row: dict) -> bytes:
  import tensorflow as tf
  feature = {'name': tf.train.Feature(bytes_list=tf.train.BytesList(value=[row['name'].encode()]))}
  if row['age'] is not None:
    feature['age'] = tf.train.Feature(int64_list=tf.train.Int64List(value=[row['age']]))
  feature['score'] = tf.train.Feature(float_list=tf.train.FloatList(
      value=[] if row['score'] is None else [row['score']]))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write_tfrecord(path, records) -> str:
  import tensorflow as tf
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record)
  return str(path)


def _read(path: str, file_format: str, batch_size: int = 100, columns=None) -> tuple[list[dict], list[dict]]:
  """All rows and all dead letters of one file, read the way the pipeline reads it."""
  rows, letters = [], []
  with FileSystems.open(path) as f:
    for item in read_file(f, path, file_format, batch_size=batch_size, columns=columns):
      if isinstance(item, Rejected):
        letters += item.letters.to_pylist()
      else:
        rows += item.to_pylist()
  return rows, letters


def _positioned(rows, source, first=1):
  return [{**r, dl.SOURCE: source, dl.ROW: i} for i, r in enumerate(rows, first)]


# Each format

def test_read_parquet__rows_keep_their_types_and_positions(tmp_path):
  path = _write_parquet(tmp_path / 'a.parquet')
  rows, letters = _read(path, 'parquet', batch_size=2)
  assert rows == _positioned(ROWS, path) and not letters


def test_read_avro__rows_keep_their_types_and_positions(tmp_path):
  path = _write_avro(tmp_path / 'a.avro')
  rows, letters = _read(path, 'avro', batch_size=2)
  assert rows == _positioned(ROWS, path) and not letters


def test_read_tfrecord__single_valued_features_become_flat_columns(tmp_path):
  path = _write_tfrecord(tmp_path / 'a.tfrecord', [_example(r) for r in ROWS])
  rows, letters = _read(path, 'tfrecord', batch_size=2)
  assert not letters
  assert [r['name'] for r in rows] == ['ada', 'bob', 'cy']
  assert [r['age'] for r in rows] == [36, None, 41]  # absent feature: null
  assert [r['score'] for r in rows] == [1.5, 2.0, None]  # empty list: null
  assert [r[dl.ROW] for r in rows] == [1, 2, 3]


def test_read_tfrecord__a_record_that_is_not_an_example_is_rejected_alone(tmp_path):
  path = _write_tfrecord(tmp_path / 'a.tfrecord', [_example(ROWS[0]), b'\xff\xff\xff\xff', _example(ROWS[2])])
  rows, letters = _read(path, 'tfrecord')
  assert [(r['name'], r['score'], r[dl.ROW]) for r in rows] == [('ada', 1.5, 1), ('cy', None, 3)]
  assert [(d['row'], d['reason_code'], d['record']) for d in letters] == [(2, 'unparsable', 'ffffffff')]
  assert letters[0]['reason'].startswith('record 2 is not a tf.Example')


@pytest.mark.parametrize('name', ['a.csv', 'a.csv.gz'])
def test_read_csv__every_column_is_text_and_rows_are_line_numbers(tmp_path, name):
  path = _write_csv(tmp_path / name, 'name,age,score\nada,36,1.5\nbob,,2.0\n"c, y",41,\n')
  with FileSystems.open(path) as f:  # Beam's FileSystems undo the .gz
    items = list(read_file(f, path, 'csv', batch_size=100))
  assert [i.schema.field('age').type for i in items] == [pa.string()]
  assert items[0].to_pylist() == [
      {'name': 'ada', 'age': '36', 'score': '1.5', dl.SOURCE: path, dl.ROW: 2},
      {'name': 'bob', 'age': None, 'score': '2.0', dl.SOURCE: path, dl.ROW: 3},
      {'name': 'c, y', 'age': '41', 'score': None, dl.SOURCE: path, dl.ROW: 4},
  ]


def test_read_jsonl__rows_are_line_numbers(tmp_path):
  path = _write_jsonl(tmp_path / 'a.jsonl', [json.dumps(r) for r in ROWS])
  rows, letters = _read(path, 'jsonl')
  assert rows == _positioned(ROWS, path) and not letters


# Bad records

def test_read_csv__malformed_lines_become_dead_letters_and_the_rest_carries_on(tmp_path):
  path = _write_csv(tmp_path / 'a.csv', 'name,age\nada,36\nbob,1,extra\ncy,41\ndee\neve,29\n')
  rows, letters = _read(path, 'csv')
  assert [(r['name'], r[dl.ROW]) for r in rows] == [('ada', 2), ('cy', 4), ('eve', 6)]
  assert [(d['row'], d['record'], d['reason']) for d in letters] == [
      (3, 'bob,1,extra', 'malformed CSV line 3: expected 2 columns, got 3'),
      (5, 'dee', 'malformed CSV line 5: expected 2 columns, got 1')]
  assert all(d['reason_code'] == dl.UNPARSABLE and d['source'] == path and d['stage'] == 'read' for d in letters)


def test_read_csv__line_numbers_stay_right_across_parse_blocks(tmp_path):
  # About 150 KiB: the reader parses it in several blocks, with bad lines in each.
  lines = [f'{i},{"x" * 20}' if i % 7 else f'{i},bad,line' for i in range(2, 6002)]
  path = _write_csv(tmp_path / 'a.csv', 'n,s\n' + '\n'.join(lines) + '\n')
  rows, letters = _read(path, 'csv', batch_size=1000)
  assert all(int(r['n']) == r[dl.ROW] for r in rows)
  assert [d['row'] for d in letters] == [n for n in range(2, 6002) if n % 7 == 0]
  assert len(rows) + len(letters) == 6000


def test_read_jsonl__malformed_lines_become_dead_letters_and_the_rest_carries_on(tmp_path):
  path = _write_jsonl(tmp_path / 'a.jsonl', [
      '{"name": "ada", "age": 36}', '{"name": "bob", "age":', '{"name": "cy", "age": 41}', '[1, 2]', '',
      '{"name": "eve", "age": "unknown"}'])
  rows, letters = _read(path, 'jsonl')
  assert [(r['name'], r[dl.ROW]) for r in rows] == [('ada', 1), ('cy', 3), ('eve', 6)]
  assert [r['age'] for r in rows] == ['36', '41', 'unknown']  # mixed types stay text for validation
  assert [(d['row'], d['record']) for d in letters] == [(2, '{"name": "bob", "age":'), (4, '[1, 2]')]
  assert letters[0]['reason'].startswith('malformed JSON on line 2:')
  assert letters[1]['reason'] == 'malformed JSON on line 4: expected a JSON object, got list'


@pytest.mark.parametrize('file_format', ['csv', 'jsonl', 'parquet'])
def test_read_file__batches_hold_at_most_batch_size_rows(tmp_path, file_format):
  rows = [{'n': i} for i in range(250)]
  path = str(tmp_path / f'a.{file_format}')
  if file_format == 'csv':
    _write_csv(path, 'n\n' + ''.join(f'{i}\n' for i in range(250)))
  elif file_format == 'jsonl':
    _write_jsonl(tmp_path / 'a.jsonl', [json.dumps(r) for r in rows] + ['not json'])  # the line-by-line path
  else:
    _write_parquet(path, rows)
  with FileSystems.open(path) as f:
    batches = [b for b in read_file(f, path, file_format, batch_size=100) if not isinstance(b, Rejected)]
  assert [b.num_rows for b in batches] == [100, 100, 50]
  first = 2 if file_format == 'csv' else 1  # CSV line 1 is the header
  assert [r[dl.ROW] for b in batches for r in b.to_pylist()] == list(range(first, first + 250))


def test_read_file__keeps_only_the_named_columns_in_their_order(tmp_path):
  path = _write_parquet(tmp_path / 'a.parquet')
  rows, _ = _read(path, 'parquet', columns=['score', 'name', 'not_there'])
  assert list(rows[0]) == ['score', 'name', dl.SOURCE, dl.ROW]


# Formats and schemas

@pytest.mark.parametrize('path, expected', [
    ('data/a.parquet', 'parquet'), ('a.PQ', 'parquet'), ('gs://b/x.v2/a.csv', 'csv'), ('a.csv.gz', 'csv'),
    ('a.jsonl.bz2', 'jsonl'), ('a.json', 'jsonl'), ('a.ndjson', 'jsonl'), ('a.tfrecords', 'tfrecord'),
    ('a.tfrecord.gz', 'tfrecord'), ('a.avro', 'avro'),
])
def test_infer_format__from_the_extension_ignoring_compression(path, expected):
  assert infer_format(path) == expected


@pytest.mark.parametrize('path', ['data/part-0000', 'a.txt', 'dir.csv/file', 'a.gz'])
def test_infer_format__unknown_extension_says_to_pass_input_format(path):
  with pytest.raises(ValueError, match='--input_format'):
    infer_format(path)


def test_peek_schema__types_of_the_first_matching_file(tmp_path):
  _write_parquet(tmp_path / 'b.parquet', [{'name': 'x', 'age': 1.5}])
  _write_parquet(tmp_path / 'a.parquet')
  schema = peek_schema(str(tmp_path / '*.parquet'), columns=['age', 'name'])
  assert schema.field('age').type == pa.int64()  # from a.parquet, the first in order
  assert schema.names == ['age', 'name', dl.SOURCE, dl.ROW]


def test_peek_schema__skips_unparsable_lines_and_fails_on_no_rows(tmp_path):
  _write_jsonl(tmp_path / 'a.jsonl', ['oops', '{"v": 2.5}'])
  assert peek_schema(str(tmp_path / 'a.jsonl')).field('v').type == pa.float64()
  _write_jsonl(tmp_path / 'b.jsonl', ['oops'])
  with pytest.raises(ValueError, match='no readable rows'):
    peek_schema(str(tmp_path / 'b.jsonl'))
  with pytest.raises(ValueError, match='no files match'):
    peek_schema(str(tmp_path / 'none-*.csv'))


# ReadRecordBatches

def test_read_record_batches__reads_a_glob_of_mixed_formats_and_counts_every_row(tmp_path):
  data = tmp_path / 'in'
  data.mkdir()
  _write_parquet(data / 'p.parquet')
  _write_avro(data / 'v.avro')
  _write_csv(data / 'c.csv.gz', 'name,age,score\nada,36,1.5\nbob,1,2,3\n')
  _write_jsonl(data / 'j.jsonl', ['{"name": "cy", "age": 41, "score": 0.5}', '{broken'])
  _write_tfrecord(data / 't.tfrecord', [_example(ROWS[0])])
  pipeline = test_pipeline.TestPipeline()
  read = pipeline | ReadRecordBatches(str(data / '*'), batch_size=2, columns=['name', 'age'])
  rows = read.batches | 'Rows' >> beam.FlatMap(
      lambda b: [(os.path.basename(s), r, n, a) for s, r, n, a in zip(*(b.column(c).to_pylist() for c in (
          dl.SOURCE, dl.ROW, 'name', 'age')))])
  letters = read[DEAD_LETTERS] | 'Letters' >> beam.FlatMap(
      lambda b: [(os.path.basename(s), r) for s, r in zip(b.column('source').to_pylist(), b.column('row').to_pylist())])
  assert_that(rows, equal_to([
      ('p.parquet', 1, 'ada', 36), ('p.parquet', 2, 'bob', None), ('p.parquet', 3, 'cy', 41),
      ('v.avro', 1, 'ada', 36), ('v.avro', 2, 'bob', None), ('v.avro', 3, 'cy', 41),
      ('c.csv.gz', 2, 'ada', '36'), ('j.jsonl', 1, 'cy', 41), ('t.tfrecord', 1, 'ada', 36)]), label='Rows')
  assert_that(letters, equal_to([('c.csv.gz', 3), ('j.jsonl', 2)]), label='DeadLetters')
  result = pipeline.run()
  result.wait_until_finish()
  counters = {c.key.metric.name: c.committed
              for c in result.metrics().query(MetricsFilter().with_namespace('batch_inference'))['counters']}
  assert counters['rows_read'] == 11 and counters['files_read'] == 5
  assert counters['rows_rejected'] == counters['rejected_unparsable'] == 2


def test_read_record_batches__an_unreadable_file_fails_naming_it(tmp_path):
  (tmp_path / 'a.parquet').write_bytes(b'not parquet at all')
  with pytest.raises(Exception, match=r'cannot read .*a\.parquet as parquet'):
    with test_pipeline.TestPipeline() as p:
      _ = p | ReadRecordBatches(str(tmp_path / '*.parquet'))


def test_read_record_batches__unknown_format_is_refused_up_front():
  with pytest.raises(ValueError, match="unknown input format 'xml'"):
    ReadRecordBatches('a.xml', file_format='xml')
