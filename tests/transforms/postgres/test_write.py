"""The COPY sink against a real PostgreSQL server the tests start: batches in, refused rows out."""

import json

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.postgres import write as postgres
from transforms.postgres.tables import PgTarget
from transforms.rows.dead_letters import DEAD_LETTERS


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
