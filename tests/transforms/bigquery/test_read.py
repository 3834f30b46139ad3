"""The columnar Storage Read source: sessions and streams against the emulator, re-chunking without Beam."""

import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from testing import penguin_tables as penguins
from testing.cloud_fixtures import BUCKET, PROJECT
from transforms.bigquery import tables as bq
from transforms.bigquery import read as bqr
from transforms.rows import dead_letters as dl
from transforms.rows.dead_letters import DEAD_LETTERS

WHEN = datetime.datetime(2026, 11, 25, 17, 30, tzinfo=datetime.timezone.utc)


_penguins = penguins.many
_table_schema = penguins.table_schema
_read = penguins.read_session


def _load(bq_client, dataset: str, name: str, data: pa.Table) -> bq.TableRef:
  return penguins.load_table(bq_client, BUCKET, dataset, name, data)


@pytest.mark.slow
def test_read_streams__every_row_once_typed_and_chunked_from_parallel_streams(bq_client, bq_dataset, tmp_path):
  data = _penguins(200_000)
  table = _load(bq_client, bq_dataset, 'many', data)
  schema = _table_schema(bq_client, table)
  session = bqr.create_read_session(table, schema, project=PROJECT, max_streams=4)
  assert len(session.streams) == 4 and len(set(session.streams)) == 4
  want = str(tmp_path / 'want.parquet')  # the matcher reads it: a captured table is pickled with every step
  pq.write_table(data.cast(schema).sort_by(penguins.KEY), want)

  def check(batches):
    assert all(b.num_rows <= 6000 for b in batches)
    # The emulator splits the rows evenly: each stream's 50,000 rows end in one 2,000-row batch.
    assert sorted(b.num_rows for b in batches)[:5] == [2000] * 4 + [6000]
    got = pa.Table.from_batches(batches)
    assert got.schema == schema.append(pa.field(dl.SOURCE, pa.string())).append(pa.field(dl.ROW, pa.int64()))
    assert pc.all(pc.equal(got[dl.SOURCE], str(table))).as_py() and got[dl.ROW].null_count == got.num_rows
    got = got.drop_columns([dl.SOURCE, dl.ROW])
    assert pc.count_distinct(got[penguins.KEY]).as_py() == got.num_rows == 200_000
    assert got.sort_by(penguins.KEY).equals(pq.read_table(want, schema=schema))

  with test_pipeline.TestPipeline() as p:
    read = p | bqr.ReadBigQueryStreams(session, batch_size=6000)
    assert_that(read['batches'], check)
    assert_that(read[DEAD_LETTERS], equal_to([]), label='NoDeadLetters')


def test_create_read_session__the_server_applies_the_row_restriction(bq_client, bq_dataset):
  table = _load(bq_client, bq_dataset, 'penguins', penguins.table())
  schema = _table_schema(bq_client, table)
  session = bqr.create_read_session(table, schema, project=PROJECT, row_restriction="species = 'Gentoo'")
  got = _read(session)
  assert session.row_restriction == "species = 'Gentoo'"
  assert got.num_rows == 124 and set(got['species'].to_pylist()) == {'Gentoo'}


def test_create_read_session__reads_only_the_selected_columns_in_the_order_asked(bq_client, bq_dataset):
  table = _load(bq_client, bq_dataset, 'penguins', penguins.table())
  schema = _table_schema(bq_client, table, names={'body_mass_g', penguins.KEY, 'year'})
  schema = pa.schema([schema.field('year'), schema.field(penguins.KEY), schema.field('body_mass_g')])
  got = _read(bqr.create_read_session(table, schema, project=PROJECT), batch_size=50)
  assert got.column_names == ['year', penguins.KEY, 'body_mass_g', dl.SOURCE, dl.ROW]
  assert got.select(schema.names).sort_by(penguins.KEY).equals(
      penguins.table().select(schema.names).sort_by(penguins.KEY))


def test_create_read_session__records_the_snapshot_time_in_utc(bq_client, bq_dataset):
  table = _load(bq_client, bq_dataset, 'penguins', penguins.table())
  schema = _table_schema(bq_client, table, names={penguins.KEY})
  at_paris = WHEN.astimezone(datetime.timezone(datetime.timedelta(hours=1)))
  assert bqr.create_read_session(table, schema, project=PROJECT, snapshot_time=at_paris).snapshot_time == (
      '2026-11-25T17:30:00.000000+00:00')
  before = datetime.datetime.now(datetime.timezone.utc)
  session = bqr.create_read_session(table, schema, project=PROJECT)
  assert before <= datetime.datetime.fromisoformat(session.snapshot_time) <= datetime.datetime.now(
      datetime.timezone.utc)
  assert session.name.startswith(f'projects/{PROJECT}/') and session.server_schema


def test_create_read_session__a_missing_table_says_which(bq_client, bq_dataset):
  table = bq.TableRef.parse(f'bq://{bq_dataset}.absent')
  with pytest.raises(ValueError, match=rf'{table} does not exist .*check the project, dataset and table names'):
    bqr.create_read_session(table, pa.schema([('id', pa.string())]), project=PROJECT)


def test_create_read_session__a_missing_column_is_named(bq_client, bq_dataset):
  table = _load(bq_client, bq_dataset, 'penguins', penguins.table())
  schema = _table_schema(bq_client, table, names={penguins.KEY}).append(pa.field('beak_colour', pa.string()))
  with pytest.raises(ValueError, match=rf'{table} has no column beak_colour \(it has penguin_id, species, '):
    bqr.create_read_session(table, schema, project=PROJECT)


def test_create_read_session__a_refused_row_restriction_is_quoted(bq_client, bq_dataset):
  table = _load(bq_client, bq_dataset, 'penguins', penguins.table())
  schema = _table_schema(bq_client, table, names={penguins.KEY})
  with pytest.raises(ValueError, match=r"refused to read .* with the row restriction 'wings > 2'"):
    bqr.create_read_session(table, schema, project=PROJECT, row_restriction='wings > 2')


def test_read_streams__an_expired_or_unknown_session_says_to_re_run(bq_client, bq_dataset):
  table = _load(bq_client, bq_dataset, 'penguins', penguins.table())
  session = bqr.create_read_session(table, _table_schema(bq_client, table), project=PROJECT)
  gone = f'{session.name}x/streams/0'
  with pytest.raises(ValueError, match=rf'no longer knows stream {gone} .*expire about 6 hours .*re-run the job'):
    _read(bqr.ReadSession(session.name + 'x', table, (gone,), session.schema, session.snapshot_time,
                          server_schema=session.server_schema))


def _numbers(*sizes: int) -> list[pa.RecordBatch]:
  start, batches = 0, []
  for size in sizes:
    batches.append(pa.record_batch({'n': pa.array(range(start, start + size), pa.int64())}))
    start += size
  return batches


@pytest.mark.parametrize('sizes, size, want', [
    ((3, 10, 1, 0, 6), 4, [4, 4, 4, 4, 4]),  # small ones joined, large ones sliced
    ((5, 5), 4, [4, 4, 2]),  # the last may be shorter
    ((8,), 4, [4, 4]),
    ((), 4, []),
    ((0, 0), 4, []),
])
def test_rechunk__exactly_size_rows_per_batch_in_order(sizes, size, want):
  out = list(bqr.rechunk(_numbers(*sizes), size))
  assert [b.num_rows for b in out] == want
  assert [n for b in out for n in b.column('n').to_pylist()] == list(range(sum(sizes)))


def test_rechunk__slices_a_large_batch_without_copying():
  (batch,) = _numbers(10)
  first, _, _ = bqr.rechunk([batch], 4)
  assert first.column(0).buffers()[1].address == batch.column(0).buffers()[1].address


def test_rechunk__refuses_a_size_below_one():
  with pytest.raises(ValueError, match='batch size must be at least 1, not 0'):
    list(bqr.rechunk(_numbers(3), 0))
