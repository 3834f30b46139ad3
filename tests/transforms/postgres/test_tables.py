"""PostgreSQL targets and the COPY sink, against a real PostgreSQL server the tests start."""

import json
import re

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.postgres import tables as postgres
from transforms.rows.dead_letters import DEAD_LETTERS
from transforms.postgres.tables import PgTarget


def test_parse__postgresql_url_keeps_libpq_parameters_and_takes_the_table():
  target = PgTarget.parse('postgresql://app@db.internal:6432/shop?sslmode=require&table=serving.recs')
  assert (target.schema, target.table, target.database, target.user) == ('serving', 'recs', 'shop', 'app')
  assert target.conninfo == 'postgresql://app@db.internal:6432/shop?sslmode=require&connect_timeout=10'
  assert PgTarget.parse('postgresql://app@db/shop?connect_timeout=3&table=recs').conninfo == (
      'postgresql://app@db/shop?connect_timeout=3')
  assert not target.is_cloud_sql
  assert PgTarget.parse('postgres:///shop?host=/run/pg&table=recs').schema == 'public'


@pytest.mark.parametrize('uri, message', [
    ('postgresql://app:hunter2@db/shop?table=recs', 'password may not be part of the URL'),
    ('postgresql://app@db/shop?password=hunter2&table=recs', 'password may not be part of the URL'),
    ('postgresql://app@db/shop', 'give the table as ?table='),
    ('postgresql://app@db/shop?table=a.b.c', 'plain names'),
    ('postgresql://app@db/shop?table=recs;drop', 'plain names'),
    ('cloudsql://my-project:europe-west1:main/shop?table=recs', 'IAM database user'),
    ('cloudsql://main/shop?table=recs&user=sa', 'PROJECT:REGION:INSTANCE'),
    ('cloudsql://p:europe-west1:main/shop?table=recs&user=sa&ip_type=vpn', 'ip_type must be one of'),
])
def test_parse__refuses_passwords_and_malformed_urls(uri, message):
  with pytest.raises(ValueError, match=re.escape(message)) as raised:
    PgTarget.parse(uri)
  assert 'hunter2' not in str(raised.value)


def test_cloud_sql__iam_authentication_through_the_connector_with_psycopg():
  # The Cloud SQL Python Connector cannot reach an instance here: this checks the arguments we hand it.
  target = PgTarget.parse('cloudsql://my-project:europe-west1:main/shop?table=recs&'
                          'user=batch@my-project.iam&ip_type=private')
  connector, positional, connect = postgres.cloud_sql_arguments(target, password=None)
  assert connector == {'enable_iam_auth': True, 'ip_type': 'private', 'refresh_strategy': 'lazy', 'timeout': 10}
  assert positional == ('my-project:europe-west1:main', 'psycopg')
  assert connect['user'] == 'batch@my-project.iam' and connect['db'] == 'shop' and 'password' not in connect
  import inspect

  from google.cloud.sql.connector import Connector, IPTypes, RefreshStrategy
  from google.cloud.sql.connector import psycopg as connector_psycopg
  # The installed connector takes these arguments: its constructor's names, its values, a psycopg driver.
  assert set(connector) <= set(inspect.signature(Connector).parameters)
  assert IPTypes._from_str('private') == IPTypes.PRIVATE and RefreshStrategy._from_str('lazy') == RefreshStrategy.LAZY
  assert {'user', 'db'} <= set(connect) and callable(connector_psycopg.connect)
  with_password = postgres.cloud_sql_arguments(target, password='from-secret-manager')
  assert with_password[0]['enable_iam_auth'] is False and with_password[2]['password'] == 'from-secret-manager'


@pytest.fixture
def scored_table(postgres_server, request):
  name = f't_{request.node.name[:40].lower().replace("[", "_").replace("]", "").replace("-", "_")}'
  with postgres_server.connect(autocommit=True) as conn:
    conn.execute(f'DROP TABLE IF EXISTS {name}')
    conn.execute(f'CREATE TABLE {name} (id text PRIMARY KEY, score real CHECK (score BETWEEN 0 AND 1), '
                 'label text NOT NULL, at timestamptz)')
  return name


def _batch(scores, labels=None):
  n = len(scores)
  return pa.RecordBatch.from_pydict({
      'id': [f'k{i}' for i in range(n)], 'score': pa.array(scores, pa.float32()),
      'label': labels or ['a, "quoted"\nline'] * n,
      'at': pa.array([0] * n, pa.timestamp('us', tz='UTC'))})


def test_copy_or_refuse__copies_a_batch_and_returns_only_the_rows_refused(postgres_server, scored_table):
  batch = _batch([0.5] * 1000)
  scores = [0.5] * 1000
  scores[17], scores[600] = 1.5, -2.0
  labels = ['ok'] * 1000
  labels[999] = None
  with postgres_server.connect() as conn:
    assert postgres.copy_or_refuse(conn, ('public', scored_table), batch) == []
    bad = _batch(scores, labels).set_column(0, 'id', pa.array([f'b{i}' for i in range(1000)]))
    refused = postgres.copy_or_refuse(conn, ('public', scored_table), bad)
    conn.commit()
    rows = conn.execute(f'SELECT count(*), min(label) FROM {scored_table}').fetchone()
  assert [i for i, _ in refused] == [17, 600, 999]
  assert 'violates check constraint' in refused[0][1] and refused[0][1].startswith('[23514]')
  assert 'null value in column "label"' in refused[2][1]
  assert rows == (1997, 'a, "quoted"\nline')  # text with commas, quotes and newlines survives COPY


def test_copy_or_refuse__raises_what_is_not_the_rows_fault(postgres_server, scored_table):
  import psycopg
  with postgres_server.connect() as conn:
    with pytest.raises(psycopg.errors.UndefinedColumn):
      postgres.copy_or_refuse(conn, ('public', scored_table), _batch([0.5]).append_column('extra', pa.array([1])))


def test_write_postgres__copies_every_batch_and_routes_refused_rows_to_dead_letters(postgres_server, scored_table):
  target = PgTarget.parse(postgres_server.url(scored_table))
  good, bad = _batch([0.1, 0.2, 0.3]), _batch([0.4, 7.0]).set_column(0, 'id', pa.array(['x', 'y']))
  with TestPipeline() as p:
    out = p | beam.Create([good, bad]) | postgres.WritePostgres(target, scored_table, key_name='id', run_id='r1')
    assert_that(out['written'], equal_to([3, 1]), label='Written')
    letters = out[DEAD_LETTERS] | beam.FlatMap(lambda b: b.to_pylist())
    assert_that(letters | beam.Map(lambda r: (r['key'], r['reason_code'], r['run_id'], r['stage'],
                                              json.loads(r['record'])['score'])),
                equal_to([('y', 'write_error', 'r1', 'write', 7.0)]), label='Refused')
  with postgres_server.connect() as conn:
    assert conn.execute(f'SELECT id FROM {scored_table} ORDER BY id').fetchall() == [('k0',), ('k1',), ('k2',),
                                                                                     ('x',)]


def _outputs(outputs):
  return [getattr(o, 'value', o) for o in outputs]  # finish_bundle's outputs come windowed


def test_copy_to_staging__a_bundle_that_fails_leaves_none_of_its_rows(postgres_server, scored_table):
  target = PgTarget.parse(postgres_server.url(scored_table))
  fn = postgres._CopyToStagingFn(target, scored_table, key_name='id', run_id='r1', password_secret=None,
                                 layout=lambda b: b, connections=2)
  fn.setup()
  fn.start_bundle()
  list(fn.process(_batch([0.1, 0.2])))
  fn.teardown()  # the runner gave up on the bundle before finish_bundle: its transaction rolls back
  fn.setup()
  fn.start_bundle()
  written = _outputs(fn.process(_batch([0.3]))) + _outputs(fn.process(
      _batch([0.4, 0.5]).set_column(0, 'id', pa.array(['x', 'y'])))) + _outputs(fn.finish_bundle())
  fn.teardown()
  assert sorted(written) == [1, 2]
  with postgres_server.connect() as conn:
    assert conn.execute(f'SELECT id, score FROM {scored_table} ORDER BY id').fetchall() == [
        ('k0', pytest.approx(0.3)), ('x', pytest.approx(0.4)), ('y', pytest.approx(0.5))]


def test_copy_connections__as_asked_or_up_to_four_while_the_server_has_room(postgres_server):
  with postgres_server.connect(autocommit=True) as conn:  # as the writer's: each query sees the server now
    assert postgres.copy_connections(conn, 7) == 7
    assert postgres.copy_connections(conn, None) == 4  # the tests' server takes 40 connections
    others = [postgres_server.connect() for _ in range(28)]  # the applications take most of them
    try:
      assert postgres.copy_connections(conn, None) == 1
    finally:
      for other in others:
        other.close()


def test_copy_or_refuse__a_batch_most_of_whose_rows_are_refused_costs_a_few_statements(postgres_server, scored_table):
  import time
  scores = [1.5 if i % 50 < 41 else 0.5 for i in range(20_000)]  # 82% refused, spread through the batch
  with postgres_server.connect() as conn:
    started = time.monotonic()
    refused = postgres.copy_or_refuse(conn, ('public', scored_table), _batch(scores, ['ok'] * 20_000))
    took = time.monotonic() - started
    conn.commit()
    held = conn.execute(f'SELECT count(*) FROM {scored_table}').fetchone()[0]
  assert [i for i, _ in refused] == [i for i, s in enumerate(scores) if s > 1]
  assert held == 20_000 - len(refused) == 3_600
  assert took < 3, f'{took:.1f}s: refusals should cost set-wise checks, not a COPY per halving'  # halving took ~40 s


def test_connect__a_server_that_never_answers_fails_in_the_default_10_s_saying_how_to_wait_longer(postgres_server):
  import socket
  import threading
  import time
  from transforms.postgres import publish as pgpub
  silent = socket.socket()  # accepts connections in the kernel's backlog and never answers
  silent.bind(('127.0.0.1', 0))
  silent.listen(8)
  target = PgTarget.parse(f'postgresql://app@127.0.0.1:{silent.getsockname()[1]}/shop?table=recs')
  found = []
  started = time.monotonic()
  worker = threading.Thread(target=lambda: found.extend(pgpub.check_target(target, pa.schema([]), ())), daemon=True)
  worker.start()
  worker.join(20)
  took = time.monotonic() - started
  silent.close()  # frees a connection attempt that has no timeout
  assert found and took < 12, f'no answer after {took:.0f}s'
  assert 'cannot connect' in found[0] and 'no answer from the server in 10 s' in found[0]
  assert '&connect_timeout=SECONDS' in found[0]
  with pytest.raises(ValueError, match='connect_timeout is the seconds'):
    PgTarget.parse('postgresql://app@db/shop?connect_timeout=soon&table=recs')
