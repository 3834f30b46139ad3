"""A PostgreSQL / Cloud SQL table as the run's output: check, stage, publish in one transaction.

The launcher checks the target (connection, columns, privileges), creates the
serving table when missing (from the prediction schema, the key as primary key)
and this attempt's staging table (`CREATE UNLOGGED TABLE ... (LIKE serving
INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`, so a row the serving table would
refuse is refused while it is written, and becomes a dead letter). Workers
COPY into the staging table (`transforms.postgres.write.WritePostgres`). The job's
last step (`pipelines.graph.finish`, through `transforms.postgres.destination`) calls `publish_run`, one transaction:

- `upsert` (default): every key of the run gets exactly its staged rows (the
  key's old rows are deleted, the new inserted), a key whose new rows the
  database refused loses its old ones (its dead letters say why), and rows an
  earlier attempt of this run id wrote for keys it no longer has are deleted,
  so a re-run is idempotent; other keys keep their rows, and are counted
  (`kept_keys`): a night that did not see them leaves them serving an
  earlier answer;
- `replace`: the staged rows become the whole table: a new table is filled
  and swapped in by renaming.

The same transaction notes the run in `_bi_runs_TABLE` beside the serving
table (run id, attempt, rows, when), so `status` can tell from the database
itself that a run published, even one killed right after the commit.
Both refuse a night that wrote fewer rows than `min_fraction` of the rows the
table holds (a truncated input), publishing nothing. The staging table is
dropped in the same transaction. Readers see the old rows until the commit and
the new ones after it (PostgreSQL's MVCC; upsert never blocks a reader,
replace blocks readers only for the rename). A failed or killed run leaves the
serving table exactly as it was; its staging tables say when they were made
(a table comment), so a later run drops those of attempts killed long ago
(`remove_stale`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import re
import time
from typing import Optional, Sequence

import pyarrow as pa

from transforms.destination import TableCounts
from transforms.postgres.arrays import has_pgvector
from transforms.postgres.tables import STAGING_PREFIX, PgTarget, accepts, connect, connection_problem, pg_type, quote

# The privileges the job needs on an existing serving table, each checked on its own.
TABLE_PRIVILEGES = ('SELECT', 'INSERT', 'UPDATE', 'DELETE')


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
  """{column: (data_type, nullable, has_default)} of the serving table; an array's or an extension's type by its
  full name (real[], vector(768)), where information_schema says only ARRAY or USER-DEFINED."""
  cursor.execute("SELECT c.column_name, CASE WHEN c.data_type IN ('ARRAY', 'USER-DEFINED') "
                 'THEN format_type(a.atttypid, a.atttypmod) ELSE c.data_type END, c.is_nullable = %s, '
                 'c.column_default IS NOT NULL FROM information_schema.columns c JOIN pg_attribute a '
                 'ON a.attrelid = to_regclass(%s) AND a.attname = c.column_name '
                 'WHERE c.table_schema = %s AND c.table_name = %s',
                 ('YES', f'"{target.schema}"."{target.table}"', target.schema, target.table))
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
        # One call per privilege: has_table_privilege with a list answers whether the user holds ANY of them.
        name = f'"{target.schema}"."{target.table}"'
        missing = []
        for privilege in TABLE_PRIVILEGES:
          cursor.execute('SELECT has_table_privilege(%s, %s)', (name, privilege))
          if not cursor.fetchone()[0]:
            missing.append(privilege)
        if missing:
          problems.append(f'{target}: the user lacks {", ".join(missing)} on {target.qualified} (the job needs '
                          f'{", ".join(TABLE_PRIVILEGES)}): GRANT {", ".join(missing)} ON {target.qualified} TO '
                          'the job\'s user')
      conn.rollback()
      return problems
  except psycopg.Error as e:
    return [f'{target}: cannot connect or query: {connection_problem(target, e)}']


def _stamp(run_id: str, attempt: str, target: PgTarget, created_serving: bool) -> str:
  """A staging table's comment: whose it is and when it was made (for `remove_stale`), and whether this attempt
  created the serving table (its first publish may then build the table's index once, after the load)."""
  return json.dumps({'staging_for': target.qualified, 'run_id': run_id, 'attempt': attempt,
                     'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                     'created_serving': created_serving})


def create_tables(target: PgTarget, schema: pa.Schema, key: Sequence[str], *, run_id: str, attempt: str,
                  key_name: str, password_secret: Optional[str] = None) -> None:
  """Creates the serving table if missing, this attempt's staging table like it, and the side table of refused
  keys (launcher, before workers); the staging tables' comments say when they were made."""
  staging, refused = target.staging_table(run_id, attempt), target.refused_table(run_id, attempt)
  with connect(target, password_secret=password_secret) as conn, conn.cursor() as cursor:
    pgvector = has_pgvector(cursor)
    columns = [f'{quote(conn, f.name)} {pg_type(f.type, pgvector=pgvector)}{"" if f.nullable else " NOT NULL"}'
               for f in schema]
    columns.append(f'PRIMARY KEY ({", ".join(quote(conn, k) for k in key)})')
    serving = quote(conn, target.schema, target.table)
    created_serving = not _exists(cursor, target.schema, target.table)
    cursor.execute(f'CREATE TABLE IF NOT EXISTS {serving} ({", ".join(columns)})')
    cursor.execute(f'CREATE UNLOGGED TABLE IF NOT EXISTS {quote(conn, target.schema, staging)} '
                   f'(LIKE {serving} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)')
    cursor.execute(f'CREATE UNLOGGED TABLE IF NOT EXISTS {quote(conn, target.schema, refused)} AS '
                   f'SELECT {quote(conn, key_name)} FROM {serving} WITH NO DATA')
    for name in (staging, refused):
      cursor.execute(f'COMMENT ON TABLE {quote(conn, target.schema, name)} IS '
                     f'{_literal(_stamp(run_id, attempt, target, created_serving))}')
    cursor.execute(f'CREATE TABLE IF NOT EXISTS {quote(conn, target.schema, runs_table(target))} '
                   '(run_id text PRIMARY KEY, attempt text, rows bigint, published_at timestamptz)')
    conn.commit()


def _literal(text: str) -> str:
  return "'" + text.replace("'", "''") + "'"


def stale_staging(cursor, target: PgTarget, run_id: str) -> list[str]:
  cursor.execute('SELECT tablename FROM pg_tables WHERE schemaname = %s AND starts_with(tablename, %s)',
                 (target.schema, target.run_prefix(run_id)))
  return sorted(r[0] for r in cursor.fetchall())


def drop_staging(target: PgTarget, run_id: str, attempt: Optional[str] = None, *,
                 password_secret: Optional[str] = None) -> None:
  """Drops the staging tables of one attempt, or (attempt None) of every attempt of the run."""
  with connect(target, password_secret=password_secret) as conn, conn.cursor() as cursor:
    names = (stale_staging(cursor, target, run_id) if attempt is None
             else [target.staging_table(run_id, attempt), target.refused_table(run_id, attempt)])
    for name in names:
      cursor.execute(f'DROP TABLE IF EXISTS {quote(conn, target.schema, name)}')
    conn.commit()


def remove_stale(target: PgTarget, older_than: datetime.timedelta, *,
                 password_secret: Optional[str] = None) -> list[str]:
  """Drops the staging tables of this serving table made more than `older_than` ago (by attempts that were killed:
  a finished attempt drops its own); returns their names. Tables without a readable stamp are left alone."""
  cutoff = datetime.datetime.now(datetime.timezone.utc) - older_than
  dropped = []
  with connect(target, password_secret=password_secret) as conn, conn.cursor() as cursor:
    cursor.execute("SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c JOIN pg_namespace n "
                   "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r' AND starts_with(c.relname, %s)",
                   (target.schema, STAGING_PREFIX))
    for name, comment in sorted(cursor.fetchall()):
      try:
        stamp = json.loads(comment or '')
        created = datetime.datetime.fromisoformat(stamp['created'])
      except (ValueError, TypeError, KeyError):
        continue
      if stamp.get('staging_for') == target.qualified and created < cutoff:
        cursor.execute(f'DROP TABLE IF EXISTS {quote(conn, target.schema, name)}')
        dropped.append(name)
    conn.commit()
  if dropped:
    logging.info('%s: dropped %d staging tables of attempts older than %s: %s', target, len(dropped), older_than,
                 ', '.join(dropped))
  return dropped


class TooFewRowsError(ValueError):
  """The run wrote far fewer rows than the table holds (`--min_input_fraction`); nothing was published."""


def _guard(target: PgTarget, run_id: str, written: int, held: int, min_fraction: float) -> None:
  """Refuses a night that wrote (or had refused) fewer rows than `min_fraction` of the `held` rows."""
  if min_fraction and held and written < min_fraction * held:
    raise TooFewRowsError(
        f'{target}: run {run_id} wrote {written:,} rows, {written / held:.1%} of the {held:,} the table holds, below '
        f'--min_input_fraction={min_fraction:g} (a truncated input?); nothing was published. If this night is '
        'meant to be smaller, pass a lower --min_input_fraction (0 turns the check off)')


def _counts(cursor, serving: str, key_of: str, run_id: str) -> TableCounts:
  """The table's rows, and the keys holding an earlier run's rows, read from the table."""
  cursor.execute(f'SELECT count(*), count(DISTINCT {key_of}) FILTER (WHERE run_id IS DISTINCT FROM %s) '
                 f'FROM {serving}', (run_id,))
  rows, kept = cursor.fetchone()
  return TableCounts(rows=rows, kept_keys=kept)


def publish_run(target: PgTarget, schema: pa.Schema, key: Sequence[str], *, run_id: str, attempt: str, rows: int,
                key_name: Optional[str] = None, mode: str = 'upsert', min_fraction: float = 0.0,
                password_secret: Optional[str] = None) -> TableCounts:
  """Publishes the attempt's staged rows in one transaction (see the module docstring).

  Args:
    schema: the columns the job wrote; `key` the serving table's primary key.
    rows: how many rows the job COPYed (counted from its PCollections).
    key_name: the rows' key (the first of `key` if None): a refused row's key loses its earlier rows.
    mode: 'upsert' or 'replace'.
    min_fraction: refuse to publish fewer rows than this fraction of the rows the table holds (0: never).

  Returns:
    The table's rows after the commit and, for upsert, the keys it holds from earlier runs only.

  Raises:
    ValueError: the staging table does not hold the rows the job wrote, or a
      key repeats in them, or it is gone and the table does not hold them
      either; TooFewRowsError: see `min_fraction`. The table is unchanged.
  """
  import psycopg
  staging, refused = target.staging_table(run_id, attempt), target.refused_table(run_id, attempt)
  started = time.monotonic()
  with connect(target, password_secret=password_secret) as conn, conn.cursor() as cursor:
    serving, staged_table = quote(conn, target.schema, target.table), quote(conn, target.schema, staging)
    key_of = quote(conn, key_name or key[0])
    cursor.execute(f'LOCK TABLE {serving} IN SHARE ROW EXCLUSIVE MODE')  # one publisher at a time; readers go on
    if not _exists(cursor, target.schema, staging):  # a retry of this step after its commit
      cursor.execute(f'SELECT count(*) FROM {serving} WHERE run_id = %s', (run_id,))
      held = cursor.fetchone()[0]
      counts = _counts(cursor, serving, key_of, run_id)
      conn.rollback()
      if held != rows:
        raise ValueError(f'{target}: staging table {staging} of run {run_id!r} is gone and the table holds {held:,} '
                         f'rows of the run, not the {rows:,} the job wrote; re-run with --run_id {run_id}')
      return counts
    refused_rows = 0
    if _exists(cursor, target.schema, refused):
      cursor.execute(f'SELECT count(*) FROM {quote(conn, target.schema, refused)}')
      refused_rows = cursor.fetchone()[0]
    cursor.execute(f'SELECT count(*) FROM {serving}')
    held = cursor.fetchone()[0]
    _guard(target, run_id, rows + refused_rows, held, min_fraction)  # refusals are not truncation
    names = ', '.join(quote(conn, c) for c in schema.names)
    source = f'SELECT {names} FROM {staged_table}'
    cursor.execute(f'SELECT count(*) FROM {staged_table}')
    staged = cursor.fetchone()[0]
    if staged != rows:  # a bundle a runner retried after its commit staged its rows twice: keep one copy
      keys = ', '.join(quote(conn, k) for k in key)
      cursor.execute(f'SELECT count(DISTINCT ({keys})) FROM {staged_table}')
      distinct = cursor.fetchone()[0]
      if distinct != rows:
        conn.rollback()
        raise ValueError(f'{target}: the staging table of run {run_id!r} holds {distinct:,} distinct keys '
                         f'({staged:,} rows) but the job wrote {rows:,} rows. The serving table is unchanged.')
      source = f'SELECT DISTINCT ON ({keys}) {names} FROM {staged_table}'
    try:
      if mode == 'replace' or (held == 0 and _stamp_of(cursor, target, staging).get('created_serving')):
        _swap_in(conn, cursor, target, f'{staging}_new', names, source)  # a table this attempt made, still empty
      else:
        _upsert(conn, cursor, target, key, key_of, run_id, names, source, staged_table,
                quote(conn, target.schema, refused) if refused_rows else None)
    except psycopg.errors.UniqueViolation as e:  # a key the input held twice: the database names one
      conn.rollback()
      detail = getattr(e.diag, 'message_detail', None) or str(e).splitlines()[0]
      raise ValueError(f'{target}: a key repeats in the rows of run {run_id!r} ({detail}), and the table holds one '
                       'row per key. The serving table is unchanged.') from None
    _note_run(conn, cursor, target, run_id, attempt, rows)
    counts = _counts(cursor, serving, key_of, run_id)
    for name in (staging, refused):
      cursor.execute(f'DROP TABLE IF EXISTS {quote(conn, target.schema, name)}')
    conn.commit()
  logging.info('run %s: published %d rows to %s (%s) in %.2fs; the table holds %d rows, %d keys from earlier runs '
               'only', run_id, rows, target, mode, time.monotonic() - started, counts.rows, counts.kept_keys)
  return counts


def _stamp_of(cursor, target: PgTarget, table: str) -> dict:
  cursor.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (f'"{target.schema}"."{table}"',))
  try:
    return json.loads(cursor.fetchone()[0] or '{}')
  except ValueError:
    return {}


def _upsert(conn, cursor, target: PgTarget, key: Sequence[str], key_of: str, run_id: str, names: str, source: str,
            staged_table: str, refused_table: Optional[str]) -> None:
  """Deletes the rows of every key the run staged or had refused, and those an earlier attempt of the run wrote,
  then inserts the staged rows: measured faster than INSERT ... ON CONFLICT DO UPDATE, whose row-by-row index
  probes took twice as long for a night that changes every row (docs/performance.md)."""
  serving = quote(conn, target.schema, target.table)
  keys = f'SELECT {key_of} FROM {staged_table}'
  if refused_table:
    keys += f' UNION ALL SELECT {key_of} FROM {refused_table}'
  if len(key) > 1 or refused_table:  # a key's rows (a ranking's ranks) delete once, not once per staged row
    keys = f'SELECT DISTINCT {key_of} FROM ({keys}) k'
  cursor.execute(f'DELETE FROM {serving} t USING ({keys}) s WHERE t.{key_of} = s.{key_of}')
  cursor.execute(f'DELETE FROM {serving} WHERE run_id = %s', (run_id,))  # keys an earlier attempt had
  cursor.execute(f'INSERT INTO {serving} ({names}) {source}')


def export_scored_keys(target: PgTarget, path: str, *, model_name: str, model_version: str, run_id: str,
                       key_name: str, version_column: Optional[str], password_secret: Optional[str] = None) -> int:
  """`--only_unscored`: writes the keys (and row versions) this model version scored in the table in other runs
  as one key file at `path` (`transforms.files.scored_keys.KEYS_SCHEMA`), which the job skips as a folder
  output's; returns how many. The table is the record of what was scored: no other record can disagree with it.

  Raises:
    ValueError: `version_column` is not a column of the table (pass it through so the table records it).
  """
  import pyarrow.csv as pcsv
  import pyarrow.parquet as pq
  from apache_beam.io.filesystems import FileSystems

  from transforms.files.scored_keys import KEYS_SCHEMA
  buffer = bytearray()
  with connect(target, password_secret=password_secret) as conn, conn.cursor() as cursor:
    if _exists(cursor, target.schema, target.table):
      columns = _columns(cursor, target)
      if version_column and version_column not in columns:
        raise ValueError(f'--only_unscored --row_version_column={version_column}: {target.qualified} has no column '
                         f'{version_column!r} to tell which version of a row was scored; pass it through '
                         f'(--passthrough={version_column}) so the table records it')
      version = f'{quote(conn, version_column)}::text' if version_column else 'NULL::text'
      query = (f'SELECT DISTINCT {quote(conn, key_name)}::text, {version} FROM {quote(conn, target.schema, target.table)}'
               ' WHERE model_name = %s AND model_version = %s AND run_id IS DISTINCT FROM %s')
      with cursor.copy(f'COPY ({query}) TO STDOUT (FORMAT csv)', (model_name, model_version, run_id)) as copy:
        for block in copy:
          buffer += block
  keys = pcsv.read_csv(pa.py_buffer(bytes(buffer)), read_options=pcsv.ReadOptions(column_names=KEYS_SCHEMA.names),
                       convert_options=pcsv.ConvertOptions(column_types=KEYS_SCHEMA, strings_can_be_null=True,
                                                           quoted_strings_can_be_null=False)) if buffer else (
                                                               KEYS_SCHEMA.empty_table())
  with FileSystems.create(path) as f:
    pq.write_table(keys.cast(KEYS_SCHEMA), f)
  return keys.num_rows


def _swap_in(conn, cursor, target: PgTarget, new: str, names: str, source: str) -> None:
  """Fills a copy of the serving table, builds its indexes once over the loaded rows, and renames it into place,
  inside the caller's transaction. Readers wait only from the rename to the commit. Grants and views on the old
  table do not follow it (see docs/guides/postgresql-and-cloud-sql.md)."""
  serving, fresh = quote(conn, target.schema, target.table), quote(conn, target.schema, new)
  old = f'{new[:-4]}_old'
  cursor.execute(f'CREATE TABLE {fresh} (LIKE {serving} INCLUDING ALL EXCLUDING INDEXES)')
  cursor.execute(f'INSERT INTO {fresh} ({names}) {source}')
  cursor.execute('SELECT c.relname, con.conname, pg_get_constraintdef(con.oid), pg_get_indexdef(i.indexrelid) '
                 'FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid LEFT JOIN pg_constraint con '
                 'ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid WHERE i.indrelid = to_regclass(%s) '
                 'ORDER BY i.indisprimary DESC, c.relname', (f'"{target.schema}"."{target.table}"',))
  renames = []
  for number, (index, constraint, constraint_def, index_def) in enumerate(cursor.fetchall()):
    temporary = f'{new[:40]}_ix{number}'
    if constraint:  # a primary key, unique or exclusion constraint: added as such, its index built now
      cursor.execute(f'ALTER TABLE {fresh} ADD CONSTRAINT {quote(conn, temporary)} {constraint_def}')
      renames.append(f'ALTER TABLE {serving} RENAME CONSTRAINT {quote(conn, temporary)} TO {quote(conn, constraint)}')
    else:
      cursor.execute(_INDEX_TARGET.sub(lambda m: f'{m.group(1)}{quote(conn, temporary)} ON {fresh} ', index_def,
                                       count=1))
      renames.append(f'ALTER INDEX {quote(conn, target.schema, temporary)} RENAME TO {quote(conn, index)}')
  cursor.execute(f'ALTER TABLE {serving} RENAME TO {quote(conn, old)}')
  cursor.execute(f'ALTER TABLE {fresh} RENAME TO {quote(conn, target.table)}')
  cursor.execute(f'DROP TABLE {quote(conn, target.schema, old)}')
  for rename in renames:  # the indexes and constraints take the old ones' names back
    cursor.execute(rename)


# `CREATE [UNIQUE] INDEX name ON [ONLY] table ` in pg_get_indexdef's text: where the copy's names go.
_INDEX_TARGET = re.compile(r'^(CREATE (?:UNIQUE )?INDEX )(?:"(?:[^"]|"")*"|\S+) ON (?:ONLY )?(?:"(?:[^"]|"")*"|[^\s"])+ ')


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
