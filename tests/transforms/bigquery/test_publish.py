"""Publishing Parquet files to BigQuery (load into staging, atomic per-run replace), against the emulators."""

import datetime
import threading
import time
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems
from google.cloud import bigquery

from transforms.bigquery import publish as publish
from testing.cloud_fixtures import PROJECT
from transforms.bigquery.tables import TableRef, table_schema

KEY = 'penguin_id'
CLASSES = ('Adelie', 'Chinstrap', 'Gentoo')
SCHEMA = pa.schema([
    pa.field(KEY, pa.string(), nullable=False), pa.field('species', pa.string()), pa.field('year', pa.int64()),
    *[pa.field(f'probability_{c}', pa.float64()) for c in CLASSES],
    pa.field('predicted_class', pa.string()), pa.field('predicted_probability', pa.float64()),
    pa.field('model_name', pa.string()), pa.field('model_version', pa.string()), pa.field('run_id', pa.string()),
    pa.field('predicted_at', pa.timestamp('us', tz='UTC'))])
BQ_SCHEMA = table_schema(SCHEMA, {KEY: 'Key of the input row.', 'run_id': 'The run that wrote the row.'})
DAY = datetime.datetime(2026, 11, 25, 3, 4, 5, 678901, tzinfo=datetime.timezone.utc)


def predictions(run_id: str, n: int, *, start: int = 0) -> pa.Table:
  """`n` prediction rows of `run_id`, keys start..start+n-1, spread over three days."""
  i = pa.array(range(start, start + n), pa.int64()).to_numpy()
  p = (i % 97) / 97.0
  return pa.table({
      KEY: [f'{run_id}-{k}' for k in i], 'species': [CLASSES[k % 3] for k in i], 'year': i % 3 + 2007,
      'probability_Adelie': p, 'probability_Chinstrap': (1 - p) / 2, 'probability_Gentoo': (1 - p) / 2,
      'predicted_class': [CLASSES[k % 3] for k in i], 'predicted_probability': p,
      'model_name': ['penguins'] * n, 'model_version': ['3'] * n, 'run_id': [run_id] * n,
      'predicted_at': [DAY + datetime.timedelta(days=int(k % 3), microseconds=int(k)) for k in i]}, schema=SCHEMA)


def write_parquet(prefix: str, rows: pa.Table, files: int = 1) -> list[str]:
  """`rows` as `files` Parquet files under `prefix` (gs://), as the job's sink writes them."""
  uris, step = [], -(-rows.num_rows // files)
  for n in range(files):
    uri = f'{prefix}/part-{n:05d}-of-{files:05d}.parquet'
    with FileSystems.create(uri) as handle:
      pq.write_table(rows.slice(n * step, step), handle, compression='snappy')
    uris.append(uri)
  return uris


def _of_run(run_id: Optional[str]) -> bigquery.QueryJobConfig:
  return bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter('r', 'STRING', run_id)] if run_id
                                 else [])


def table_rows(bq: bigquery.Client, table: TableRef, run_id: Optional[str] = None) -> list[dict]:
  where = 'WHERE run_id = @r' if run_id else ''
  return [dict(row) for row in bq.query(f'SELECT * FROM {table.sql} {where} ORDER BY {KEY}',
                                        job_config=_of_run(run_id)).result()]


def count(bq: bigquery.Client, table: TableRef, run_id: str) -> int:
  job = bq.query(f'SELECT COUNT(*) AS n FROM {table.sql} WHERE run_id = @r', job_config=_of_run(run_id))
  return int(next(iter(job.result()))['n'])


def stage_and_replace(bq, prefix: str, target: TableRef, run_id: str, rows: pa.Table, attempt: str = 'a1') -> int:
  """What the job's last step does: load into staging, create the target, replace, drop staging."""
  staging = publish.staging_table(target, run_id, attempt)
  publish.load_parquet(bq, write_parquet(f'{prefix}/{run_id}-{attempt}', rows) if rows.num_rows else [], staging,
                       BQ_SCHEMA)
  publish.ensure_table(bq, target, BQ_SCHEMA, partition_field='predicted_at')
  inserted = publish.replace_run_rows(bq, target, staging, run_id)
  publish.drop_tables(bq, [staging])
  return inserted


@pytest.fixture
def target(bq_dataset) -> TableRef:
  return TableRef.parse(f'bq://{bq_dataset}.predictions')


def test_staging_table__a_valid_name_in_the_targets_dataset():
  target = TableRef('p', 'd', 'predictions-eu')
  table = publish.staging_table(target, 'nightly/2026-11-25 #1', 'job:42')
  assert (table.project, table.dataset) == ('p', 'd')
  assert table.table.startswith(publish.STAGING_PREFIX) and table.table.replace('_', '').isalnum()
  assert len(publish.staging_table(TableRef('p', 'd', 't' * 1024), 'r' * 1024, 'a' * 1024).table) <= 1024
  assert publish.staging_table(target, 'a-b', 'x') != publish.staging_table(target, 'a_b', 'x')


def test_load_then_replace__a_new_target_holds_the_files_rows(bq_client, target, gcs_prefix, monkeypatch):
  rows = predictions('r', 300)
  staging = publish.staging_table(target, 'r', 'a1')
  sent = []
  original = bq_client._connection.api_request  # pylint: disable=protected-access

  def recording(*args, **kwargs):
    sent.append(kwargs)
    return original(*args, **kwargs)

  monkeypatch.setattr(bq_client._connection, 'api_request', recording)  # pylint: disable=protected-access
  assert publish.load_parquet(bq_client, write_parquet(gcs_prefix, rows, files=2), staging, BQ_SCHEMA) == 300
  publish.ensure_table(bq_client, target, BQ_SCHEMA, partition_field='predicted_at')
  assert publish.replace_run_rows(bq_client, target, staging, 'r') == 300

  assert table_rows(bq_client, target) == rows.sort_by(KEY).to_pylist()
  created = bq_client.get_table(target.dotted)
  assert (created.time_partitioning.type_, created.time_partitioning.field) == ('DAY', 'predicted_at')
  assert [(f.name, f.field_type, f.mode) for f in created.schema][:2] == [(KEY, 'STRING', 'REQUIRED'),
                                                                          ('species', 'STRING', 'NULLABLE')]
  assert created.schema[0].description == 'Key of the input row.'
  # The emulator keeps no table expiration (tables.get never returns one), so check what was asked of
  # BigQuery: the staging table expires in about a day, set at creation and again after the load.
  expirations = [int(kw['data']['expirationTime']) / 1000 for kw in sent
                 if staging.table in kw.get('path', '') + str(kw.get('data', {}).get('tableReference', {}))
                 and 'expirationTime' in (kw.get('data') or {})]
  assert len(expirations) == 2
  assert all(abs(e - time.time() - 24 * 3600) < 600 for e in expirations)


def test_rerun__replaces_exactly_that_runs_rows(bq_client, target, gcs_prefix):
  stage_and_replace(bq_client, gcs_prefix, target, 'r', predictions('r', 120))
  stage_and_replace(bq_client, gcs_prefix, target, 'r1', predictions('r1', 40))
  other = table_rows(bq_client, target, 'r1')

  rerun = predictions('r', 90, start=1000)
  assert stage_and_replace(bq_client, gcs_prefix, target, 'r', rerun, attempt='a2') == 90

  assert table_rows(bq_client, target, 'r') == rerun.sort_by(KEY).to_pylist()
  assert table_rows(bq_client, target, 'r1') == other
  keys = [row[KEY] for row in table_rows(bq_client, target)]
  assert len(keys) == len(set(keys)) == 130


def test_replace__a_target_with_other_column_order_and_an_extra_column(bq_client, target, gcs_prefix):
  fields = [bigquery.SchemaField.from_api_repr(f) for f in reversed(BQ_SCHEMA['fields'])]
  bq_client.create_table(bigquery.Table(target.dotted, schema=[bigquery.SchemaField('note', 'STRING'), *fields]))
  rows = predictions('r', 25)

  assert stage_and_replace(bq_client, gcs_prefix, target, 'r', rows) == 25

  got = table_rows(bq_client, target)
  assert [row.pop('note') for row in got] == [None] * 25
  assert got == rows.sort_by(KEY).to_pylist()


def test_replace__a_reader_sees_the_old_or_the_new_rows_never_both_nor_none(bq_client, target, gcs_prefix):
  """Polls the run's count from another client while a 50,000-row replace runs.

  The emulator runs each job inline on one event loop over one DuckDB
  connection, so a poll sent while the MERGE runs is answered only after it
  committed: the reader cannot interleave inside the statement. What this
  shows is that no job the replace runs ever publishes a state between the old
  and the new rows (a DELETE and INSERT as two jobs would be seen as 0 or as
  old + new); that one statement is also isolated from truly concurrent
  readers is BigQuery's documented DML guarantee, not something shown here.
  """
  old, new = 50_000, 50_011
  stage_and_replace(bq_client, gcs_prefix, target, 'r', predictions('r', old))
  stage_and_replace(bq_client, gcs_prefix, target, 'other', predictions('other', 7))
  staging = publish.staging_table(target, 'r', 'a2')
  publish.load_parquet(bq_client, write_parquet(f'{gcs_prefix}/new', predictions('r', new, start=10**6)), staging,
                       BQ_SCHEMA)
  reader = bigquery.Client(project=PROJECT)
  seen: list[tuple[float, float, int]] = []
  done = threading.Event()

  def poll() -> None:
    for _ in range(2000):  # bounded: the replace takes seconds, a poll about 50 ms
      sent = time.monotonic()
      n = count(reader, target, 'r')
      seen.append((sent, time.monotonic(), n))
      if done.is_set():
        return

  thread = threading.Thread(target=poll)
  thread.start()
  time.sleep(0.3)
  started = time.monotonic()
  assert publish.replace_run_rows(bq_client, target, staging, 'r') == new
  finished = time.monotonic()
  time.sleep(0.3)
  done.set()
  thread.join(timeout=60)

  assert {n for _, _, n in seen} <= {old, new}, sorted({n for _, _, n in seen})
  assert seen[0][2] == old and seen[-1][2] == new
  assert any(sent < finished and answered > started for sent, answered, _ in seen), 'no poll overlapped the replace'
  assert count(bq_client, target, 'other') == 7


@pytest.mark.parametrize('broken', ['missing', 'incompatible'])
def test_replace__a_failure_leaves_the_target_as_it_was(bq_client, bq_dataset, target, gcs_prefix, broken):
  stage_and_replace(bq_client, gcs_prefix, target, 'r', predictions('r', 50))
  before = table_rows(bq_client, target)
  staging = publish.staging_table(target, 'r', 'a2')
  if broken == 'incompatible':  # a TIMESTAMP column that holds text
    fields = [{**f, 'type': 'STRING'} if f['name'] == 'predicted_at' else f for f in BQ_SCHEMA['fields']]
    bq_client.create_table(bigquery.Table(staging.dotted, schema=[bigquery.SchemaField.from_api_repr(f)
                                                                  for f in fields]))
    row = {**predictions('r', 1, start=500).to_pylist()[0], 'predicted_at': 'yesterday'}
    assert bq_client.insert_rows_json(staging.dotted, [row]) == []
    match = rf'(?s)replacing the rows of run \'r\' in bq://{bq_dataset}\.predictions with those of .*_a2 failed: .+'
  else:
    match = rf'staging table bq://{bq_dataset}\.{staging.table} does not exist'

  with pytest.raises(ValueError, match=match) as error:
    publish.replace_run_rows(bq_client, target, staging, 'r')

  assert str(error.value).endswith('The target is unchanged.')
  assert table_rows(bq_client, target) == before


def test_load__a_file_that_is_not_parquet_fails_naming_the_table(bq_client, target, gcs_prefix):
  with FileSystems.create(f'{gcs_prefix}/bad.parquet') as handle:
    handle.write(b'not parquet')
  staging = publish.staging_table(target, 'r', 'a1')
  with pytest.raises(ValueError, match=rf'(?s)loading 1 Parquet file\(s\) into {staging} failed: .+output table is '
                                       'unchanged'):
    publish.load_parquet(bq_client, [f'{gcs_prefix}/bad.parquet'], staging, BQ_SCHEMA)


def test_stale_staging_tables__only_this_runs_and_drop_is_idempotent(bq_client, bq_dataset, target):
  def create(table: TableRef) -> TableRef:
    bq_client.create_table(bigquery.Table(table.dotted, schema=[bigquery.SchemaField('run_id', 'STRING')]))
    return table

  mine = [create(publish.staging_table(target, 'r', attempt)) for attempt in ('a1', 'a2')]
  others = [create(publish.staging_table(target, 'r1', 'a1')),
            create(publish.staging_table(TableRef.parse(f'bq://{bq_dataset}.predictions_dead_letters'), 'r', 'a1'))]

  assert sorted(publish.stale_staging_tables(bq_client, target, 'r'), key=str) == sorted(mine, key=str)
  publish.drop_tables(bq_client, mine)
  publish.drop_tables(bq_client, mine)
  assert publish.stale_staging_tables(bq_client, target, 'r') == []
  assert sorted(t.table_id for t in bq_client.list_tables(bq_dataset)) == sorted(t.table for t in others)


def test_no_files__an_empty_staging_table_and_the_rerun_deletes_the_runs_rows(bq_client, target, gcs_prefix):
  stage_and_replace(bq_client, gcs_prefix, target, 'r', predictions('r', 60))
  stage_and_replace(bq_client, gcs_prefix, target, 'r1', predictions('r1', 5))
  staging = publish.staging_table(target, 'r', 'a2')

  assert publish.load_parquet(bq_client, [], staging, BQ_SCHEMA) == 0
  loaded = bq_client.get_table(staging.dotted)
  assert loaded.num_rows == 0 and [f.name for f in loaded.schema] == SCHEMA.names
  assert publish.replace_run_rows(bq_client, target, staging, 'r') == 0
  assert (count(bq_client, target, 'r'), count(bq_client, target, 'r1')) == (0, 5)


@pytest.mark.slow
def test_load__200000_rows_from_two_files(bq_client, target, gcs_prefix):
  uris = write_parquet(gcs_prefix, predictions('big', 200_000), files=2)
  staging = publish.staging_table(target, 'big', 'a1')

  started = time.monotonic()
  loaded = publish.load_parquet(bq_client, uris, staging, BQ_SCHEMA)
  seconds = time.monotonic() - started
  print(f'\nload_parquet: 200,000 rows from 2 files in {seconds:.2f} s')

  assert loaded == 200_000
  assert count(bq_client, staging, 'big') == 200_000


def _staging_tables(bq_client, target: TableRef) -> list[str]:
  return [t.table_id for t in bq_client.list_tables(f'{target.project}.{target.dataset}')
          if t.table_id.startswith(publish.STAGING_PREFIX)]


def test_publish_run__a_new_run_id_is_one_append_and_a_rerun_is_swapped_in(bq_client, target, gcs_prefix):
  first, other = predictions('r', 300), predictions('o', 50)
  files = write_parquet(f'{gcs_prefix}/r1', first, files=2)
  assert publish.publish_run(bq_client, target, files, BQ_SCHEMA, rows=300, run_id='r', attempt='a1',
                             partition_field='predicted_at') == 300
  assert _staging_tables(bq_client, target) == []  # appended by the load job itself: no staging, no MERGE
  publish.publish_run(bq_client, target, write_parquet(f'{gcs_prefix}/o', other), BQ_SCHEMA, rows=50, run_id='o',
                      attempt='a1', partition_field='predicted_at')

  again = predictions('r', 120, start=1000)
  assert publish.publish_run(bq_client, target, write_parquet(f'{gcs_prefix}/r2', again), BQ_SCHEMA, rows=120,
                             run_id='r', attempt='a2', partition_field='predicted_at') == 120
  assert table_rows(bq_client, target, 'r') == again.sort_by(KEY).to_pylist()
  assert table_rows(bq_client, target, 'o') == other.sort_by(KEY).to_pylist()
  assert bq_client.get_table(target.dotted).clustering_fields in (['run_id'], None)  # None: the emulator drops it


def test_publish_run__two_launches_appending_at_once_end_with_one_copy(bq_client, target, gcs_prefix, monkeypatch):
  rows = predictions('r', 200)
  files = write_parquet(f'{gcs_prefix}/r', rows)
  original = publish._load  # pylint: disable=protected-access

  def the_other_launch_appends_too(bq, uris, table, schema, disposition):
    if disposition == bigquery.WriteDisposition.WRITE_APPEND:
      original(bq, uris, table, schema, disposition)  # the same run's rows, from a second launch
    return original(bq, uris, table, schema, disposition)

  monkeypatch.setattr(publish, '_load', the_other_launch_appends_too)
  assert publish.publish_run(bq_client, target, files, BQ_SCHEMA, rows=200, run_id='r', attempt='a1',
                             partition_field='predicted_at') == 200
  assert table_rows(bq_client, target, 'r') == rows.sort_by(KEY).to_pylist()


def test_replace_earlier_rows__deletes_only_that_runs_streamed_older_rows(bq_client, bq_dataset):
  table = TableRef.parse(f'bq://{bq_dataset}.runs')
  bq_client.create_table(bigquery.Table(table.dotted, schema=[
      bigquery.SchemaField('run_id', 'STRING'), bigquery.SchemaField('predicted_at', 'TIMESTAMP')]))
  bq_client.insert_rows_json(table.dotted, [
      {'run_id': 'a', 'predicted_at': '2026-01-01T00:00:00Z'}, {'run_id': 'a', 'predicted_at': '2026-01-03T00:00:00Z'},
      {'run_id': "b' OR 'x'='x", 'predicted_at': '2026-01-01T00:00:00Z'}])
  started = datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc)
  assert publish.replace_earlier_rows(bq_client, table, 'a', time_column='predicted_at', started=started) == 1
  assert publish.replace_earlier_rows(bq_client, table, "b' OR 'x'='x", time_column='predicted_at',
                                      started=started) == 1
  assert publish.rows_of_run(bq_client, table, 'a') == 1
  assert [r['run_id'] for r in bq_client.list_rows(table.dotted)] == ['a']


def test_publish_run__files_holding_other_than_the_counted_rows_are_refused(bq_client, target, gcs_prefix):
  publish.publish_run(bq_client, target, write_parquet(f'{gcs_prefix}/a', predictions('r', 30)), BQ_SCHEMA, rows=30,
                      run_id='r', attempt='a1', partition_field='predicted_at')
  with pytest.raises(ValueError, match="holds 40 rows of run 'r', but the job wrote 41 .* the output table is unchanged"):
    publish.publish_run(bq_client, target, write_parquet(f'{gcs_prefix}/b', predictions('r', 40)), BQ_SCHEMA,
                        rows=41, run_id='r', attempt='a2', partition_field='predicted_at')
  assert publish.rows_of_run(bq_client, target, 'r') == 30
