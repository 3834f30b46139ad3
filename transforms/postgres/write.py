"""The COPY sink: prediction batches into the attempt's staging table, and the rows the database refuses.

The job writes every batch with COPY (CSV text that pyarrow renders from the
whole batch, never one INSERT per row), on a few connections in the
background, into the staging table the launcher made
(`transforms.postgres.publish.create_tables`). Rows the table's constraints
refuse become dead letters, found set-wise (`copy_or_refuse`), and their keys
are noted for the publish, which removes those keys' earlier rows.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import json
import queue
from typing import Any, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
from apache_beam.transforms.window import GlobalWindows

from transforms.postgres import arrays
from transforms.postgres.tables import PgTarget, connect, quote
from transforms.rows import counters
from transforms.rows import dead_letters as dl
from transforms.rows.dead_letters import DEAD_LETTERS

# SQLSTATE classes of errors a row causes: 22 data exception (a value out of range, bad text),
# 23 integrity constraint violation (CHECK, NOT NULL, foreign key). Anything else (a full disk,
# a lost connection, a missing privilege) is the database's state, not the row's: the bundle fails.
_ROW_ERROR_CLASSES = ('22', '23')
# Connections one writer COPYs on at most, by default (`copy_connections`).
DEFAULT_COPY_CONNECTIONS = 4


def csv_bytes(batch: pa.RecordBatch) -> bytes:
  """A batch as CSV text for COPY, rendered by pyarrow: null is an empty field, text is quoted."""
  buffer = io.BytesIO()
  pcsv.write_csv(batch, buffer, write_options=pcsv.WriteOptions(include_header=False))
  return buffer.getvalue()


def copy_batch(conn, table: Sequence[str], batch: pa.RecordBatch) -> None:
  """COPY one batch into a table (schema, name), columns by name."""
  columns = ', '.join(quote(conn, c) for c in batch.schema.names)
  with conn.cursor() as cursor:
    with cursor.copy(f'COPY {quote(conn, *table)} ({columns}) FROM STDIN (FORMAT csv)') as copy:
      copy.write(csv_bytes(batch))


def is_row_error(error: Exception) -> bool:
  """An error this row's values caused (see _ROW_ERROR_CLASSES), as opposed to the database's state."""
  state = getattr(error, 'sqlstate', None) or ''
  return state[:2] in _ROW_ERROR_CLASSES


def error_reason(error: Exception) -> str:
  diag = getattr(error, 'diag', None)
  parts = [getattr(diag, 'message_primary', None) or str(error).splitlines()[0],
           getattr(diag, 'message_detail', None), getattr(diag, 'constraint_name', None) and
           f'constraint {diag.constraint_name}']
  return f'[{getattr(error, "sqlstate", "")}] ' + '; '.join(p for p in parts if p)


def copy_or_refuse(conn, table: Sequence[str], batch: pa.RecordBatch) -> list[tuple[int, str]]:
  """COPYs a batch; returns the rows the database refused, as (index, reason), sorted.

  One COPY when every row is taken. When a row is refused, the batch is
  checked set-wise, at a cost that does not grow with the refused rows: it is
  COPYed into an unconstrained scratch table, one query per CHECK and NOT NULL
  constraint finds the rows each refuses, and the rest go in with one INSERT.
  Only where that INSERT still fails (a foreign key, a trigger, a value the
  column type cannot hold) is the batch halved around the bad rows. Each try
  runs in its own savepoint, so a refused try undoes only itself; errors that
  are not a row's (a full disk, a lost connection) are raised.
  """
  import psycopg
  done = _try_copy(conn, table, batch)
  if done is not None:
    return done
  try:
    with conn.transaction():
      return _refuse_set_wise(conn, table, batch)
  except psycopg.Error as e:
    if not is_row_error(e):
      raise
  return _halve(conn, table, batch)


def _try_copy(conn, table: Sequence[str], batch: pa.RecordBatch) -> Optional[list[tuple[int, str]]]:
  """One COPY in its own savepoint: [] when every row went in, the refusal when the batch is one row,
  None when a row of a larger batch was refused (and the savepoint undid the try)."""
  import psycopg
  try:
    with conn.transaction():
      copy_batch(conn, table, batch)
    return []
  except psycopg.Error as e:
    if not is_row_error(e):
      raise
    return [(0, error_reason(e))] if batch.num_rows == 1 else None


def _halve(conn, table: Sequence[str], batch: pa.RecordBatch) -> list[tuple[int, str]]:
  """COPYs each half of a batch, halving again around refused rows (about 2·log2(rows) COPYs per bad row)."""
  done = _try_copy(conn, table, batch)
  if done is not None:
    return done
  half = batch.num_rows // 2
  first = _halve(conn, table, batch.slice(0, half))
  second = _halve(conn, table, batch.slice(half))
  return first + [(half + i, reason) for i, reason in second]


_ROW = '__bi_row'


def _refuse_set_wise(conn, table: Sequence[str], batch: pa.RecordBatch) -> list[tuple[int, str]]:
  """Finds the rows a table's CHECK and NOT NULL constraints refuse with one query each, and INSERTs the rest.

  Raises the database's error where the rest is refused all the same (the caller halves then).
  """
  schema, name = table
  regclass = f'"{schema}"."{name}"'
  scratch = ('pg_temp', '_bi_scratch_' + hashlib.sha256(regclass.encode('utf-8')).hexdigest()[:16])
  columns = ', '.join(quote(conn, c) for c in batch.schema.names)
  with conn.cursor() as cursor:
    cursor.execute(f'CREATE TEMP TABLE IF NOT EXISTS {quote(conn, scratch[1])} AS SELECT {columns} '
                   f'FROM {quote(conn, *table)} WITH NO DATA')  # the table's column types, no constraint
    cursor.execute(f'ALTER TABLE {quote(conn, *scratch)} ADD COLUMN IF NOT EXISTS {_ROW} integer')
    cursor.execute(f'TRUNCATE {quote(conn, *scratch)}')
    copy_batch(conn, scratch, batch.append_column(_ROW, pa.array(np.arange(batch.num_rows, dtype=np.int32))))
    cursor.execute('SELECT conname, pg_get_expr(conbin, conrelid) FROM pg_constraint '
                   "WHERE conrelid = to_regclass(%s) AND contype = 'c' ORDER BY conname", (regclass,))
    rules = [(f'NOT ({expr})', f'[23514] new row for relation "{name}" violates check constraint "{con}"; '
              f'constraint {con}') for con, expr in cursor.fetchall()]
    cursor.execute('SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnotnull AND attnum > 0 '
                   'AND NOT attisdropped ORDER BY attnum', (regclass,))
    rules += [(f'{quote(conn, c)} IS NULL', f'[23502] null value in column "{c}" of relation "{name}" violates '
               'not-null constraint') for (c,) in cursor.fetchall() if c in batch.schema.names]
    refused: dict[int, str] = {}
    for condition, reason in rules:
      cursor.execute(f'SELECT {_ROW} FROM {quote(conn, *scratch)} WHERE {condition}')
      for (row,) in cursor.fetchall():
        refused.setdefault(row, reason)
    cursor.execute(f'INSERT INTO {quote(conn, *table)} ({columns}) SELECT {columns} FROM {quote(conn, *scratch)} '
                   f'WHERE NOT ({_ROW} = ANY(%s))', (list(refused),))
  return sorted(refused.items())


def refused_letters(batch: pa.RecordBatch, refused: list[tuple[int, str]], *, key_name: str, source: str,
                    run_id: str) -> pa.RecordBatch:
  """Dead letters (with run_id) for the rows of `batch` the database refused."""
  rows = batch.take(pa.array([i for i, _ in refused], pa.int64())).to_pylist()
  letters = dl.from_records([json.dumps(r, default=str, ensure_ascii=False) for r in rows], source=source,
                            rows=[None] * len(rows), code=dl.WRITE_ERROR,
                            reasons=[f'{source} refused the row: {reason}' for _, reason in refused], stage='write')
  keys = pa.array([None if r.get(key_name) is None else str(r[key_name]) for r in rows], pa.string())
  letters = letters.set_column(0, 'key', keys)
  return dl.stamp_run_id(letters, run_id)


def drop_partial_keys(conn, table: Sequence[str], rows: pa.RecordBatch, refused: list[tuple[int, str]],
                      key_name: str) -> tuple[pa.Array, int]:
  """The keys of the refused rows, and how many table rows they had. A key laid out over several rows (a
  ranking: one per rank) is refused whole: its rows COPYed already are deleted from the staging table in the
  bundle's transaction, so no key is published with part of its ranking."""
  import pyarrow.compute as pc
  keys = rows.column(key_name)
  refused_keys = pc.unique(keys.take(pa.array([i for i, _ in refused], pa.int64())))
  unwritten = int(pc.sum(pc.is_in(keys, value_set=refused_keys)).as_py() or 0)
  if unwritten > len(refused):
    with conn.cursor() as cursor:
      cursor.execute(f'DELETE FROM {quote(conn, *table)} WHERE {quote(conn, key_name)} = ANY(%s)',
                     (refused_keys.to_pylist(),))
  return refused_keys, unwritten


def whole_key_letters(batch: pa.RecordBatch, rows: pa.RecordBatch, refused: list[tuple[int, str]], unwritten: int,
                      *, key_name: str, source: str, run_id: str) -> pa.RecordBatch:
  """Dead letters for the input rows (of `batch`) whose table rows (`rows`) the database refused: one per
  input row, holding its whole ranking and the reason for each refused rank."""
  keys = rows.column(key_name)
  whole = unwritten > len(refused) or rows.num_rows > batch.num_rows
  ranks = rows.column('rank') if whole and 'rank' in rows.schema.names else None
  why: dict[Any, list[str]] = {}
  for i, reason in refused:
    why.setdefault(keys[i].as_py(), []).append(f'rank {ranks[i].as_py()}: {reason}' if ranks is not None else reason)
  suffix = '; the key\'s whole ranking is rejected, so none of its rows is published' if whole else ''
  return refused_letters(batch, [(i, '; '.join(why[key]) + suffix)
                                 for i, key in enumerate(batch.column(key_name).to_pylist()) if key in why],
                         key_name=key_name, source=source, run_id=run_id)


class _Copier:
  """One connection and the transaction of the current bundle on it; used by one thread at a time."""

  def __init__(self, conn):
    self.conn = conn
    self.bundle = None

  def copy(self, staging: Sequence[str], refused_table: Optional[Sequence[str]], rows: pa.RecordBatch,
           key_name: str) -> tuple[list[tuple[int, str]], int]:
    """COPYs the rows; returns the refused ones (index, reason) and how many rows their keys had."""
    if self.bundle is None:
      self.bundle = self.conn.transaction()
      self.bundle.__enter__()
    refused = copy_or_refuse(self.conn, staging, rows) if rows.num_rows else []
    if not refused:
      return [], 0
    keys, unwritten = drop_partial_keys(self.conn, staging, rows, refused, key_name)
    if refused_table is not None:
      copy_batch(self.conn, refused_table, pa.record_batch([keys], names=[key_name]))
    return refused, unwritten

  def end(self, error: Optional[BaseException] = None) -> None:
    """COMMITs the bundle's transaction (or, after `error`, rolls it back)."""
    bundle, self.bundle = self.bundle, None
    if bundle is not None:
      bundle.__exit__(type(error) if error else None, error, None)


def copy_connections(conn, wanted: Optional[int]) -> int:
  """How many connections one writer COPYs on: `wanted`, or by default up to DEFAULT_COPY_CONNECTIONS while
  a quarter of the server's free connections allows (other writers and the applications need theirs)."""
  if wanted:
    return wanted
  free = conn.execute("SELECT current_setting('max_connections')::int "
                      "- current_setting('superuser_reserved_connections')::int "
                      '- (SELECT count(*) FROM pg_stat_activity)').fetchone()[0]
  return max(1, min(DEFAULT_COPY_CONNECTIONS, free // 4))


class _CopyToStagingFn(beam.DoFn):
  """COPYs batches into the attempt's staging table on a few connections at once, one transaction per bundle
  on each.

  COPY runs on background threads (`copy_connections`), so the server parses
  one batch while the worker predicts the next. Each connection's transaction
  opens with its first batch of the bundle and commits when the bundle
  finishes; each COPY runs in a savepoint inside it. A bundle that fails rolls
  back, so a retried bundle never leaves half its rows; a bundle a runner
  retries after its commit leaves duplicates, which the publish step
  collapses by primary key (and counts). The keys of refused rows go to the
  staging table's side table (`refused`), in the same transaction: the
  publish removes their earlier rows, so no key keeps serving an earlier
  night's answer.
  """

  def __init__(self, target: PgTarget, staging: str, *, key_name: str, run_id: str,
               password_secret: Optional[str], layout, refused: Optional[str] = None,
               connections: Optional[int] = None):
    self._target = target
    self._staging = (target.schema, staging)
    self._refused = (target.schema, refused) if refused else None
    self._key_name = key_name
    self._run_id = run_id
    self._password_secret = password_secret
    self._layout = layout  # RecordBatch -> the table's rows (e.g. one row per rank)
    self._connections = connections
    self._vectors: frozenset[str] = frozenset()  # the staging table's pgvector columns, asked in setup
    self._stack: Optional[contextlib.ExitStack] = None
    self._copiers: list[_Copier] = []
    self._idle: Optional[queue.Queue] = None
    self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
    self._pending: collections.deque = collections.deque()
    self._not_written = counters.counter('rows_not_written')

  def setup(self):
    self._stack = contextlib.ExitStack()
    first = self._connect()
    self._copiers = [_Copier(first)] + [_Copier(self._connect())
                                        for _ in range(copy_connections(first, self._connections) - 1)]
    with first.cursor() as cursor:
      self._vectors = arrays.vector_columns(cursor, *self._staging)
    self._idle = queue.Queue()
    for copier in self._copiers:
      self._idle.put(copier)
    self._pool = self._stack.enter_context(concurrent.futures.ThreadPoolExecutor(
        len(self._copiers), thread_name_prefix='copy-to-staging'))

  def _connect(self):
    return self._stack.enter_context(connect(self._target, password_secret=self._password_secret,
                                             autocommit=True))  # transactions are ours, in _Copier

  def _copy(self, rows: pa.RecordBatch) -> tuple[list[tuple[int, str]], int]:
    copier = self._idle.get()
    try:
      return copier.copy(self._staging, self._refused, rows, self._key_name)
    finally:
      self._idle.put(copier)

  def _results(self, batch: pa.RecordBatch, rows: pa.RecordBatch, copied: tuple[list[tuple[int, str]], int]):
    refused, unwritten = copied
    if refused:  # dead letters are input rows: a key with a refused rank is refused whole
      letters = whole_key_letters(batch, rows, refused, unwritten, key_name=self._key_name,
                                  source=str(self._target), run_id=self._run_id)
      self._not_written.inc(letters.num_rows)
      yield beam.pvalue.TaggedOutput(DEAD_LETTERS, letters)
    yield rows.num_rows - unwritten

  def process(self, batch: pa.RecordBatch):
    rows = arrays.array_text(self._layout(batch), self._vectors)  # lists as the text their columns parse
    self._pending.append((batch, rows, self._pool.submit(self._copy, rows)))
    while len(self._pending) > 2 * len(self._copiers) or (self._pending and self._pending[0][2].done()):
      done, laid_out, future = self._pending.popleft()
      yield from self._results(done, laid_out, future.result())

  def finish_bundle(self):
    while self._pending:
      batch, rows, future = self._pending.popleft()
      for out in self._results(batch, rows, future.result()):
        if isinstance(out, beam.pvalue.TaggedOutput):
          yield beam.pvalue.TaggedOutput(out.tag, GlobalWindows.windowed_value(out.value))
        else:
          yield GlobalWindows.windowed_value(out)
    for copier in self._copiers:
      copier.end()  # COMMIT

  def teardown(self):
    for _, _, future in self._pending:  # a bundle failed: let its COPYs end, then roll its rows back
      with contextlib.suppress(Exception):
        future.result()
    self._pending.clear()
    for copier in self._copiers:
      with contextlib.suppress(Exception):
        copier.end(RuntimeError('bundle failed'))
    if self._stack is not None:
      self._stack.close()


@dataclasses.dataclass
class WritePostgres(beam.PTransform):
  """Writes prediction batches into a staging table with COPY.

  Returns `{'written': rows COPYed per batch (ints), DEAD_LETTERS: the rows
  the database refused}`; the job's last step publishes the staged rows.

  Args:
    target: the serving table.
    staging: this attempt's staging table (the launcher created it like the serving table).
    key_name: the key column, for the dead letters.
    run_id: stamped on the dead letters.
    password_secret: a Secret Manager version holding the password; None: libpq's environment or IAM.
    layout: turns a prediction batch into the table's rows (identity, or one row per rank).
    refused: the staging table's side table for the keys of refused rows (None: not kept).
    connections: how many connections each writer COPYs on (None: `copy_connections` sizes it to the server).
  """
  target: PgTarget
  staging: str
  key_name: str
  run_id: str
  password_secret: Optional[str] = None
  layout: Any = None
  refused: Optional[str] = None
  connections: Optional[int] = None

  def __post_init__(self):
    super().__init__()

  def expand(self, batches: beam.PCollection) -> dict[str, beam.PCollection]:
    results = batches | 'CopyToStaging' >> beam.ParDo(_CopyToStagingFn(
        self.target, self.staging, key_name=self.key_name, run_id=self.run_id,
        password_secret=self.password_secret, layout=self.layout or _same,
        refused=self.refused, connections=self.connections)).with_outputs(DEAD_LETTERS, main='written')
    return {'written': results['written'], DEAD_LETTERS: results[DEAD_LETTERS]}


def _same(batch: pa.RecordBatch) -> pa.RecordBatch:
  return batch

