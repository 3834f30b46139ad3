"""The whole job into a real PostgreSQL table: scale, lookups, re-runs, refused rows, a killed run, preflight."""

import datetime
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.handlers.tensorflow import SavedModelPredictor
from models.examples.recommender import train
from pipelines import run as run_job
from transforms.rows.validation import validate

pytestmark = pytest.mark.slow

ROWS = 200_000
TOP_K = 3


@pytest.fixture(scope='module')
def shoppers(tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp('shoppers') / 'shoppers.parquet')
  pq.write_table(train.shoppers(ROWS, seed=1), path, row_group_size=50_000)
  return path


@pytest.fixture(scope='module')
def few_shoppers(tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp('few') / 'shoppers.parquet')
  pq.write_table(train.shoppers(2_000, seed=2), path)
  return path


def _flags(input_path, bundle, url, tmp_path, run_id, *extra):
  return [f'--input={input_path}', f'--model={bundle.path}', f'--output={url}', '--key_column=user_id',
          f'--top_k={TOP_K}', f'--summary_location={tmp_path / "runs"}', f'--run_id={run_id}', '--report=false',
          *extra]


def _run(*args, **kwargs):
  return run_job.run(_flags(*args, **kwargs))


def _table(server, table, where=''):
  with server.connect() as conn:
    return conn.execute(f'SELECT user_id, rank, item_id, score, run_id FROM {table} {where} '
                        'ORDER BY user_id, rank').fetchall()


def _staging_tables(server):
  with server.connect() as conn:
    return conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE '\\_bi\\_staging\\_%'").fetchall()


def _models_own_top_k(bundle, path, user_ids):
  """The model's top items for some users, computed outside Beam."""
  table = pq.read_table(path)
  rows = table.filter(pa.compute.is_in(table.column('user_id'), pa.array(user_ids))).combine_chunks().to_batches()[0]
  rows = rows.append_column('__source', pa.array([path] * rows.num_rows)).append_column(
      '__row', pa.array(np.arange(rows.num_rows), pa.int64()))
  valid, _ = validate(rows, bundle.features, key_column='user_id')
  scores = SavedModelPredictor(bundle.saved_model_path).predict(bundle.features.transform(valid))
  items = bundle.outputs.items
  return {key: [items[i] for i in np.argsort(-s, kind='stable')[:TOP_K]]
          for key, s in zip(valid.column('user_id').to_pylist(), scores)}


def test_200k_users__every_users_top_k_published_and_looked_up_by_key(tmp_path, postgres_server, recommender_bundle,
                                                                      shoppers):
  url = postgres_server.url('recs_scale')
  summary = _run(shoppers, recommender_bundle, url, tmp_path, 'nightly-1')

  assert summary.reconciled and summary.rows_read == ROWS
  assert summary.rows_predicted + summary.rows_rejected == ROWS and summary.rows_predicted > 0.99 * ROWS
  assert summary.rows_written == summary.rows_predicted * TOP_K
  with postgres_server.connect() as conn:
    count, users, runs = conn.execute('SELECT count(*), count(DISTINCT user_id), count(DISTINCT run_id) '
                                      'FROM recs_scale').fetchone()
    pk = conn.execute("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND "
                      "a.attnum = ANY(i.indkey) WHERE i.indrelid = 'recs_scale'::regclass AND i.indisprimary "
                      "ORDER BY a.attname").fetchall()
  assert (count, users, runs) == (summary.rows_written, summary.rows_predicted, 1)  # rows in table = predicted × K
  assert pk == [('rank',), ('user_id',)]

  looked_up = ['user-00000042', 'user-00123456', 'user-00199999']
  expected = _models_own_top_k(recommender_bundle, shoppers, looked_up)
  for user in looked_up:
    rows = _table(postgres_server, 'recs_scale', f"WHERE user_id = '{user}'")
    assert [r[1] for r in rows] == [1, 2, 3] and {r[4] for r in rows} == {'nightly-1'}
    assert [r[2] for r in rows] == expected[user]
    assert [r[3] for r in rows] == sorted((r[3] for r in rows), reverse=True)
  assert _staging_tables(postgres_server) == []

  again = _run(shoppers, recommender_bundle, url, tmp_path, 'nightly-1')  # the same run id: idempotent
  assert again.rows_written == summary.rows_written
  with postgres_server.connect() as conn:
    assert conn.execute('SELECT count(*), count(DISTINCT user_id) FROM recs_scale').fetchone() == (count, users)


def test_upsert_keeps_other_keys_and_replace_swaps_the_whole_table(tmp_path, postgres_server, recommender_bundle,
                                                                   few_shoppers):
  url = postgres_server.url('recs_modes')
  others = str(tmp_path / 'others.parquet')
  table = pq.read_table(few_shoppers).slice(0, 500)
  pq.write_table(table.set_column(0, 'user_id', pa.array([f'other-{i}' for i in range(500)])), others)

  _run(few_shoppers, recommender_bundle, url, tmp_path, 'day-1')
  _run(others, recommender_bundle, url, tmp_path, 'day-2', '--min_input_fraction=0')  # a small night, on purpose
  rows = _table(postgres_server, 'recs_modes')
  assert {r[4] for r in rows} == {'day-1', 'day-2'} and len(rows) == 2_500 * TOP_K

  summary = _run(others, recommender_bundle, url, tmp_path, 'day-3', '--db_publish_mode=replace',
                 '--min_input_fraction=0')
  rows = _table(postgres_server, 'recs_modes')
  assert {r[4] for r in rows} == {'day-3'} and len(rows) == summary.rows_written == 500 * TOP_K


def test_rows_the_database_refuses_become_dead_letters_and_the_rest_is_published(tmp_path, postgres_server,
                                                                                 recommender_bundle, few_shoppers):
  with postgres_server.connect(autocommit=True) as conn:  # the application's table, with its own rule
    conn.execute('CREATE TABLE recs_checked (user_id text, rank integer, item_id text, score real '
                 'CONSTRAINT score_worth_showing CHECK (score >= 0.05), model_name text, model_version text, '
                 'run_id text, predicted_at timestamptz, PRIMARY KEY (user_id, rank))')
  summary = _run(few_shoppers, recommender_bundle, postgres_server.url('recs_checked'), tmp_path, 'checked',
                 '--max_rejected_fraction=1')  # 22% of users refused: over the default bound, which counts them

  letters = []
  for path in glob.glob(os.path.join(summary.dead_letter, 'dead_letters-*.jsonl')):
    with open(path, encoding='utf-8') as f:
      letters += [json.loads(line) for line in f]
  refused = [d for d in letters if d['reason_code'] == 'write_error']
  assert summary.reconciled and summary.rows_not_written == len(refused) > 0
  assert all('score_worth_showing' in d['reason'] and d['stage'] == 'write' and d['run_id'] == 'checked'
             for d in refused)
  assert all(min(json.loads(d['record'])['top_scores']) < 0.05 for d in refused)  # a user's whole ranking each
  rows = _table(postgres_server, 'recs_checked')
  assert len(rows) == summary.rows_written == summary.rows_predicted * TOP_K
  assert min(r[3] for r in rows) >= 0.05
  assert {d['key'] for d in refused}.isdisjoint({r[0] for r in rows})


def test_a_run_killed_while_writing_leaves_the_table_as_it_was_and_a_rerun_publishes(
    tmp_path, postgres_server, recommender_bundle, shoppers, few_shoppers):
  url = postgres_server.url('recs_killed')
  _run(few_shoppers, recommender_bundle, url, tmp_path, 'nightly')
  before = _table(postgres_server, 'recs_killed')

  env = {**os.environ, 'PYTHONPATH': os.getcwd()}
  job = subprocess.Popen([sys.executable, '-m', 'pipelines.run',
                          *_flags(shoppers, recommender_bundle, url, tmp_path, 'nightly', '--read_batch_size=4096')],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
  try:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
      with postgres_server.connect() as conn:  # uncommitted COPY rows already take pages on disk
        staged = conn.execute("SELECT coalesce(sum(pg_relation_size(c.oid)), 0) FROM pg_class c "
                              "WHERE c.relname LIKE '\\_bi\\_staging\\_%' AND c.relkind = 'r'").fetchone()[0]
      if staged > 64 * 1024:
        break
      time.sleep(0.05)
    assert job.poll() is None, 'the job ended before it was seen writing'
    os.killpg(job.pid, signal.SIGKILL)
  finally:
    job.wait(30)
  assert _table(postgres_server, 'recs_killed') == before  # not one row of the killed run is visible
  assert _staging_tables(postgres_server)  # its staging table is left behind, for the next attempt

  summary = _run(few_shoppers, recommender_bundle, url, tmp_path, 'nightly')
  with postgres_server.connect() as conn:
    assert conn.execute('SELECT count(*), count(DISTINCT run_id) FROM recs_killed').fetchone() == (
        summary.rows_written, 1)
  assert summary.rows_written == summary.rows_predicted * TOP_K
  assert _staging_tables(postgres_server) == []  # the re-run dropped the killed attempt's staging table


def test_preflight__names_incompatible_columns_a_missing_key_and_missing_privileges(
    tmp_path, postgres_server, recommender_bundle, few_shoppers, capsys):
  with postgres_server.connect(autocommit=True) as conn:
    conn.execute('CREATE TABLE recs_wrong (user_id text, rank integer, item_id integer, score real, '
                 'model_name text, model_version text, run_id text, predicted_at timestamptz, '
                 'segment text NOT NULL)')
    conn.execute('DROP ROLE IF EXISTS reader')
    conn.execute('CREATE ROLE reader LOGIN')
  code = run_job.main(_flags(few_shoppers, recommender_bundle, postgres_server.url('recs_wrong'), tmp_path, 'p1',
                             '--preflight_only'))
  err = capsys.readouterr().err
  assert code == 2
  assert "column 'item_id' is integer, which cannot take text values" in err
  assert "column 'segment' (text) is NOT NULL without a default" in err
  assert 'needs PRIMARY KEY (user_id, rank)' in err

  code = run_job.main(_flags(few_shoppers, recommender_bundle, postgres_server.url('recs_new', user='reader'),
                             tmp_path, 'p2', '--preflight_only'))
  assert code == 2 and "no CREATE privilege on schema 'public'" in capsys.readouterr().err

  code = run_job.main(_flags(few_shoppers, recommender_bundle, postgres_server.url('recs_new'), tmp_path, 'p3',
                             '--preflight_only'))
  out = capsys.readouterr().out
  assert code == 0 and 'keyed by user_id, rank' in out
  with postgres_server.connect() as conn:  # --preflight_only changes nothing
    assert conn.execute("SELECT to_regclass('recs_new')").fetchone()[0] is None


def test_a_ranking_to_csv_files_is_refused_before_it_starts(tmp_path, recommender_bundle, few_shoppers, capsys):
  code = run_job.main([f'--input={few_shoppers}', f'--model={recommender_bundle.path}', f'--output={tmp_path}',
                       '--key_column=user_id', '--output_format=csv', '--preflight_only'])
  assert code == 2 and 'CSV cannot hold' in capsys.readouterr().err


def test_the_password_comes_from_libpqs_environment_and_is_never_written(
    tmp_path, postgres_server, recommender_bundle, few_shoppers, monkeypatch, capsys, caplog):
  from testing.postgres_server import PASSWORD_ROLE
  canary = 'CANARY-pg-0123456789-SECRET'
  with postgres_server.connect(autocommit=True) as conn:
    conn.execute(f'DROP ROLE IF EXISTS {PASSWORD_ROLE}')
    conn.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{canary}'")
    conn.execute(f'GRANT CREATE ON SCHEMA public TO {PASSWORD_ROLE}')
  url = postgres_server.url('recs_password', user=PASSWORD_ROLE)
  caplog.set_level('DEBUG')
  monkeypatch.delenv('PGPASSWORD', raising=False)
  assert run_job.main(_flags(few_shoppers, recommender_bundle, url, tmp_path, 'pw-0')) == 2  # no password: refused
  assert 'cannot connect' in capsys.readouterr().err

  monkeypatch.setenv('PGPASSWORD', canary)
  assert run_job.main(_flags(few_shoppers, recommender_bundle, url, tmp_path, 'pw-1')) == 0
  with postgres_server.connect() as conn:
    assert conn.execute('SELECT count(*) FROM recs_password').fetchone()[0] == 2_000 * TOP_K
  written = ''.join(open(p, encoding='utf-8', errors='replace').read()
                    for p in glob.glob(str(tmp_path / '**'), recursive=True) if os.path.isfile(p))
  captured = capsys.readouterr()
  assert 'rows_read' in written
  for text in (written, captured.out, captured.err, caplog.text):
    assert canary not in text


def _published(tmp_path, run_id) -> dict:
  from transforms.files.publish import read_pointer
  return read_pointer(str(tmp_path / 'runs'), run_id)


def _letters(folder):
  found = []
  for path in glob.glob(os.path.join(folder, 'dead_letters-*.jsonl')):
    with open(path, encoding='utf-8') as f:
      found += [json.loads(line) for line in f]
  return found


def test_upsert__a_key_whose_new_rows_the_database_refuses_keeps_none_of_last_nights(
    tmp_path, postgres_server, recommender_bundle, few_shoppers, capsys):
  url = postgres_server.url('recs_refused_keys')
  assert run_job.main(_flags(few_shoppers, recommender_bundle, url, tmp_path, 'night-1')) == 0
  with postgres_server.connect(autocommit=True) as conn:  # the application adds a rule for what it will show
    cutoff = conn.execute('SELECT percentile_disc(0.2) WITHIN GROUP (ORDER BY score) FROM recs_refused_keys '
                          f'WHERE rank = {TOP_K}').fetchone()[0]
    conn.execute(f'ALTER TABLE recs_refused_keys ADD CONSTRAINT worth_showing CHECK (score >= {cutoff}) NOT VALID')
  capsys.readouterr()
  assert run_job.main(_flags(few_shoppers, recommender_bundle, url, tmp_path, 'night-2',
                             '--max_rejected_fraction=0.5')) == 0
  printed = capsys.readouterr().out

  summary = _published(tmp_path, 'night-2')
  refused = {d['key'] for d in _letters(summary['dead_letter']) if d['reason_code'] == 'write_error'}
  assert summary['rows_not_written'] == len(refused) > 200  # a user with a refused rank is refused whole
  with postgres_server.connect() as conn:
    held = {user for user, in conn.execute('SELECT user_id FROM recs_refused_keys').fetchall()}
    stale = conn.execute("SELECT count(*) FROM recs_refused_keys WHERE run_id = 'night-1'").fetchone()[0]
    count = conn.execute('SELECT count(*) FROM recs_refused_keys').fetchone()[0]
  assert stale == 0  # no key serves last night's rows
  assert not {str(user) for user in held} & refused
  assert count == summary['rows_written'] == (2_000 - len(refused)) * TOP_K
  assert f'rows in table   {count:>12,}' in printed


def test_upsert__a_night_with_far_fewer_rows_than_the_table_fails_unless_allowed_and_reports_kept_keys(
    tmp_path, postgres_server, recommender_bundle, few_shoppers, capsys):
  url = postgres_server.url('recs_truncated')
  half = str(tmp_path / 'half.parquet')
  pq.write_table(pq.read_table(few_shoppers).slice(0, 900), half)  # a truncated input: 900 of 2,000 shoppers
  assert run_job.main(_flags(few_shoppers, recommender_bundle, url, tmp_path, 'night-1')) == 0
  before = _table(postgres_server, 'recs_truncated')
  capsys.readouterr()

  assert run_job.main(_flags(half, recommender_bundle, url, tmp_path, 'night-2')) == 1
  err = capsys.readouterr().err
  assert 'wrote 2,700 rows, 45.0% of the 6,000 the table holds' in err and '--min_input_fraction=0.5' in err
  assert _table(postgres_server, 'recs_truncated') == before and _staging_tables(postgres_server) == []

  assert run_job.main(_flags(half, recommender_bundle, url, tmp_path, 'night-3', '--min_input_fraction=0.4')) == 0
  out = capsys.readouterr().out
  assert 'keys kept              1,100' in out
  summary = _published(tmp_path, 'night-3')
  assert summary['keys_kept'] == 1_100 and summary['rows_written'] == 6_000
  with postgres_server.connect() as conn:
    assert conn.execute('SELECT run_id, count(DISTINCT user_id) FROM recs_truncated GROUP BY run_id '
                        'ORDER BY run_id').fetchall() == [('night-1', 1_100), ('night-3', 900)]


def test_only_unscored__into_a_database_scores_only_the_keys_its_table_lacks(
    tmp_path, postgres_server, recommender_bundle, few_shoppers):
  url = postgres_server.url('recs_unscored')
  more = str(tmp_path / 'more.parquet')
  table = pq.read_table(few_shoppers)
  new = table.slice(0, 500).set_column(0, 'user_id', pa.array([f'new-{i}' for i in range(500)]))
  pq.write_table(pa.concat_tables([table, new]), more)
  _run(few_shoppers, recommender_bundle, url, tmp_path, 'day-1')

  summary = _run(more, recommender_bundle, url, tmp_path, 'day-2', '--only_unscored')
  assert summary.reconciled and summary.rows_read == 2_500
  assert (summary.rows_skipped, summary.rows_predicted + summary.rows_rejected) == (2_000, 500)
  with postgres_server.connect() as conn:
    assert conn.execute('SELECT run_id, count(DISTINCT user_id) FROM recs_unscored GROUP BY run_id '
                        'ORDER BY run_id').fetchall() == [('day-1', 2_000), ('day-2', summary.rows_predicted)]
    assert conn.execute("SELECT count(*) FROM recs_unscored WHERE run_id = 'day-2' AND user_id NOT LIKE 'new-%'"
                        ).fetchone()[0] == 0


def test_preflight__a_role_that_may_only_select_is_refused_naming_each_missing_privilege(
    tmp_path, postgres_server, recommender_bundle, few_shoppers, capsys):
  with postgres_server.connect(autocommit=True) as conn:
    conn.execute('CREATE TABLE recs_read_only (user_id text, rank integer, item_id text, score real, '
                 'model_name text, model_version text, run_id text, predicted_at timestamptz, '
                 'PRIMARY KEY (user_id, rank))')
    conn.execute('DROP ROLE IF EXISTS looker')
    conn.execute('CREATE ROLE looker LOGIN')
    conn.execute('GRANT CREATE ON SCHEMA public TO looker')
    conn.execute('GRANT SELECT ON recs_read_only TO looker')
  code = run_job.main(_flags(few_shoppers, recommender_bundle, postgres_server.url('recs_read_only', user='looker'),
                             tmp_path, 'ro', '--preflight_only'))
  err = capsys.readouterr().err
  assert code == 2
  assert 'the user lacks INSERT, UPDATE, DELETE on public.recs_read_only' in err


def test_staging_left_by_a_killed_attempt__dropped_by_the_next_run_once_old_and_by_status_clean(
    tmp_path, postgres_server, recommender_bundle, few_shoppers, capsys):
  from pipelines.record import status
  from transforms.postgres import publish as pgpub
  from transforms.postgres.tables import PgTarget
  url = postgres_server.url('recs_leftovers')
  _run(few_shoppers, recommender_bundle, url, tmp_path, 'monday')
  target = PgTarget.parse(url)
  schema = pa.schema([('user_id', pa.string()), ('rank', pa.int32()), ('score', pa.float32())])

  def killed_attempt(run_id, hours_ago):  # what a launcher made before its job was killed
    pgpub.create_tables(target, schema, ('user_id', 'rank'), run_id=run_id, attempt='attempt-x', key_name='user_id')
    names = {target.staging_table(run_id, 'attempt-x'), target.refused_table(run_id, 'attempt-x')}
    created = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=hours_ago)).isoformat()
    with postgres_server.connect(autocommit=True) as conn:
      for name in names:
        conn.execute(f"""COMMENT ON TABLE "{name}" IS '{json.dumps({"staging_for": "public.recs_leftovers",
                     "run_id": run_id, "attempt": "attempt-x", "created": created})}'""")
    return names

  old, recent = killed_attempt('tuesday', 30), killed_attempt('wednesday', 1)
  assert old | recent <= {t for (t,) in _staging_tables(postgres_server)}
  _run(few_shoppers, recommender_bundle, url, tmp_path, 'thursday')  # another run id: only the old ones go
  assert {t for (t,) in _staging_tables(postgres_server)} == recent

  capsys.readouterr()
  assert status.main([f'--output={url}', '--clean=0.5']) == 0
  assert 'removed 2 leftover(s)' in capsys.readouterr().out
  assert _staging_tables(postgres_server) == []
