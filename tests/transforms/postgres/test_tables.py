"""PostgreSQL targets and connections: URLs, Cloud SQL arguments, timeouts."""

import re

import pyarrow as pa
import pytest

from transforms.postgres import tables as postgres
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
