"""PostgreSQL and Cloud SQL tables: names, connections, column types.

Applications read predictions by key from a database, so a run must never show
half of itself there. The job writes every batch with COPY into a staging
table of its attempt (`transforms.postgres.write`), and the job's last step
publishes the staged rows into the serving table in one transaction
(`transforms.postgres.publish`).

A target is named by a URL:

    postgresql://[USER@]HOST[:PORT]/DATABASE?table=[SCHEMA.]TABLE   any PostgreSQL (libpq parameters allowed)
    cloudsql://PROJECT:REGION:INSTANCE/DATABASE?table=[SCHEMA.]TABLE&user=IAM_USER[&ip_type=private]

A password is never part of the URL: libpq takes it from its environment
(PGPASSWORD, ~/.pgpass, PGSERVICEFILE) or the job reads it from Secret Manager
(`--db_password_secret`); Cloud SQL uses IAM database authentication by default.
A connection gives up after `connect_timeout` seconds (a URL parameter; 10 by
default, where libpq's own default waits as long as the operating system does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
import urllib.parse
from typing import Any, Iterator, Optional

import pyarrow as pa

from transforms.postgres import arrays

SCHEMES = ('postgresql://', 'postgres://', 'cloudsql://')
PUBLISH_MODES = ('upsert', 'replace')
IP_TYPES = ('public', 'private', 'psc')
# Staging tables start with this and a hash of (table, run id); PostgreSQL names stop at 63 bytes.
STAGING_PREFIX = '_bi_staging_'
# The side table of each staging table that holds the keys whose rows the database refused.
REFUSED_SUFFIX = '_refused'
# Seconds a connection waits for the server unless the URL says otherwise (&connect_timeout=).
CONNECT_TIMEOUT_S = 10
_IDENTIFIER = re.compile(r'^[A-Za-z_][A-Za-z0-9_$]{0,62}$')
_INSTANCE = re.compile(r'^[a-z][a-z0-9\-.:]*:[a-z0-9\-]+:[a-z][a-z0-9\-]*$')

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


def pg_type(kind: pa.DataType, *, pgvector: bool = False) -> str:
  """The PostgreSQL column type the job creates for an Arrow type.

  A list is an array of its element's type; an embedding (a fixed-size float
  list) is pgvector's `vector(n)` where the database has the extension
  (`pgvector`, asked at preflight and table creation by `arrays.has_pgvector`).
  """
  if arrays.is_list(kind):
    dimensions = arrays.vector_dimensions(kind)
    return f'vector({dimensions})' if pgvector and dimensions else pg_type(kind.value_type) + '[]'
  if pa.types.is_timestamp(kind):
    return 'timestamp with time zone' if kind.tz else 'timestamp without time zone'
  if kind in _PG_TYPE:
    return _PG_TYPE[kind]
  raise ValueError(f'no PostgreSQL column type for Arrow type {kind}')


def accepts(column_type: str, kind: pa.DataType) -> bool:
  """Whether an existing column of `column_type` takes `kind`: information_schema's data_type, or for an array or
  another extension's type its full name (real[], vector(768)), as `transforms.postgres.publish` reads it."""
  if arrays.is_list(kind):
    dimensions = arrays.vector_dimensions(kind)
    if dimensions and column_type == f'vector({dimensions})':
      return True
    return column_type.endswith('[]') and accepts(column_type[:-2], kind.value_type)
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
  connect_timeout: int = CONNECT_TIMEOUT_S  # seconds; the URL's &connect_timeout=

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
    timeout = params.get('connect_timeout', str(CONNECT_TIMEOUT_S))
    if not timeout.isdigit() or int(timeout) < 1:
      raise ValueError(f'{_redacted(uri)}: connect_timeout is the seconds a connection waits for the server, a whole '
                       f'number of at least 1; got {timeout!r}')
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
      return cls(uri, schema, table, instance=instance, database=database, user=params['user'], ip_type=ip_type,
                 connect_timeout=int(timeout))
    rest = [(k, v) for k, v in query if k != 'table']
    if 'connect_timeout' not in params:
      rest.append(('connect_timeout', timeout))
    conninfo = urllib.parse.urlunsplit(('postgresql', parts.netloc, parts.path, urllib.parse.urlencode(rest), ''))
    return cls(uri, schema, table, conninfo=conninfo, database=database, user=parts.username,
               connect_timeout=int(timeout))

  def run_prefix(self, run_id: str) -> str:
    """The start every staging table of (this table, run id) shares, and no other's does."""
    digest = hashlib.sha256(f'{self.qualified}\0{run_id}'.encode('utf-8')).hexdigest()[:16]
    return f'{STAGING_PREFIX}{digest}_'

  def staging_table(self, run_id: str, attempt: str) -> str:
    """One staging table per attempt, in the target's schema (its name fits 63 bytes)."""
    return self.run_prefix(run_id) + hashlib.sha256(attempt.encode('utf-8')).hexdigest()[:12]

  def refused_table(self, run_id: str, attempt: str) -> str:
    """The keys of the attempt's rows the database refused, which its publish removes from the table."""
    return self.staging_table(run_id, attempt) + REFUSED_SUFFIX


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
  connector = {'enable_iam_auth': password is None, 'ip_type': target.ip_type, 'refresh_strategy': 'lazy',
               'timeout': target.connect_timeout}
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
    try:
      conn = psycopg.connect(target.conninfo, autocommit=autocommit, application_name='batch-inference', **kwargs)
    except psycopg.OperationalError as e:
      raise psycopg.OperationalError(connection_problem(target, e)) from e
    with conn:
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


def connection_problem(target: PgTarget, error: Exception) -> str:
  """Why a connection failed, in one line; a timeout says how to wait longer."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  if 'timeout expired' in text or type(error).__name__ == 'ConnectionTimeout':
    text += (f' (no answer from the server in {target.connect_timeout} s; check the host and port, or give the URL '
             '&connect_timeout=SECONDS to wait longer)')
  return text


def quote(conn, *names: str) -> str:
  """Names quoted as SQL identifiers, dotted (`schema.table`)."""
  from psycopg import sql
  return sql.Identifier(*names).as_string(conn)
