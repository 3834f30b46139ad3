"""Property-based tests of the file readers: whatever bytes a file holds, every
record ends up either in a row batch or in the dead letters, at its position,
or the file fails as a whole with an error that names it."""

import csv
import io
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystem import FileMetadata
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.rows import dead_letters as dl
from transforms.rows.dead_letters import Rejected
from transforms.files.readers import read_file
from transforms.files.read import FILES, _ReadFileFn

CSV_NULLS = set(pcsv.ConvertOptions().null_values)  # pyarrow reads these as missing, in text columns too
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
COLUMNS = ['id', 'island', 'bill_length_mm', 'note']

# Cell text as it comes in real files: numbers, numbers with junk, blanks,
# special floats, unicode, very long strings, separators and quotes.
cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from(['', ' ', 'NaN', 'inf', '-Infinity', 'null', 'None', '1e400', '3,5', '"', 'Torgersen', '零']),
    st.text(alphabet=st.characters(blacklist_categories=('Cs',), blacklist_characters='\r\n\x00'), max_size=20),
    st.integers(2000, 20000).map(lambda n: 'a ,"ü' * n),
)


def _collect(items) -> tuple[list[pa.RecordBatch], list[pa.RecordBatch]]:
  batches, letters = [], []
  for item in items:
    (letters if isinstance(item, Rejected) else batches).append(item.letters if isinstance(item, Rejected) else item)
  return batches, letters


def _positions(batches, letters) -> tuple[list[int], list[int]]:
  rows = [r for b in batches for r in b.column(dl.ROW).to_pylist()]
  rejected = [r for b in letters for r in b.column('row').to_pylist()]
  return rows, rejected


@st.composite
def csv_files(draw):
  """A CSV file: a header, then lines that are well formed, too short, too long or truncated."""
  lines = []
  for _ in range(draw(st.integers(0, 25))):
    values = draw(st.lists(cells, min_size=len(COLUMNS), max_size=len(COLUMNS)))
    shape = draw(st.sampled_from(['ok', 'ok', 'ok', 'short', 'long']))
    values = values[:2] if shape == 'short' else values + ['extra'] if shape == 'long' else values
    out = io.StringIO()
    csv.writer(out, lineterminator='').writerow(values)
    lines.append(out.getvalue())
  header = ','.join(COLUMNS)
  truncated = draw(st.booleans()) and lines
  text = '\n'.join([header] + lines) + ('' if truncated else '\n')
  return text.encode('utf-8'), lines


@SETTINGS
@given(csv_files(), st.integers(1, 7))
def test_csv__every_line_is_a_row_or_a_dead_letter_at_its_line_number(tmp_path, case, batch_size):
  data, lines = case
  width = len(COLUMNS)
  expected_bad = {n + 2 for n, line in enumerate(lines) if len(next(csv.reader([line]))) != width}
  batches, letters = _collect(read_file(io.BytesIO(data), 'f.csv', 'csv', batch_size=batch_size, columns=COLUMNS))
  rows, rejected = _positions(batches, letters)

  assert sorted(rows + rejected) == list(range(2, len(lines) + 2))  # rows read = kept + rejected
  assert set(rejected) == expected_bad
  assert all(b.num_rows <= batch_size for b in batches)
  for b in letters:
    assert set(b.column('reason_code').to_pylist()) == {dl.UNPARSABLE}
    assert all(r.startswith('malformed CSV line') for r in b.column('reason').to_pylist())
  # Every value arrives as the text that was written, unicode and long strings included.
  for b in batches:
    for row, line_no in zip(b.to_pylist(), b.column(dl.ROW).to_pylist()):
      written = next(csv.reader([lines[line_no - 2]]))
      assert [row[c] for c in COLUMNS] == [None if w in CSV_NULLS else w for w in written]


json_values = st.one_of(
    st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30), st.lists(st.integers(), max_size=3),
    st.integers(5000, 20000).map(lambda n: 'é"' * n))


@st.composite
def jsonl_files(draw):
  """JSON Lines: objects with random values and columns, and lines that are not objects."""
  lines, good = [], []
  for _ in range(draw(st.integers(0, 25))):
    kind = draw(st.sampled_from(['object', 'object', 'object', 'array', 'truncated', 'garbage', 'blank']))
    record = draw(st.dictionaries(st.sampled_from(COLUMNS + ['extra', 'ü']), json_values, max_size=5))
    text = json.dumps(record, ensure_ascii=draw(st.booleans()))
    if kind == 'array':
      text = json.dumps(list(record.values()))
    elif kind == 'truncated':
      text = text[:max(1, len(text) // 2)]
    elif kind == 'garbage':
      text = draw(st.sampled_from(['NaN', '{"a": NaN', 'nul', '}{', "{'a': 1}", '"text"']))
    elif kind == 'blank':
      text = draw(st.sampled_from(['', '   ']))
    lines.append(text)
    good.append(kind == 'object' or (kind == 'truncated' and text.strip() == '{}'))
  return '\n'.join(lines).encode('utf-8'), lines, good


@SETTINGS
@given(jsonl_files(), st.integers(1, 7))
def test_jsonl__every_line_is_a_row_or_a_dead_letter_at_its_line_number(case, batch_size):
  data, lines, good = case
  batches, letters = _collect(read_file(io.BytesIO(data), 'f.jsonl', 'jsonl', batch_size=batch_size))
  rows, rejected = _positions(batches, letters)

  non_blank = [n + 1 for n, line in enumerate(lines) if line.strip()]
  assert sorted(rows + rejected) == non_blank
  assert set(rows) == {n + 1 for n, ok in enumerate(good) if ok}
  assert all(r.startswith('malformed JSON on line') for b in letters for r in b.column('reason').to_pylist())


def _column(draw, kind: str, n: int) -> pa.Array:
  if kind == 'float':
    return pa.array(draw(st.lists(st.one_of(st.none(), st.floats()), min_size=n, max_size=n)), pa.float64())
  if kind == 'string':
    return pa.array(draw(st.lists(st.one_of(st.none(), st.text(max_size=50)), min_size=n, max_size=n)), pa.string())
  return pa.array(draw(st.lists(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)), min_size=n, max_size=n)),
                  pa.int64())


@st.composite
def tables(draw):
  n = draw(st.integers(0, 40))
  kinds = draw(st.lists(st.sampled_from(['float', 'string', 'int']), min_size=1, max_size=4))
  return pa.table({f'c{i}': _column(draw, kind, n) for i, kind in enumerate(kinds)})


@SETTINGS
@given(tables(), st.integers(1, 9))
def test_parquet__reads_back_every_row_in_order_with_its_values(tmp_path, table, batch_size):
  path = tmp_path / 'f.parquet'
  pq.write_table(table, path, row_group_size=max(1, table.num_rows // 3 or 1))
  with open(path, 'rb') as f:
    batches, letters = _collect(read_file(f, str(path), 'parquet', batch_size=batch_size))
  assert not letters
  rows, _ = _positions(batches, [])
  assert rows == list(range(1, table.num_rows + 1))
  got = pa.Table.from_batches(batches, schema=batches[0].schema).drop([dl.SOURCE, dl.ROW]) if batches else None
  if table.num_rows:
    for name in table.column_names:
      want, have = table.column(name).to_pylist(), got.column(name).to_pylist()
      assert [None if isinstance(v, float) and math.isnan(v) else v for v in want] == \
             [None if isinstance(v, float) and math.isnan(v) else v for v in have]


def _read_whole_file(path: str, file_format: str) -> tuple[int, int]:
  """Runs the pipeline's read DoFn over one file; returns (rows, dead letters)."""
  fn = _ReadFileFn(file_format, 16, None)
  rows = rejected = 0
  files = 0
  for item in fn.process(FileMetadata(path, size_in_bytes=len(open(path, 'rb').read()))):
    if getattr(item, 'tag', None) == FILES:
      files += 1
    elif hasattr(item, 'tag'):
      rejected += item.value.num_rows
    else:
      rows += item.num_rows
  assert files == 1, 'a file read to the end is reported once'
  return rows, rejected


@SETTINGS
@given(tables(), st.data())
def test_corrupt_parquet__fails_naming_the_file_or_reads_every_row(tmp_path, table, data):
  path = tmp_path / 'f.parquet'
  pq.write_table(table, path)
  raw = bytearray(path.read_bytes())
  damage = data.draw(st.sampled_from(['truncate', 'flip', 'zero_footer']))
  if damage == 'truncate':
    raw = raw[:data.draw(st.integers(1, len(raw) - 1))]
  elif damage == 'flip':
    for at in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8)):
      raw[at] ^= 0xFF
  else:
    raw[-8:] = bytes(8)
  path.write_bytes(bytes(raw))
  try:
    rows, rejected = _read_whole_file(str(path), 'parquet')
  except ValueError as e:
    assert str(e).startswith(f'cannot read {path} as parquet: ')
    assert 'move the file aside or repair it' in str(e)
  else:  # the damage hit bytes that do not matter (or a value): every row still comes back
    assert (rows, rejected) == (table.num_rows, 0)


@pytest.mark.parametrize('file_format,name', [('csv', 'e.csv'), ('jsonl', 'e.jsonl'), ('parquet', 'e.parquet'),
                                              ('avro', 'e.avro'), ('tfrecord', 'e.tfrecord')])
def test_empty_file__holds_no_rows_and_is_not_an_error(tmp_path, file_format, name):
  path = tmp_path / name
  path.write_bytes(b'')
  assert _read_whole_file(str(path), file_format) == (0, 0)


def test_empty_parquet_file_with_a_schema__holds_no_rows(tmp_path):
  path = tmp_path / 'e.parquet'
  pq.write_table(pa.table({'a': pa.array([], pa.float64())}), path)
  assert _read_whole_file(str(path), 'parquet') == (0, 0)


def test_csv_with_only_a_header_or_blank_lines__holds_no_rows(tmp_path):
  for text in ('a,b\n', 'a,b', '\n\n', 'a,b\n\n\n'):
    batches, letters = _collect(read_file(io.BytesIO(text.encode()), 'f.csv', 'csv', batch_size=4))
    assert sum(b.num_rows for b in batches) == 0 and not letters, text


def test_file_that_disappears_before_reading__fails_naming_it(tmp_path):
  path = tmp_path / 'gone.csv'
  with pytest.raises(ValueError, match=f'cannot read {path} as csv: .*No such file'):
    list(_ReadFileFn('csv', 16, None).process(FileMetadata(str(path), size_in_bytes=10)))


def test_non_finite_floats_survive_reading_for_validation_to_judge(tmp_path):
  path = tmp_path / 'f.parquet'
  pq.write_table(pa.table({'x': [1.0, math.inf, -math.inf, math.nan, None]}), path)
  with open(path, 'rb') as f:
    batches, _ = _collect(read_file(f, str(path), 'parquet', batch_size=10))
  x = batches[0].column('x').to_numpy(zero_copy_only=False)
  assert np.isinf(x[1]) and np.isinf(x[2]) and np.isnan(x[3]) and np.isnan(x[4])


def test_csv_unclosed_quote__rejects_the_record_with_the_lines_it_swallowed():
  data = b'a,b\n1,2\n3,"4\n5,6\n7,8\n'
  batches, letters = _collect(read_file(io.BytesIO(data), 'f.csv', 'csv', batch_size=4, key_column='a'))
  rows, rejected = _positions(batches, letters)
  assert (rows, rejected) == ([2], [3])
  letter = letters[0].to_pylist()[0]
  assert 'a quote that is never closed runs over the next 2 line(s)' in letter['reason']
  assert letter['key'] == '3'  # the key column could still be read
  assert json.loads(letter['record'])['b'] == '4\n5,6\n7,8\n'  # nothing dropped: the text is in the dead letter


def test_csv_stray_quotes_in_unquoted_values__are_text_whatever_the_blocks(monkeypatch):
  import transforms.files.csv_reader as csv_reader
  monkeypatch.setattr(csv_reader, 'CSV_MIN_BLOCK_BYTES', 32)
  monkeypatch.setattr(csv_reader, 'CSV_MAX_RECORD_BYTES', 256)  # quotes never pair up: cut at line breaks past this
  lines = [f'{i},{i % 30}" screen' if i % 50 == 0 else f'{i},plain' for i in range(2000)]
  data = ('id,size\n' + '\n'.join(lines) + '\n').encode()
  batches, letters = _collect(read_file(io.BytesIO(data), 'f.csv', 'csv', batch_size=100))
  assert not letters
  got = [(r[dl.ROW], r['id'], r['size']) for b in batches for r in b.to_pylist()]
  assert got == [(i + 2, str(i), f'{i % 30}" screen' if i % 50 == 0 else 'plain') for i in range(2000)]


def test_csv_line_breaks_inside_quotes__keep_later_rows_at_their_line_numbers():
  data = b'a,b\n0,"x\ny"\n7,8\n'
  batches, letters = _collect(read_file(io.BytesIO(data), 'f.csv', 'csv', batch_size=4))
  assert _positions(batches, letters) == ([2, 4], [])  # RFC 4180: one record, starting on line 2
  assert batches[0].column('b').to_pylist() == ['x\ny', '8']


def test_csv_record_longer_than_a_block__reads():
  long = 'é' * 100_000
  data = f'a,b\n1,"{long}"\n2,3\n'.encode()
  batches, letters = _collect(read_file(io.BytesIO(data), 'f.csv', 'csv', batch_size=1))
  assert not letters and [b.column('b').to_pylist() for b in batches] == [[long], ['3']]


def test_jsonl_integers_beyond_64_bits__are_kept_as_text_not_a_failed_file():
  data = b'[]\n{"id": [9223372036854775808]}\n{}'  # the array line sends the chunk to the line-by-line parser
  batches, letters = _collect(read_file(io.BytesIO(data), 'f.jsonl', 'jsonl', batch_size=4))
  assert _positions(batches, letters) == ([2, 3], [1])
  assert batches[0].column('id').to_pylist()[0] == '[9223372036854775808]'


def _encode(file_format: str, rows: list[dict]) -> bytes:
  """Rows {'x': float, 's': str} as a file of the given format."""
  out = io.BytesIO()
  if file_format == 'avro':
    import fastavro
    schema = {'type': 'record', 'name': 'R', 'fields': [{'name': 'x', 'type': ['null', 'double']},
                                                        {'name': 's', 'type': ['null', 'string']}]}
    fastavro.writer(out, schema, rows)
  elif file_format == 'tfrecord':
    import tensorflow as tf
    from apache_beam.io.tfrecordio import _TFRecordUtil
    for r in rows:
      example = tf.train.Example(features=tf.train.Features(feature={
          'x': tf.train.Feature(float_list=tf.train.FloatList(value=[r['x']])),
          's': tf.train.Feature(bytes_list=tf.train.BytesList(value=[r['s'].encode()]))}))
      _TFRecordUtil.write_record(out, example.SerializeToString())
  elif file_format == 'jsonl':
    out.write(''.join(json.dumps(r) + '\n' for r in rows).encode())
  else:
    out.write(('x,s\n' + ''.join(f'{r["x"]!r},{r["s"]}\n' for r in rows)).encode())
  return out.getvalue()


@SETTINGS
@given(st.sampled_from(['avro', 'tfrecord', 'jsonl', 'csv']),
       st.lists(st.fixed_dictionaries({'x': st.floats(-1e6, 1e6), 's': st.text(alphabet='abcü ', max_size=8)}),
                min_size=1, max_size=20),
       st.data())
def test_damaged_file_of_any_format__rows_or_dead_letters_or_an_error_naming_it(tmp_path, file_format, rows, data):
  raw = bytearray(_encode(file_format, rows))
  changes = 0
  if data.draw(st.booleans()):
    raw = raw[:data.draw(st.integers(1, len(raw) - 1))]
  else:
    for at in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=4)):
      raw[at] = data.draw(st.integers(0, 255))
      changes += 1
  path = tmp_path / f'f.{file_format}'
  path.write_bytes(bytes(raw))
  try:
    got, rejected = _read_whole_file(str(path), file_format)
  except ValueError as e:  # the only way a file may fail: a job-level error that names it
    assert str(e).startswith(f'cannot read {path} as {file_format}: ')
  else:
    if file_format != 'avro':  # a damaged byte can split a line in two, no more; frames cannot multiply
      assert got + rejected <= len(rows) + changes


def test_csv_bytes_that_are_not_utf8__reject_their_line_only():
  data = b'a,b\n1,\xc3\xa9\n3,\x91x\n4,\xe9t\xe9,extra\n5,6\n7,\xc3'  # Latin-1 bytes, a cut multi-byte character
  batches, letters = _collect(read_file(io.BytesIO(data), 'f.csv', 'csv', batch_size=4))
  assert _positions(batches, letters) == ([2, 5], [4, 3, 6])
  reasons = {r['row']: r['reason'] for b in letters for r in b.to_pylist()}
  for line in (3, 6):
    assert reasons[line] == f'malformed CSV line {line}: not UTF-8 text (bytes that are not UTF-8 are shown as U+FFFD)'
  assert reasons[4] == 'malformed CSV line 4: expected 2 columns, got 3'
  assert batches[0].column('b').to_pylist() == ['é', '6']


multiline_cells = st.one_of(cells, st.text(alphabet='ab "\n\r,é', max_size=12),
                            st.sampled_from(['x\ny', '"\n"', '\r\n', 'a,\n"b"\n']))


@SETTINGS
@given(st.lists(st.lists(multiline_cells, min_size=len(COLUMNS), max_size=len(COLUMNS)), max_size=25),
       st.integers(1, 7), st.integers(16, 200))
def test_csv_quoted_line_breaks__every_record_whole_at_the_line_it_starts(monkeypatch, records, batch_size, block):
  """RFC 4180 as csv writers write it: a value may hold line breaks, quotes and commas. Each record is one row,
  whatever block boundary falls inside it, and `__row` is the line it starts on."""
  import transforms.files.csv_reader as csv_reader
  monkeypatch.setattr(csv_reader, 'CSV_MIN_BLOCK_BYTES', block)  # blocks far smaller than records
  out = io.StringIO()
  writer = csv.writer(out)  # Excel's dialect: records end in CRLF, so a lone CR in a value is quoted too
  writer.writerow(COLUMNS)
  starts, line = [], 2
  for values in records:
    starts.append(line)
    before = out.tell()
    writer.writerow(values)
    line += out.getvalue()[before:].count('\n')
  batches, letters = _collect(read_file(io.BytesIO(out.getvalue().encode()), 'f.csv', 'csv', batch_size=batch_size,
                                        columns=COLUMNS))
  assert not letters
  got = [(row[dl.ROW], [row[c] for c in COLUMNS]) for b in batches for row in b.to_pylist()]
  # pyarrow reads a value with no quotes around it that is one of its null markers as missing
  want = [(n, [None if v in CSV_NULLS else v for v in values]) for n, values in zip(starts, records)]
  assert got == want


def test_csv_quoted_line_breaks__200k_records_in_default_blocks():
  n = 200_000
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(['id', 'note'])
  for i in range(n):
    writer.writerow([i, f'line one {i}\nline "two"' if i % 7 == 0 else f'note {i}'])
  data = out.getvalue().encode()
  batches, letters = _collect(read_file(io.BytesIO(data), 'f.csv', 'csv', batch_size=16384))
  ids = np.concatenate([np.asarray(b.column('id').to_pylist(), dtype=np.int64) for b in batches])
  rows = np.concatenate([b.column(dl.ROW).to_numpy() for b in batches])
  assert not letters and np.array_equal(ids, np.arange(n))
  assert np.array_equal(rows, 2 + np.arange(n) + (np.arange(n) + 6) // 7)  # one more line per earlier multi-line note
