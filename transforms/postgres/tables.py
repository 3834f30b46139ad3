"""PostgreSQL and Cloud SQL tables: names, connections, column types, and the COPY sink.

Applications read predictions by key from a database, so a run must never show
half of itself there. The job writes every batch with COPY (CSV text that
pyarrow renders from the whole batch, never one INSERT per row) into a staging
table of its attempt, and the job's last step publishes the staged rows into
the serving table in one transaction (`transforms.postgres.publish`).

A target is named by a URL:

    postgresql://[USER@]HOST[:PORT]/DATABASE?table=[SCHEMA.]TABLE   any PostgreSQL (libpq parameters allowed)
    cloudsql://PROJECT:REGION:INSTANCE/DATABASE?table=[SCHEMA.]TABLE&user=IAM_USER[&ip_type=private]

A password is never part of the URL: libpq takes it from its environment
(PGPASSWORD, ~/.pgpass, PGSERVICEFILE) or the job reads it from Secret Manager
(`--db_password_secret`); Cloud SQL uses IAM database authentication by default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import re
import urllib.parse
from typing import Any, Iterator, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pcsv

from transforms.rows import counters
from transforms.rows import dead_letters as dl
from transforms.rows.dead_letters import DEAD_LETTERS

SCHEMES = ('postgresql://', 'postgres://', 'cloudsql://')
PUBLISH_MODES = ('upsert', 'replace')
IP_TYPES = ('public', 'private', 'psc')
# Staging tables start with this and a hash of (table, run id); PostgreSQL names stop at 63 bytes.
STAGING_PREFIX = '_bi_staging_'
_IDENTIFIER = re.compile(r'^[A-Za-z_][A-Za-z0-9_$]{0,62}$')
_INSTANCE = re.compile(r'^[a-z][a-z0-9\-.:]*:[a-z0-9\-]+:[a-z][a-z0-9\-]*$')
# SQLSTATE classes of errors a row causes: 22 data exception (a value out of range, bad text),
# 23 integrity constraint violation (CHECK, NOT NULL, foreign key). Anything else (a full disk,
# a lost connection, a missing privilege) is the database's state, not the row's: the bundle fails.
_ROW_ERROR_CLASSES = ('22', '23')

# PostgreSQL types of the Arrow types the job writes, for the tables it creates.
_PG_TYPE = {
    pa.string(): 'text', pa.large_string(): 'text', pa.float32(): 'real', pa.float64(): 'double precision',
    pa.int16(): 'smallint', pa.int32(): 'integer', pa.int64(): 'bigint', pa.bool_(): 'boolean', pa.date32(): 'date',
}
# Column types of an existing table that take each Arrow type's CSV text without loss of meaning.
_ACCEPTS = {
    'text': {'text', 'character varying', 'character', 'json', 'jsonb', 'uuid'},
    'real': {'real', 'double precision', 'numeric'},
    'double precision': {'double precision', 'numeric', 'real'},
    'smallint': {'smallint', 'integer', 'bigint', 'numeric', 'real', 'double precision'},
    'integer': {'integer', 'bigint', 'numeric', 'double precision'},
    'bigint': {'bigint', 'numeric'},
    'boolean': {'boolean'},
    'date': {'date', 'timestamp without time zone', 'timestamp with time zone'},
    'timestamp with time zone': {'timestamp with time zone'},
    'timestamp without time zone': {'timestamp without time zone', 'timestamp with time zone'},
}


def is_database(uri: Optional[str]) -> bool:
  return bool(uri) and uri.startswith(SCHEMES)


def pg_type(kind: pa.DataType) -> str:
  """The PostgreSQL column type the job creates for an Arrow type."""
  if pa.types.is_timestamp(kind):
    return 'timestamp with time zone' if kind.tz else 'timestamp without time zone'
  if kind in _PG_TYPE:
    return _PG_TYPE[kind]
  raise ValueError(f'no PostgreSQL column type for Arrow type {kind}')


def accepts(column_type: str, kind: pa.DataType) -> bool:
  """Whether an existing column of `column_type` (information_schema's data_type) takes `kind`."""
  return column_type in _ACCEPTS.get(pg_type(kind), set())


@dataclasses.dataclass(frozen=True)
class PgTarget:
  """A table in PostgreSQL or Cloud SQL, parsed from its URL (see the module docstring)."""
  uri: str
  schema: str
  table: str
  conninfo: Optional[str] = None  # libpq URL without `table`, for postgresql://
  instance: Optional[str] = None  # PROJECT:REGION:INSTANCE, for cloudsql://
  database: Optional[str] = None
  user: Optional[str] = None
  ip_type: str = 'public'

  @property
  def is_cloud_sql(self) -> bool:
    return self.instance is not None

  @property
  def qualified(self) -> str:
    return f'{self.schema}.{self.table}'

  def __str__(self) -> str:
    return self.uri

  @classmethod
  def parse(cls, uri: str) -> 'PgTarget':
    """Parses and checks a target URL; raises ValueError naming what is wrong and how to fix it."""
    if not is_database(uri):
      raise ValueError(f'{uri!r} is not a database table URL ({", ".join(SCHEMES)})')
    parts = urllib.parse.urlsplit(uri)
    if parts.password is not None or 'password' in urllib.parse.parse_qs(parts.query):
      raise ValueError(f'{_redacted(uri)}: a password may not be part of the URL (it would show in flags, logs '
                       'and job descriptions); set PGPASSWORD where the job runs, or pass --db_password_secret')
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    params = dict(query)
    name = params.pop('table', '')
    schema, _, table = name.rpartition('.')
    schema = schema or 'public'
    bad = [n for n in (schema, table) if not _IDENTIFIER.match(n)]
    if bad:
      raise ValueError(f'{uri}: give the table as ?table=[SCHEMA.]TABLE with plain names (letters, digits, _; '
                       f'at most 63), got {name!r}')
    database = parts.path.lstrip('/') or None
    if parts.scheme == 'cloudsql':
      instance = parts.netloc
      if not _INSTANCE.match(instance):
        raise ValueError(f'{uri}: a Cloud SQL URL is cloudsql://PROJECT:REGION:INSTANCE/DATABASE?table=...&user=...,'
                         f' got instance {instance!r}')
      if not database or not params.get('user'):
        raise ValueError(f'{uri}: a Cloud SQL URL names the DATABASE (its path) and the IAM database user (&user=, '
                         'a service account without .gserviceaccount.com)')
      ip_type = params.get('ip_type', 'public').lower()
      if ip_type not in IP_TYPES:
        raise ValueError(f'{uri}: ip_type must be one of {", ".join(IP_TYPES)}, got {ip_type!r}')
      return cls(uri, schema, table, instance=instance, database=database, user=params['user'], ip_type=ip_type)
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != 'table'])
    conninfo = urllib.parse.urlunsplit(('postgresql', parts.netloc, parts.path, rest, ''))
    return cls(uri, schema, table, conninfo=conninfo, database=database, user=parts.username)

  def run_prefix(self, run_id: str) -> str:
    """The start every staging table of (this table, run id) shares, and no other's does."""
    digest = hashlib.sha256(f'{self.qualified}\0{run_id}'.encode('utf-8')).hexdigest()[:16]
    return f'{STAGING_PREFIX}{digest}_'

  def staging_table(self, run_id: str, attempt: str) -> str:
    """One staging table per attempt, in the target's schema (its name fits 63 bytes)."""
    return self.run_prefix(run_id) + hashlib.sha256(attempt.encode('utf-8')).hexdigest()[:12]


def _redacted(uri: str) -> str:
  parts = urllib.parse.urlsplit(uri)
  netloc = parts.netloc.rsplit('@', 1)[-1]
  user = parts.username
  return urllib.parse.urlunsplit((parts.scheme, f'{user}:***@{netloc}' if user else netloc, parts.path, '', ''))


def read_secret(name: str) -> str:
  """The payload of a Secret Manager version, projects/P/secrets/S/versions/V (read where it is used)."""
  from google.cloud import secretmanager  # only jobs that use a secret need the client
  client = secretmanager.SecretManagerServiceClient()
  return client.access_secret_version(name=name).payload.data.decode('utf-8')


def cloud_sql_arguments(target: PgTarget, password: Optional[str], *, autocommit: bool = False) -> tuple[dict[str, Any], tuple[str, str],
                                                                               dict[str, Any]]:
  """The Cloud SQL Python Connector's arguments: (Connector(...), connect's positional, connect's keyword).

  IAM database authentication unless a password was given; psycopg as driver,
  so the same COPY code serves Cloud SQL and any PostgreSQL.
  """
  connector = {'enable_iam_auth': password is None, 'ip_type': target.ip_type, 'refresh_strategy': 'lazy'}
  connect = {'user': target.user, 'db': target.database, 'autocommit': autocommit,
             'application_name': 'batch-inference'}
  if password is not None:
    connect['password'] = password
  return connector, (target.instance, 'psycopg'), connect


@contextlib.contextmanager
def connect(target: PgTarget, *, password_secret: Optional[str] = None, autocommit: bool = False) -> Iterator[Any]:
  """A psycopg connection to the target's database; closed on exit (committing unless an error left it)."""
  import psycopg
  password = read_secret(password_secret) if password_secret else None
  if not target.is_cloud_sql:
    kwargs = {'password': password} if password is not None else {}
    with psycopg.connect(target.conninfo, autocommit=autocommit, application_name='batch-inference',
                         **kwargs) as conn:
      yield conn
    return
  from google.cloud.sql.connector import Connector
  connector_args, positional, connect_args = cloud_sql_arguments(target, password, autocommit=autocommit)
  with Connector(**connector_args) as connector:
    conn = connector.connect(*positional, **connect_args)
    try:
      yield conn
    finally:
      conn.close()


def quote(conn, *names: str) -> str:
  """Names quoted as SQL identifiers, dotted (`schema.table`)."""
  from psycopg import sql
  return sql.Identifier(*names).as_string(conn)


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
  """COPYs a batch; returns the rows the database refused, as (index, reason), after halving around them.

  Each try runs in its own savepoint, so a refused row undoes only its try. A
  batch with one bad row costs about 2·log2(rows) COPYs instead of one; errors
  that are not the row's (a full disk, a lost connection) are raised.
  """
  import psycopg
  try:
    with conn.transaction():
      copy_batch(conn, table, batch)
    return []
  except psycopg.Error as e:
    if not is_row_error(e):
      raise
    if batch.num_rows == 1:
      return [(0, error_reason(e))]
  half = batch.num_rows // 2
  first = copy_or_refuse(conn, table, batch.slice(0, half))
  second = copy_or_refuse(conn, table, batch.slice(half))
  return first + [(half + i, reason) for i, reason in second]


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


def refuse_whole_keys(conn, table: Sequence[str], batch: pa.RecordBatch, rows: pa.RecordBatch,
                      refused: list[tuple[int, str]], *, key_name: str, source: str,
                      run_id: str) -> tuple[pa.RecordBatch, int]:
  """Dead letters for the input rows (of `batch`) whose table rows (`rows`) the database refused, and how
  many table rows they had.

  A key laid out over several rows (a ranking: one per rank) is refused whole: its rows COPYed already
  are deleted from the staging table in the bundle's transaction, so no key is published with part of
  its ranking, and its one dead letter holds the whole ranking and the reason for each refused rank.
  """
  import pyarrow.compute as pc
  keys = rows.column(key_name)
  refused_keys = pc.unique(keys.take(pa.array([i for i, _ in refused], pa.int64())))
  unwritten = int(pc.sum(pc.is_in(keys, value_set=refused_keys)).as_py() or 0)
  if unwritten > len(refused):
    with conn.cursor() as cursor:
      cursor.execute(f'DELETE FROM {quote(conn, *table)} WHERE {quote(conn, key_name)} = ANY(%s)',
                     (refused_keys.to_pylist(),))
  whole = unwritten > len(refused) or rows.num_rows > batch.num_rows
  ranks = rows.column('rank') if whole and 'rank' in rows.schema.names else None
  why: dict[Any, list[str]] = {}
  for i, reason in refused:
    why.setdefault(keys[i].as_py(), []).append(f'rank {ranks[i].as_py()}: {reason}' if ranks is not None else reason)
  suffix = '; the key\'s whole ranking is rejected, so none of its rows is published' if whole else ''
  letters = refused_letters(batch, [(i, '; '.join(why[key]) + suffix)
                                    for i, key in enumerate(batch.column(key_name).to_pylist()) if key in why],
                            key_name=key_name, source=source, run_id=run_id)
  return letters, unwritten


class _CopyToStagingFn(beam.DoFn):
  """COPYs batches into the attempt's staging table, one transaction per bundle.

  The transaction opens with the bundle and commits when it finishes; each
  COPY runs in a savepoint inside it. A bundle that fails rolls back, so a
  retried bundle never leaves half its rows; a bundle a runner retries after
  its commit leaves duplicates, which the publish step collapses by primary
  key (and counts).
  """

  def __init__(self, target: PgTarget, staging: str, *, key_name: str, run_id: str,
               password_secret: Optional[str], layout):
    self._target = target
    self._staging = (target.schema, staging)
    self._key_name = key_name
    self._run_id = run_id
    self._password_secret = password_secret
    self._layout = layout  # RecordBatch -> the table's rows (e.g. one row per rank)
    self._stack: Optional[contextlib.ExitStack] = None
    self._conn = None
    self._bundle = None  # the open transaction of the current bundle
    self._not_written = counters.counter('rows_not_written')

  def setup(self):
    self._stack = contextlib.ExitStack()
    self._conn = self._stack.enter_context(connect(self._target, password_secret=self._password_secret,
                                                   autocommit=True))  # transactions are ours, below

  def start_bundle(self):
    self._bundle = self._conn.transaction()
    self._bundle.__enter__()

  def process(self, batch: pa.RecordBatch):
    rows = self._layout(batch)
    refused = copy_or_refuse(self._conn, self._staging, rows) if rows.num_rows else []
    unwritten = 0
    if refused:  # dead letters are input rows: a key with a refused rank is refused whole
      letters, unwritten = refuse_whole_keys(self._conn, self._staging, batch, rows, refused, key_name=self._key_name,
                                             source=str(self._target), run_id=self._run_id)
      self._not_written.inc(letters.num_rows)
      yield beam.pvalue.TaggedOutput(DEAD_LETTERS, letters)
    yield rows.num_rows - unwritten

  def finish_bundle(self):
    bundle, self._bundle = self._bundle, None
    bundle.__exit__(None, None, None)  # COMMIT

  def teardown(self):
    if self._bundle is not None:  # a bundle failed: roll its rows back
      with contextlib.suppress(Exception):
        self._bundle.__exit__(RuntimeError, RuntimeError('bundle failed'), None)
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
  """
  target: PgTarget
  staging: str
  key_name: str
  run_id: str
  password_secret: Optional[str] = None
  layout: Any = None

  def __post_init__(self):
    super().__init__()

  def expand(self, batches: beam.PCollection) -> dict[str, beam.PCollection]:
    results = batches | 'CopyToStaging' >> beam.ParDo(_CopyToStagingFn(
        self.target, self.staging, key_name=self.key_name, run_id=self.run_id,
        password_secret=self.password_secret, layout=self.layout or _same)).with_outputs(DEAD_LETTERS, main='written')
    return {'written': results['written'], DEAD_LETTERS: results[DEAD_LETTERS]}


def _same(batch: pa.RecordBatch) -> pa.RecordBatch:
  return batch

