"""Per-format readers: one open file in, Arrow RecordBatches (and unparsable records) out.

Every batch carries `__source` (the file) and `__row` (the record's 1-based
position in it: the line number for CSV and JSONL files without blank lines),
so each prediction and dead letter can be traced to its input. Records that
cannot be parsed become `Rejected` dead letters; the rest of their file carries
on. The readers are plain generators, so the trainer and preflight use them
without a pipeline; `transforms.files.read` runs them in Beam.
"""

from __future__ import annotations

import io
import json
import re
from typing import BinaryIO, Iterator, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.rows import dead_letters as dl
from transforms.files.csv_reader import read_csv

FORMATS = ('parquet', 'csv', 'jsonl', 'tfrecord', 'avro')
_EXTENSIONS = {
    'parquet': 'parquet', 'pq': 'parquet', 'csv': 'csv', 'jsonl': 'jsonl', 'json': 'jsonl',
    'ndjson': 'jsonl', 'tfrecord': 'tfrecord', 'tfrecords': 'tfrecord', 'avro': 'avro',
}


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


def _rows(start: int, n: int) -> np.ndarray:
  return np.arange(start, start + n, dtype=np.int64)


def read_parquet(f: BinaryIO, source: str, batch_size: int, columns=None, key_column=None) -> Iterator[pa.RecordBatch]:
  import pyarrow.parquet as pq
  parquet = pq.ParquetFile(f)
  wanted = [c for c in columns if c in parquet.schema_arrow.names] if columns is not None else None
  start = 1
  for batch in parquet.iter_batches(batch_size=batch_size, columns=wanted, use_threads=False):
    yield dl.with_position(batch, source, _rows(start, batch.num_rows), columns)
    start += batch.num_rows


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


def _json_key(text: str, key_column: Optional[str]) -> Optional[str]:
  """The key's value in a line that is not valid JSON, where `"KEY": value` can still be read."""
  if not key_column:
    return None
  found = re.search(r'"%s"\s*:\s*("(?:[^"\\]|\\.)*"|[-+.\w]+)' % re.escape(key_column), text)
  if not found:
    return None
  try:
    value = json.loads(found.group(1))
  except ValueError:
    value = found.group(1)
  return None if value is None else str(value)


def _jsonl_lines_slow(lines: list[bytes], source: str, first_line: int, key_column: Optional[str] = None):
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
    yield dl.Rejected(dl.from_records(bad, source=source, rows=bad_rows, code=dl.UNPARSABLE, reasons=reasons,
                                   keys=[_json_key(text, key_column) for text in bad]))
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


def read_jsonl(f: BinaryIO, source: str, batch_size: int, columns=None,
               key_column: Optional[str] = None) -> Iterator[Union[pa.RecordBatch, dl.Rejected]]:
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
        yield dl.with_position(batch, source, _rows(first_line, batch.num_rows), columns)
        first_line += batch.num_rows
      continue
    except pa.ArrowInvalid:
      pass
    for item in _jsonl_lines_slow(lines, source, first_line, key_column):
      if isinstance(item, dl.Rejected):
        yield item
      else:
        batch, rows = item
        yield dl.with_position(batch, source, rows, columns)
    first_line += len(lines)


def read_avro(f: BinaryIO, source: str, batch_size: int, columns=None, key_column=None) -> Iterator[pa.RecordBatch]:
  import fastavro
  records, start = [], 1
  for record in fastavro.reader(f):
    records.append(record)
    if len(records) == batch_size:
      yield dl.with_position(pa.RecordBatch.from_pylist(records), source, _rows(start, len(records)), columns)
      start += len(records)
      records = []
  if records:
    yield dl.with_position(pa.RecordBatch.from_pylist(records), source, _rows(start, len(records)), columns)


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


def read_tfrecord(f: BinaryIO, source: str, batch_size: int, columns=None, key_column=None) -> Iterator[Union[pa.RecordBatch, dl.Rejected]]:
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
        yield dl.Rejected(dl.from_records([r.hex() for _, r, _ in bad], source=source, rows=[n for n, _, _ in bad],
                                       code=dl.UNPARSABLE,
                                       reasons=[f'record {n} is not a tf.Example: {e}' for n, _, e in bad]))
    for batch, positions in zip(decoded, rows):
      flat = pa.RecordBatch.from_arrays([_first_values(c) for c in batch.columns], names=batch.schema.names)
      yield dl.with_position(flat, source, positions, columns)
    start += len(records)


READERS = {'parquet': read_parquet, 'csv': read_csv, 'jsonl': read_jsonl, 'avro': read_avro, 'tfrecord': read_tfrecord}


def read_file(f: BinaryIO, source: str, file_format: str, *, batch_size: int,
              columns: Optional[Sequence[str]] = None,
              key_column: Optional[str] = None) -> Iterator[Union[pa.RecordBatch, dl.Rejected]]:
  """Row batches of at most `batch_size` rows (and `Rejected` dead letters) from one open file.

  A record that cannot be parsed keeps the value of `key_column` in its dead
  letter wherever that can still be read from it.
  """
  for item in READERS[file_format](f, source, batch_size, columns, key_column):
    if isinstance(item, dl.Rejected) or item.num_rows <= batch_size:
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
