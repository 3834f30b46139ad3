"""The CSV reader: RFC 4180 records, parsed by pyarrow a block at a time.

A file is cut into blocks only at line breaks outside quotes (quote parity,
computed with numpy), so a quoted value may hold line breaks, commas and
doubled quotes. A record pyarrow cannot parse, or an unclosed quote, becomes a
dead letter at the line it starts on; the rest of the file carries on.
"""

from __future__ import annotations

import csv
import io
from typing import BinaryIO, Iterator, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.rows import dead_letters as dl

# Bytes of CSV parsed at a time, at least.
CSV_MIN_BLOCK_BYTES = 8 << 20
# The longest CSV record that can be read: past it, a quote was probably never closed.
CSV_MAX_RECORD_BYTES = 64 << 20
# Joins a repeated CSV column name to its count, e.g. `year~2`, so every column has a name of its own.
DUPLICATE_MARK = '~'


def read_csv(f: BinaryIO, source: str, batch_size: int, columns=None,
             key_column: Optional[str] = None) -> Iterator[Union[pa.RecordBatch, dl.Rejected]]:
  """CSV as RFC 4180 has it (a quoted value may hold line breaks), streamed, with every column
  read as text: typing happens in validation, per row, so one bad value cannot fail a whole block.

  The file is cut into blocks at line breaks outside quotes and each block is parsed
  by pyarrow, so a record never straddles two blocks. `__row` is the line a record
  starts on.
  """
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
  line = head[:len(head) - len(body)].count(b'\n') + 1  # the header's line
  head = body
  first_newline = head.find(b'\n')
  try:
    header = pcsv.read_csv(io.BytesIO(head[:first_newline + 1] if first_newline >= 0 else head + b'\n')).column_names
  except pa.ArrowInvalid as e:
    raise ValueError(f'cannot read the CSV header: {e}') from None
  if first_newline < 0:  # the whole file is a header
    return
  names = _unique_names(header, columns, source)
  key_at = header.index(key_column) if key_column in header else None
  second_newline = head.find(b'\n', first_newline + 1)
  line_width = max(1, second_newline - first_newline) if second_newline > 0 else 64
  block_size = max(CSV_MIN_BLOCK_BYTES, line_width * batch_size)
  convert = pcsv.ConvertOptions(column_types={c: pa.string() for c in names}, strings_can_be_null=True)
  for chunk in _csv_chunks(head[first_newline + 1:], f, block_size):
    unclosed = chunk.count(b'"') % 2 == 1  # the file's last chunk, or one cut where quotes do not pair up
    bad: list[tuple[int, str, str]] = []  # (record number in the chunk, text, problem)

    def on_invalid(row) -> str:
      bad.append((row.number, row.text, f'expected {row.expected_columns} columns, got {row.actual_columns}'))
      return 'skip'

    repaired = not _is_utf8(chunk)
    if repaired:  # pyarrow fails a whole file on one byte that is not UTF-8: mark it U+FFFD instead
      chunk = chunk.decode('utf-8', 'replace').encode('utf-8')
    try:
      table = pcsv.read_csv(  # one block: the whole chunk
          io.BytesIO(chunk), read_options=pcsv.ReadOptions(column_names=names, use_threads=False,
                                                           block_size=len(chunk) + 1),
          parse_options=pcsv.ParseOptions(invalid_row_handler=on_invalid), convert_options=convert)
      batch = table.combine_chunks().to_batches()[0] if table.num_rows else None
    except pa.ArrowInvalid as e:
      raise ValueError(f'{source} near line {line + 1}: {e}') from None
    rows, bad_rows, line = _record_lines(batch, bad, line)
    if bad:
      keys = [_csv_key(text, key_at) for _, text, _ in bad]
      yield dl.Rejected(dl.from_records([t for _, t, _ in bad], source=source, rows=bad_rows, code=dl.UNPARSABLE,
                                     reasons=[f'malformed CSV line {n}: {why}' for n, (_, _, why) in zip(bad_rows, bad)],
                                     keys=keys))
    if batch is None or not batch.num_rows:
      continue
    garbled = _holds_replacements(batch) if repaired else np.zeros(batch.num_rows, bool)
    reasons = {i: f'malformed CSV line {rows[i]}: not UTF-8 text (bytes that are not UTF-8 are shown as U+FFFD)'
               for i in np.flatnonzero(garbled)}
    last = batch.num_rows - 1
    last_is_row = not bad or max(n for n, _, _ in bad) <= last + len(bad)
    if unclosed and last_is_row and line > rows[last]:  # the last record runs on over the lines after it
      garbled[last] = True
      swallowed = line - rows[last] - chunk.endswith(b'\n')  # the chunk's last line break is in the value too
      reasons[last] = (f'malformed CSV line {rows[last]}: a quote that is never closed runs over the next '
                       f'{swallowed} line(s)')
    if garbled.any():  # reject the record, keeping its text
      yield dl.Rejected(dl.from_batch(
          _keyed(dl.with_position(batch, source, rows, None), key_column), garbled, stage='read',
          codes=[dl.UNPARSABLE] * int(garbled.sum()), reasons=[reasons[i] for i in np.flatnonzero(garbled)]))
      batch, rows = batch.filter(pa.array(~garbled)), rows[~garbled]
    yield dl.with_position(batch, source, rows, columns)  # read_file cuts it to batch_size


def _unique_names(header: list[str], columns: Optional[Sequence[str]], source: str) -> list[str]:
  """The header with repeated names made unique; a repeated name the job reads is an error."""
  counts: dict[str, int] = {}
  for name in header:
    counts[name] = counts.get(name, 0) + 1
  repeated = sorted(n for n, c in counts.items() if c > 1)
  used = [n for n in repeated if columns is not None and n in columns]
  if used:
    raise ValueError(f'{source}: the CSV header names column(s) {used} more than once, so which one to read is '
                     'ambiguous; rename the copies')
  seen: dict[str, int] = {}
  names = []
  for name in header:
    seen[name] = seen.get(name, 0) + 1
    names.append(name if seen[name] == 1 else f'{name}{DUPLICATE_MARK}{seen[name]}')
  return names


def repeated_columns(schema: pa.Schema) -> dict[str, int]:
  """Column names a CSV header repeated, and how many times, from the names this reader gave the copies
  (NAME~2, ...)."""
  counts = {}
  for name in schema.names:
    base, mark, number = name.rpartition(DUPLICATE_MARK)
    if mark and number.isdigit() and base in schema.names:
      counts[base] = max(counts.get(base, 1), int(number))
  return counts


def _record_lines(batch: Optional[pa.RecordBatch], bad: list[tuple[int, str, str]],
                  line: int) -> tuple[np.ndarray, list[int], int]:
  """The line each record of a chunk starts on: (parsed rows', malformed rows', the chunk's last line).

  pyarrow numbers records, not lines; a record spans one line more per line
  break in its values.
  """
  parsed = batch.num_rows if batch is not None else 0
  total = parsed + len(bad)
  spans = np.zeros(total, np.int64)
  is_bad = np.zeros(total, bool)
  bad_at = np.array([n - 1 for n, _, _ in bad], np.int64)
  is_bad[bad_at] = True
  spans[bad_at] = [text.count('\n') for _, text, _ in bad]
  if parsed:
    spans[~is_bad] = _extra_lines(batch)
  starts = line + 1 + np.arange(total, dtype=np.int64) + np.cumsum(spans) - spans
  return starts[~is_bad], starts[is_bad].tolist(), line + total + int(spans.sum())


def _csv_key(text: str, key_at: Optional[int]) -> Optional[str]:
  """The key column's value in a malformed record's text, where it can be read."""
  if key_at is None:
    return None
  try:
    fields = next(csv.reader([text]))
  except (csv.Error, StopIteration):
    return None
  value = fields[key_at].strip() if key_at < len(fields) else ''
  return value or None


def _keyed(batch: pa.RecordBatch, key_column: Optional[str]) -> pa.RecordBatch:
  """The batch with the key column's text in `KEY`, so dead letters of the read step carry it."""
  if key_column is None or key_column not in batch.schema.names:
    return batch
  return batch.append_column(dl.KEY, batch.column(key_column).cast(pa.string()))


def _csv_chunks(head: bytes, rest: BinaryIO, block_size: int) -> Iterator[bytes]:
  """The bytes after the header, about `block_size` at a time, each ending at a line break outside quotes.

  In RFC 4180 a quote inside a quoted value is doubled, so a line break ends a
  record exactly when an even number of quotes precede it.
  """
  pending = head
  while True:
    data = rest.read(block_size)
    pending = pending + data if pending else data
    if not data:
      if pending:
        yield pending
      return
    cut = _last_record_end(pending)
    if not cut and len(pending) > CSV_MAX_RECORD_BYTES:
      # Quotes that never pair up: a stray one inside an unquoted value (`12" screen`), which
      # pyarrow reads as text. Cut at a line break, as pyarrow itself would.
      cut = pending.rfind(b'\n') + 1
      if not cut:
        raise ValueError(f'a CSV line longer than {CSV_MAX_RECORD_BYTES >> 20} MiB')
    if cut:
      yield pending[:cut]
      pending = pending[cut:]


def _last_record_end(data: bytes) -> int:
  """The offset just past the last line break outside quotes, or 0."""
  array = np.frombuffer(data, np.uint8)
  newlines = np.flatnonzero(array == ord('\n'))
  if not newlines.size:
    return 0
  quotes = np.flatnonzero(array == ord('"'))
  even = np.searchsorted(quotes, newlines) % 2 == 0
  ends = newlines[even]
  return int(ends[-1]) + 1 if ends.size else 0


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
    counts = pc.count_substring(column, '\n')
    extra += pc.fill_null(counts, 0).to_numpy(zero_copy_only=False)
  return extra


def _is_utf8(chunk: bytes) -> bool:
  if chunk.isascii():
    return True
  try:
    chunk.decode('utf-8')
    return True
  except UnicodeDecodeError:
    return False
