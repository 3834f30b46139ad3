"""A PostgreSQL / Cloud SQL table as the run's output: check, stage, publish in one transaction.

The launcher checks the target (connection, columns, privileges), creates the
serving table when missing (from the prediction schema, the key as primary key)
and this attempt's staging table (`CREATE UNLOGGED TABLE ... (LIKE serving
INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`, so a row the serving table would
refuse is refused while it is written, and becomes a dead letter). Workers
COPY into the staging table (`transforms.postgres.tables.WritePostgres`). The job's
last step (`pipelines.graph.finish`, through `transforms.postgres.destination`) calls `publish_run`, one transaction:

- `upsert` (default): every key of the run gets exactly its staged rows (the
  key's old rows are deleted, the new inserted), and rows an earlier attempt
  of this run id wrote for keys it no longer has are deleted, so a re-run is
  idempotent; other keys keep their rows;
- `replace`: the staged rows become the whole table: a new table is filled
  and swapped in by renaming.

The same transaction notes the run in `_bi_runs_TABLE` beside the serving
table (run id, attempt, rows, when), so `status` can tell from the database
itself that a run published, even one killed right after the commit.
The staging table is dropped in the same transaction. Readers see the old rows
until the commit and the new ones after it (PostgreSQL's MVCC; upsert never
blocks a reader, replace blocks readers only for the rename). A failed or
killed run leaves the serving table exactly as it was.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Optional, Sequence

import pyarrow as pa

from transforms.postgres.tables import PgTarget, accepts, connect, pg_type, quote


# Beside the serving table, RUNS_PREFIX + its name: one row per run id a publish committed, written in its transaction.
RUNS_PREFIX = '_bi_runs_'


def runs_table(target: PgTarget) -> str:
  """The serving table's runs table: `_bi_runs_TABLE`, or a digest of the name where that is over 63 bytes."""
  name = RUNS_PREFIX + target.table
  return name if len(name) <= 63 else RUNS_PREFIX + hashlib.sha256(target.table.encode('utf-8')).hexdigest()[:16]


def _exists(cursor, schema: str, table: str) -> bool:
  cursor.execute('SELECT to_regclass(%s) IS NOT NULL', (f'"{schema}"."{table}"',))
  return bool(cursor.fetchone()[0])


def _columns(cursor, target: PgTarget) -> dict[str, tuple[str, bool, bool]]:
  """{column: (data_type, nullable, has_default)} of the serving table."""
  cursor.execute('SELECT column_name, data_type, is_nullable = %s, column_default IS NOT NULL '
                 'FROM information_schema.columns WHERE table_schema = %s AND table_name = %s',
                 ('YES', target.schema, target.table))
  return {name: (kind, nullable, default) for name, kind, nullable, default in cursor.fetchall()}


def _primary_key(cursor, target: PgTarget) -> list[str]:
  cursor.execute('SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid '
                 'AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(%s) AND i.indisprimary',
                 (f'"{target.schema}"."{target.table}"',))
  return sorted(r[0] for r in cursor.fetchall())


def table_problems(existing: dict[str, tuple[str, bool, bool]], primary_key: Sequence[str], schema: pa.Schema,
                   key: Sequence[str]) -> list[str]:
  """What keeps an existing table from taking the job's rows, column by column."""
  problems = []
  for field in schema:
    if field.name not in existing:
      problems.append(f'has no column {field.name!r} ({pg_type(field.type)})')
    elif not accepts(existing[field.name][0], field.type):
      problems.append(f'column {field.name!r} is {existing[field.name][0]}, which cannot take '
                      f'{pg_type(field.type)} values')
  for name, (kind, nullable, default) in existing.items():
    if name not in schema.names and not nullable and not default:
      problems.append(f'column {name!r} ({kind}) is NOT NULL without a default, and the job does not write it')
  if sorted(primary_key) != sorted(key):
    problems.append(f'its primary key is {sorted(primary_key) or "missing"}; the job publishes by key and needs '
                    f'PRIMARY KEY ({", ".join(key)})')
  return problems


def check_target(target: PgTarget, schema: pa.Schema, key: Sequence[str], *,
                 password_secret: Optional[str] = None) -> list[str]:
  """Connects and checks the table and privileges, changing nothing; returns the problems found."""
  import psycopg
  try:
    with connect(target, password_secret=password_secret) as conn, conn.cursor() as cursor:
      cursor.execute('SELECT has_schema_privilege(%s, %s)', (target.schema, 'CREATE'))
      problems = [] if cursor.fetchone()[0] else [
          f'{target}: no CREATE privilege on schema {target.schema!r}: the job creates its staging table there']
      if _exists(cursor, target.schema, target.table):
        problems += [f'{target}: table {target.qualified} {p}' for p in table_problems(
            _columns(cursor, target), _primary_key(cursor, target), schema, key)]
        cursor.execute('SELECT has_table_privilege(%s, %s)', (f'"{target.schema}"."{target.table}"',
                                                              'INSERT, DELETE, SELECT'))
        if not cursor.fetchone()[0]:
          problems.append(f'{target}: the user lacks INSERT, DELETE or SELECT on {target.qualified}')
      conn.rollback()
      return problems
  except psycopg.Error as e:
    return [f'{target}: cannot connect or query: {str(e).strip().splitlines()[0]}']


def create_tables(target: PgTarget, schema: pa.Schema, key: Sequence[str], staging: str, *,
                  password_secret: Optional[str] = None) -> None:
  """Creates the serving table if missing, and this attempt's staging table like it (launcher, before workers)."""
  with connect(target, password_secret=password_secret) as conn, conn.cursor() as cursor:
    columns = [f'{quote(conn, f.name)} {pg_type(f.type)}{"" if f.nullable else " NOT NULL"}' for f in schema]
    columns.append(f'PRIMARY KEY ({", ".join(quote(conn, k) for k in key)})')
    cursor.execute(f'CREATE TABLE IF NOT EXISTS {quote(conn, target.schema, target.table)} ({", ".join(columns)})')
    cursor.execute(f'CREATE UNLOGGED TABLE IF NOT EXISTS {quote(conn, target.schema, staging)} '
                   f'(LIKE {quote(conn, target.schema, target.table)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                   'INCLUDING GENERATED)')
    cursor.execute(f'CREATE TABLE IF NOT EXISTS {quote(conn, target.schema, runs_table(target))} '
                   '(run_id text PRIMARY KEY, attempt text, rows bigint, published_at timestamptz)')
    conn.commit()


def stale_staging(cursor, target: PgTarget, run_id: str) -> list[str]:
  cursor.execute('SELECT tablename FROM pg_tables WHERE schemaname = %s AND starts_with(tablename, %s)',
                 (target.schema, target.run_prefix(run_id)))
  return sorted(r[0] for r in cursor.fetchall())


def drop_staging(target: PgTarget, run_id: str, attempt: Optional[str] = None, *,
                 password_secret: Optional[str] = None) -> None:
  """Drops the staging table of one attempt, or (attempt None) of every attempt of the run."""
  with connect(target, password_secret=password_secret) as conn, conn.cursor() as cursor:
    names = stale_staging(cursor, target, run_id) if attempt is None else [target.staging_table(run_id, attempt)]
    for name in names:
      cursor.execute(f'DROP TABLE IF EXISTS {quote(conn, target.schema, name)}')
    conn.commit()


def publish_run(target: PgTarget, schema: pa.Schema, key: Sequence[str], *, run_id: str, attempt: str, rows: int,
                mode: str = 'upsert', password_secret: Optional[str] = None) -> int:
  """Publishes the attempt's staged rows in one transaction (see the module docstring).

  Args:
    schema: the columns the job wrote; `key` the serving table's primary key.
    rows: how many rows the job COPYed (counted from its PCollections).
    mode: 'upsert' or 'replace'.

  Returns:
    The run's rows in the serving table now.

  Raises:
    ValueError: the staging table does not hold the rows the job wrote, or it
      is gone and the table does not hold them either; the table is unchanged.
  """
  staging = target.staging_table(run_id, attempt)
  started = time.monotonic()
  with connect(target, password_secret=password_secret) as conn, conn.cursor() as cursor:
    serving, staged_table = quote(conn, target.schema, target.table), quote(conn, target.schema, staging)
    cursor.execute(f'LOCK TABLE {serving} IN SHARE ROW EXCLUSIVE MODE')  # one publisher at a time; readers go on
    if not _exists(cursor, target.schema, staging):  # a retry of this step after its commit
      cursor.execute(f'SELECT count(*) FROM {serving} WHERE run_id = %s', (run_id,))
      held = cursor.fetchone()[0]
      conn.rollback()
      if held != rows:
        raise ValueError(f'{target}: staging table {staging} of run {run_id!r} is gone and the table holds {held:,} '
                         f'rows of the run, not the {rows:,} the job wrote; re-run with --run_id {run_id}')
      return held
    names = ', '.join(quote(conn, c) for c in schema.names)
    keys = ', '.join(quote(conn, k) for k in key)
    cursor.execute(f'SELECT count(*), count(DISTINCT ({keys})) FROM {staged_table}')
    staged, distinct = cursor.fetchone()
    if distinct != rows:
      conn.rollback()
      raise ValueError(f'{target}: the staging table of run {run_id!r} holds {distinct:,} distinct keys '
                       f'({staged:,} rows) but the job wrote {rows:,} rows; '
                       + ('some keys repeat in the input, and the table holds one row per key. '
                          if staged == rows else '') + 'The serving table is unchanged.')
    # A bundle a runner retried after its commit staged its rows twice: keep one copy.
    source = (f'SELECT DISTINCT ON ({keys}) {names} FROM {staged_table}' if staged != rows
              else f'SELECT {names} FROM {staged_table}')
    if mode == 'replace':
      inserted = _swap_in(conn, cursor, target, f'{staging}_new', names, source)
    else:
      key_of = quote(conn, key[0])
      cursor.execute(f'DELETE FROM {serving} t USING (SELECT DISTINCT {key_of} FROM {staged_table}) s '
                     f'WHERE t.{key_of} = s.{key_of}')
      cursor.execute(f'DELETE FROM {serving} WHERE run_id = %s', (run_id,))  # keys an earlier attempt had
      cursor.execute(f'INSERT INTO {serving} ({names}) {source}')
      inserted = cursor.rowcount
    _note_run(conn, cursor, target, run_id, attempt, inserted)
    cursor.execute(f'DROP TABLE {staged_table}')
    conn.commit()
  logging.info('run %s: published %d rows to %s (%s) in %.2fs', run_id, inserted, target, mode,
               time.monotonic() - started)
  return inserted


def _swap_in(conn, cursor, target: PgTarget, new: str, names: str, source: str) -> int:
  """Fills a copy of the serving table and renames it into place, inside the caller's transaction;
  returns the rows it holds. Grants and views on the old table do not follow it (see docs/guides/postgresql-and-cloud-sql.md)."""
  serving, fresh = quote(conn, target.schema, target.table), quote(conn, target.schema, new)
  old = f'{new[:-4]}_old'
  cursor.execute(f'CREATE TABLE {fresh} (LIKE {serving} INCLUDING ALL)')
  cursor.execute(f'INSERT INTO {fresh} ({names}) {source}')
  rows = cursor.rowcount
  cursor.execute(f'ALTER TABLE {serving} RENAME TO {quote(conn, old)}')
  cursor.execute(f'ALTER TABLE {fresh} RENAME TO {quote(conn, target.table)}')
  cursor.execute(f'DROP TABLE {quote(conn, target.schema, old)}')
  return rows


def _note_run(conn, cursor, target: PgTarget, run_id: str, attempt: str, rows: int) -> None:
  """Notes the publish in the runs table, inside the publish's transaction. A runs table this user may
  not write (another role made it) only costs `status` its answer from the database: never the publish."""
  cursor.execute('SAVEPOINT bi_note_run')
  try:
    cursor.execute(f'INSERT INTO {quote(conn, target.schema, runs_table(target))} VALUES (%s, %s, %s, now()) '
                   'ON CONFLICT (run_id) DO UPDATE SET attempt = excluded.attempt, rows = excluded.rows, '
                   'published_at = excluded.published_at', (run_id, attempt, rows))
  except Exception as e:  # pylint: disable=broad-except  (either driver's error: psycopg, or Cloud SQL's)
    cursor.execute('ROLLBACK TO SAVEPOINT bi_note_run')
    logging.warning('run %s: the publish goes on without noting it in %s: %s', run_id, runs_table(target), e)
  else:
    cursor.execute('RELEASE SAVEPOINT bi_note_run')


def published_run(target: PgTarget, run_id: str, *,
                  password_secret: Optional[str] = None) -> Optional[tuple[str, int, str, int]]:
  """(attempt, rows published, when, rows of the run in the table now) as the runs table noted the
  run's publish; None when no publish of it committed."""
  with connect(target, password_secret=password_secret) as conn, conn.cursor() as cursor:
    if not _exists(cursor, target.schema, runs_table(target)):
      return None
    cursor.execute(f'SELECT attempt, rows, published_at FROM {quote(conn, target.schema, runs_table(target))} '
                   'WHERE run_id = %s', (run_id,))
    noted = cursor.fetchone()
    if noted is None:
      return None
    cursor.execute(f'SELECT count(*) FROM {quote(conn, target.schema, target.table)} WHERE run_id = %s', (run_id,))
    attempt, rows, when = noted
    return attempt, rows, when.isoformat(timespec='seconds'), cursor.fetchone()[0]
