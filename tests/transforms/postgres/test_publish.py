"""The publish transaction against a real PostgreSQL server: what a table holds, its indexes, and what it refuses."""

import pyarrow as pa
import pytest

from transforms.postgres import publish as pgpub
from transforms.postgres.tables import PgTarget
from transforms.postgres.write import copy_batch

SCHEMA = pa.schema([pa.field('id', pa.string(), nullable=False), ('score', pa.float32()), ('run_id', pa.string())])


def _indexes(server, table):
  with server.connect() as conn:
    return conn.execute('SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s ORDER BY indexname',
                        (table,)).fetchall()


def _stage(server, table, run_id, attempt, ids):
  target = PgTarget.parse(server.url(table))
  pgpub.create_tables(target, SCHEMA, ('id',), run_id=run_id, attempt=attempt, key_name='id')
  batch = pa.RecordBatch.from_pydict({'id': ids, 'score': pa.array([0.5] * len(ids), pa.float32()),
                                      'run_id': [run_id] * len(ids)}, schema=SCHEMA)
  with server.connect() as conn:
    copy_batch(conn, (target.schema, target.staging_table(run_id, attempt)), batch)
    conn.commit()
  return target


def test_replace__builds_the_indexes_once_after_the_load_under_their_own_names(postgres_server):
  with postgres_server.connect(autocommit=True) as conn:
    conn.execute('CREATE TABLE swapped (id text PRIMARY KEY, score real CHECK (score >= 0), run_id text)')
    conn.execute('CREATE INDEX swapped_by_score ON swapped (score DESC)')
    conn.execute("INSERT INTO swapped SELECT 'old-' || g, 0.1, 'r0' FROM generate_series(1, 10) g")
  before = _indexes(postgres_server, 'swapped')
  target = _stage(postgres_server, 'swapped', 'r1', 'a1', [f'k{i}' for i in range(1000)])
  counts = pgpub.publish_run(target, SCHEMA, ('id',), run_id='r1', attempt='a1', rows=1000, mode='replace')
  assert counts.rows == 1000 and counts.kept_keys == 0
  assert _indexes(postgres_server, 'swapped') == before  # same names, same definitions
  with postgres_server.connect() as conn:
    assert conn.execute("SELECT count(*) FROM swapped WHERE id LIKE 'old-%'").fetchone()[0] == 0
    assert conn.execute('SELECT conname FROM pg_constraint WHERE conrelid = \'swapped\'::regclass ORDER BY 1'
                        ).fetchall() == [('swapped_pkey',), ('swapped_score_check',)]
    plan = conn.execute("EXPLAIN SELECT * FROM swapped WHERE id = 'k7'").fetchall()
  assert 'swapped_pkey' in str(plan)


def test_first_publish_into_a_table_the_run_created__has_its_primary_key(postgres_server):
  target = _stage(postgres_server, 'created_now', 'r1', 'a1', [f'k{i}' for i in range(500)])
  counts = pgpub.publish_run(target, SCHEMA, ('id',), run_id='r1', attempt='a1', rows=500)
  assert counts.rows == 500
  assert [name for name, _ in _indexes(postgres_server, 'created_now')] == ['created_now_pkey']


def test_a_key_staged_twice__is_refused_naming_it_and_the_table_is_unchanged(postgres_server):
  target = _stage(postgres_server, 'twice', 'r1', 'a1', ['k1', 'k2'])
  pgpub.publish_run(target, SCHEMA, ('id',), run_id='r1', attempt='a1', rows=2)
  target = _stage(postgres_server, 'twice', 'r2', 'a2', ['k3', 'k4', 'k3'])
  with pytest.raises(ValueError, match=r'a key repeats .*Key \(id\)=\(k3\)'):
    pgpub.publish_run(target, SCHEMA, ('id',), run_id='r2', attempt='a2', rows=3)
  with postgres_server.connect() as conn:
    assert conn.execute('SELECT id, run_id FROM twice ORDER BY id').fetchall() == [('k1', 'r1'), ('k2', 'r1')]
