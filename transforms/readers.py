"""Per-format readers: one open file in, Arrow RecordBatches (and unparsable records) out.

Every batch carries `__source` (the file) and `__row` (the record's 1-based
position in it: the line number for CSV and JSONL files without blank lines),
so each prediction and dead letter can be traced to its input. Records that
cannot be parsed become `Rejected` dead letters; the rest of their file carries
on. The readers are plain generators, so the trainer and preflight use them
without a pipeline; `transforms.sources` runs them in Beam.
"""

from __future__ import annotations

import codecs
import io
import json
from typing import BinaryIO, Iterator, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import dead_letters as dl

# Bytes of CSV parsed at a time: the longest record (line) that can be read.
CSV_MIN_BLOCK_BYTES = 8 << 20
FORMATS = ('parquet', 'csv', 'jsonl', 'tfrecord', 'avro')
_EXTENSIONS = {
    'parquet': 'parquet', 'pq': 'parquet', 'csv': 'csv', 'jsonl': 'jsonl', 'json': 'jsonl',
    'ndjson': 'jsonl', 'tfrecord': 'tfrecord', 'tfrecords': 'tfrecord', 'avro': 'avro',
}


class Rejected:
  """Dead letters produced while reading, yielded among the row batches."""

  def __init__(self, letters: pa.RecordBatch):
    self.letters = letters


def infer_format(path: str) -> str:
  """The format named by a path's extension (compression suffixes ignored)."""
  name = path.rsplit('/', 1)[-1].lower()
  parts = name.split('.')
  while len(parts) > 1 and parts[-1] in ('gz', 'bz2', 'zst', 'deflate', 'snappy', 'lz4'):
    parts.pop()
  ext = parts[-1] if len(parts) > 1 else ''
  if ext not in _EXTENSIONS:
    raise ValueError(f'cannot tell the format of {path!r} from its extension; pass --input_format, '
                     f'one of {", ".join(FORMATS)}')
  return _EXTENSIONS[ext]


def _with_position(batch: pa.RecordBatch, source: str, rows: np.ndarray,
                   columns: Optional[Sequence[str]]) -> pa.RecordBatch:
  names = [c for c in columns if c in batch.schema.names] if columns is not None else batch.schema.names
  arrays = [batch.column(c) for c in names]
  return pa.RecordBatch.from_arrays(
      arrays + [pa.repeat(pa.scalar(source, pa.string()), len(rows)), pa.array(rows, pa.int64())],
      names=list(names) + [dl.SOURCE, dl.ROW])


def _rows(start: int, n: int) -> np.ndarray:
  return np.arange(start, start + n, dtype=np.int64)


def read_parquet(f: BinaryIO, source: str, batch_size: int, columns=None) -> Iterator[pa.RecordBatch]:
  import pyarrow.parquet as pq
  parquet = pq.ParquetFile(f)
  wanted = [c for c in columns if c in parquet.schema_arrow.names] if columns is not None else None
  start = 1
  for batch in parquet.iter_batches(batch_size=batch_size, columns=wanted, use_threads=False):
    yield _with_position(batch, source, _rows(start, batch.num_rows), columns)
    start += batch.num_rows


def read_csv(f: BinaryIO, source: str, batch_size: int, columns=None) -> Iterator[Union[pa.RecordBatch, Rejected]]:
  """CSV, streamed, with every column read as text: typing happens in validation,
  per row, so one bad value cannot fail a whole block."""
  import pyarrow.csv as pcsv
  head = f.read(1 << 16)
  while b'\n' not in head:
    more = f.read(1 << 16)
    if not more:
      break
    head += more
  if not head.strip():
    return
  # Leading blank lines are skipped, but still counted, so positions stay line numbers.
  body = head.lstrip(b'\r\n')
  first_line = head[:len(head) - len(body)].count(b'\n')
  head = body
  first_newline = head.find(b'\n')
  try:
    header = pcsv.read_csv(io.BytesIO(head[:first_newline + 1] if first_newline >= 0 else head + b'\n')).column_names
  except pa.ArrowInvalid as e:
    raise ValueError(f'cannot read the CSV header: {e}') from None
  if first_newline < 0:  # the whole file is a header
    return
  bad: list[tuple[int, str, str]] = []

  def on_invalid(row) -> str:
    bad.append((row.number + first_line, row.text, f'expected {row.expected_columns} columns, got {row.actual_columns}'))
    return 'skip'

  stream = _RepairedUtf8(head, f)
  second_newline = head.find(b'\n', first_newline + 1)
  line_width = max(1, second_newline - first_newline) if second_newline > 0 else 64
  reader = pcsv.open_csv(
      io.BufferedReader(stream, buffer_size=1 << 20),
      read_options=pcsv.ReadOptions(use_threads=False, block_size=max(CSV_MIN_BLOCK_BYTES, line_width * batch_size)),
      parse_options=pcsv.ParseOptions(invalid_row_handler=on_invalid),
      convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in header}, strings_can_be_null=True))
  skipped: set[int] = set()
  line = first_line + 1  # the header
  for batch in _csv_blocks(reader, source):
    if bad:
      yield _malformed_csv(bad, source)
      skipped.update(n for n, _, _ in bad)
      bad.clear()
    spans = _extra_lines(batch)  # a quoted value can hold line breaks: the next row starts further on
    if not skipped or max(skipped) <= line:
      rows = _rows(line + 1, batch.num_rows) + np.cumsum(spans) - spans
      line += batch.num_rows + int(spans.sum())
    else:  # the line numbers of parsed rows step over the skipped ones
      rows = np.empty(batch.num_rows, np.int64)
      for i in range(batch.num_rows):
        line += 1
        while line in skipped:
          line += 1
        rows[i] = line
        line += int(spans[i])
    garbled = _holds_replacements(batch) if stream.repaired else np.zeros(batch.num_rows, bool)
    rejected = (spans > 0) | garbled
    if rejected.any():  # reject the record, keeping its text
      yield Rejected(dl.from_batch(
          _with_position(batch, source, rows, None), rejected, stage='read',
          codes=[dl.UNPARSABLE] * int(rejected.sum()),
          reasons=[_csv_problem(r, n) for r, n in zip(rows[rejected], spans[rejected])]))
      batch, rows = batch.filter(pa.array(~rejected)), rows[~rejected]
    yield _with_position(batch, source, rows, columns)  # read_file cuts it to batch_size
  if bad:
    yield _malformed_csv(bad, source)


def _csv_problem(line: int, extra_lines: int) -> str:
  if extra_lines:  # an unclosed quote runs on over the next lines
    return (f'malformed CSV line {line}: a quoted value runs over the next {extra_lines} line(s) (a quote that '
            'is never closed, or line breaks inside a value, which this reader does not accept)')
  return f'malformed CSV line {line}: not UTF-8 text (bytes that are not UTF-8 are shown as U+FFFD)'


def _holds_replacements(batch: pa.RecordBatch) -> np.ndarray:
  """Per row, whether a value holds U+FFFD, which stands for bytes that were not UTF-8."""
  found = np.zeros(batch.num_rows, bool)
  for column in batch.columns:
    found |= pc.fill_null(pc.match_substring(column, '\ufffd'), False).to_numpy(zero_copy_only=False)
  return found


def _extra_lines(batch: pa.RecordBatch) -> np.ndarray:
  """Per row, how many more lines of the file its values hold."""
  extra = np.zeros(batch.num_rows, np.int64)
  for column in batch.columns:
    counts = pc.count_substring(pc.utf8_rtrim(column, characters='\r\n'), '\n')
    extra += pc.fill_null(counts, 0).to_numpy(zero_copy_only=False)
  return extra


def _csv_blocks(reader, source: str) -> Iterator[pa.RecordBatch]:
  """The reader's blocks, with its error for a too-long record made actionable."""
  try:
    yield from reader
  except pa.ArrowInvalid as e:
    if 'straddling' not in str(e):
      raise
    raise ValueError(f'{source} has a CSV record longer than {CSV_MIN_BLOCK_BYTES >> 20} MiB, or a quote that '
                     'is never closed') from None


def _is_utf8(chunk: bytes) -> bool:
  if chunk.isascii():
    return True
  try:
    chunk.decode('utf-8')
    return True
  except UnicodeDecodeError:  # bad bytes, or a character cut at the end of the chunk
    return False


class _RepairedUtf8(io.RawIOBase):
  """Bytes already read from a stream, then the rest of it, with bytes that are not
  UTF-8 replaced by U+FFFD: pyarrow fails a whole CSV file on one such byte."""

  def __init__(self, head: bytes, rest: BinaryIO):
    self._pending = head
    self._rest = rest
    self._decoder = codecs.getincrementaldecoder('utf-8')('replace')
    self._out = memoryview(b'')
    self._eof = False
    self.repaired = False  # whether any byte was replaced

  def readable(self) -> bool:
    return True

  def readinto(self, buffer) -> int:
    while not self._out and not self._eof:
      chunk = self._pending or self._rest.read(max(len(buffer), 1 << 16))
      self._pending = b''
      self._eof = not chunk
      if not self._decoder.getstate()[0] and _is_utf8(chunk):
        self._out = memoryview(chunk)  # the common case: nothing to repair, no copy
      else:
        text = self._decoder.decode(chunk, self._eof)
        self.repaired = self.repaired or text.count('\ufffd') > chunk.count(b'\xef\xbf\xbd')
        self._out = memoryview(text.encode('utf-8'))
    n = min(len(buffer), len(self._out))
    buffer[:n] = self._out[:n]
    self._out = self._out[n:]
    return n


def _malformed_csv(bad: list[tuple[int, str, str]], source: str) -> Rejected:
  return Rejected(dl.from_records([t for _, t, _ in bad], source=source, rows=[n for n, _, _ in bad],
                                  code=dl.UNPARSABLE, reasons=[f'malformed CSV line {n}: {why}' for n, _, why in bad]))


def _line_chunks(f: BinaryIO, block_size: int) -> Iterator[bytes]:
  """Whole lines, about `block_size` bytes at a time."""
  rest = b''
  while True:
    block = f.read(block_size)
    if not block:
      if rest:
        yield rest
      return
    block = rest + block
    cut = block.rfind(b'\n') + 1
    if cut:
      yield block[:cut]
    rest = block[cut:]


def _jsonl_lines_slow(lines: list[bytes], source: str, first_line: int):
  """Parses lines one by one, so a malformed line rejects only itself."""
  good, good_rows, bad, bad_rows, reasons = [], [], [], [], []
  for offset, line in enumerate(lines):
    text = line.strip()
    if not text:
      continue
    try:
      record = json.loads(text)
      if not isinstance(record, dict):
        raise ValueError(f'expected a JSON object, got {type(record).__name__}')
      good.append(record)
      good_rows.append(first_line + offset)
    except ValueError as e:
      bad.append(text.decode('utf-8', 'replace'))
      bad_rows.append(first_line + offset)
      reasons.append(f'malformed JSON on line {first_line + offset}: {e}')
  if bad:
    yield Rejected(dl.from_records(bad, source=source, rows=bad_rows, code=dl.UNPARSABLE, reasons=reasons))
  if good:
    names = list(dict.fromkeys(k for r in good for k in r))
    arrays = []
    for name in names:
      values = [r.get(name) for r in good]
      try:
        arrays.append(pa.array(values))
      except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # mixed types, huge ints: keep text
        arrays.append(pa.array([v if v is None or isinstance(v, str) else json.dumps(v) for v in values]))
    yield pa.RecordBatch.from_arrays(arrays, names=names), np.array(good_rows, np.int64)


def read_jsonl(f: BinaryIO, source: str, batch_size: int, columns=None) -> Iterator[Union[pa.RecordBatch, Rejected]]:
  """JSON Lines, parsed by pyarrow a chunk of lines at a time; a chunk that fails
  (a malformed line, mixed types, blank lines) is re-parsed line by line."""
  import pyarrow.json as pjson
  first_line = 1
  for chunk in _line_chunks(f, max(1 << 20, batch_size * 256)):
    lines = chunk.splitlines()
    try:
      table = pjson.read_json(io.BytesIO(chunk), read_options=pjson.ReadOptions(use_threads=False,
                                                                                 block_size=len(chunk) + 1))
      if table.num_rows != len(lines):
        raise pa.ArrowInvalid('blank lines: positions would drift')
      for batch in table.to_batches(max_chunksize=batch_size):
        yield _with_position(batch, source, _rows(first_line, batch.num_rows), columns)
        first_line += batch.num_rows
      continue
    except pa.ArrowInvalid:
      pass
    for item in _jsonl_lines_slow(lines, source, first_line):
      if isinstance(item, Rejected):
        yield item
      else:
        batch, rows = item
        yield _with_position(batch, source, rows, columns)
    first_line += len(lines)


def read_avro(f: BinaryIO, source: str, batch_size: int, columns=None) -> Iterator[pa.RecordBatch]:
  import fastavro
  records, start = [], 1
  for record in fastavro.reader(f):
    records.append(record)
    if len(records) == batch_size:
      yield _with_position(pa.RecordBatch.from_pylist(records), source, _rows(start, len(records)), columns)
      start += len(records)
      records = []
  if records:
    yield _with_position(pa.RecordBatch.from_pylist(records), source, _rows(start, len(records)), columns)


def _first_values(values: pa.Array) -> pa.Array:
  """Single-valued tf.Example features as a flat column; empty lists become nulls."""
  if not (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)):
    return values
  lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)
  if not len(values.values):  # every list is empty: there is no first value to take
    firsts = pa.nulls(len(values), values.type.value_type)
  else:
    starts = values.offsets.to_numpy()[:-1]
    firsts = values.values.take(pa.array(np.where(lengths > 0, starts, 0)))
    firsts = pc.if_else(pa.array(lengths > 0), firsts, pa.scalar(None, firsts.type))
  if pa.types.is_binary(firsts.type) or pa.types.is_large_binary(firsts.type):
    firsts = firsts.cast(pa.string())
  return firsts


def read_tfrecord(f: BinaryIO, source: str, batch_size: int, columns=None) -> Iterator[Union[pa.RecordBatch, Rejected]]:
  """TFRecord files of tf.Example protos, decoded a batch at a time by tfx-bsl."""
  from apache_beam.io.tfrecordio import _TFRecordUtil  # Beam's own record framing and CRC checks
  from tfx_bsl.coders import example_coder
  decoder = example_coder.ExamplesToRecordBatchDecoder()
  start = 1
  while True:
    records = []
    while len(records) < batch_size:
      record = _TFRecordUtil.read_record(f)
      if record is None:
        break
      records.append(record)
    if not records:
      return
    try:
      decoded = [decoder.DecodeBatch(records)]
      rows = [_rows(start, len(records))]
    except Exception:  # one bad proto fails the batch: decode one by one to find it.
      decoded, rows, bad = [], [], []
      for i, record in enumerate(records):
        try:
          decoded.append(decoder.DecodeBatch([record]))
          rows.append(_rows(start + i, 1))
        except Exception as e:
          bad.append((start + i, record, e))
      if bad:
        yield Rejected(dl.from_records([r.hex() for _, r, _ in bad], source=source, rows=[n for n, _, _ in bad],
                                       code=dl.UNPARSABLE,
                                       reasons=[f'record {n} is not a tf.Example: {e}' for n, _, e in bad]))
    for batch, positions in zip(decoded, rows):
      flat = pa.RecordBatch.from_arrays([_first_values(c) for c in batch.columns], names=batch.schema.names)
      yield _with_position(flat, source, positions, columns)
    start += len(records)


READERS = {'parquet': read_parquet, 'csv': read_csv, 'jsonl': read_jsonl, 'avro': read_avro, 'tfrecord': read_tfrecord}


def read_file(f: BinaryIO, source: str, file_format: str, *, batch_size: int,
              columns: Optional[Sequence[str]] = None) -> Iterator[Union[pa.RecordBatch, Rejected]]:
  """Row batches of at most `batch_size` rows (and `Rejected` dead letters) from one open file."""
  for item in READERS[file_format](f, source, batch_size, columns):
    if isinstance(item, Rejected) or item.num_rows <= batch_size:
      yield item
    else:  # the CSV and JSON readers parse whole blocks, which can hold more rows
      for start in range(0, item.num_rows, batch_size):
        yield item.slice(start, batch_size)


def open_file(path: str, file_format: str):
  """Opens a file for reading through Beam's FileSystems (local, gs://, ...).

  Parquet and Avro compress inside the file, not around it; text formats may be
  gzip'd and are decompressed by extension.
  """
  compression = CompressionTypes.UNCOMPRESSED if file_format in ('parquet', 'avro') else CompressionTypes.AUTO
  return FileSystems.open(path, compression_type=compression)
