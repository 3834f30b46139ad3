"""Each output URI picks its kind of destination once, each kind answers for itself, and no module outside
the storage packages asks which kind an output is."""

from __future__ import annotations

import ast
import dataclasses
import datetime
import pathlib
import types

import pyarrow as pa
import pytest

from pipelines.destinations import KINDS, kind_of
from pipelines.graph import finish
from pipelines.options import BatchInferenceOptions
from transforms.bigquery.destination import BigQueryTable, LoadedTable, StreamedTable
from transforms.destination import Destination, OutputRows, RunSettings
from transforms.files.destination import FileOutput
from transforms.postgres.destination import PostgresTable
from transforms.rows import dead_letters as dl

ROOT = pathlib.Path(__file__).resolve().parents[2]
STARTED = datetime.datetime(2026, 12, 7, tzinfo=datetime.timezone.utc)
ROWS = OutputRows('predictions', pa.schema([('id', pa.string()), ('score', pa.float32()),
                                            ('predicted_at', pa.timestamp('us', tz='UTC'))]),
                  {'score': 'The score.'}, 'predicted_at', key_name='id', primary_key=('id',))
LETTERS = OutputRows('dead_letters', dl.WRITTEN_SCHEMA, dl.DESCRIPTIONS, dl.REJECTED_AT, file_format='jsonl')


def _settings(**flags) -> RunSettings:
  return RunSettings('nightly', 'attempt-20261207T000000000000Z-abcdef', STARTED,
                     staging_base='gs://bucket/tmp/batch-inference', **flags)


@pytest.mark.parametrize('uri, kind', [
    ('bq://project.dataset.predictions', BigQueryTable),
    ('postgresql://app@db.example/shop?table=serving.scores', PostgresTable),
    ('cloudsql://project:region:instance/shop?table=scores&user=me', PostgresTable),
    ('gs://bucket/predictions', FileOutput),
    ('out/predictions', FileOutput),
])
def test_kind_of__the_uri_picks_one_kind(uri, kind):
  assert kind_of(uri) is kind
  assert [k for k in KINDS if k.claims(uri)][0] is kind


def test_kinds__keep_the_run_record_and_dead_letters_where_each_output_can():
  assert [k.holds_run_folders for k in (FileOutput, BigQueryTable, PostgresTable)] == [True, False, False]
  assert FileOutput.dead_letters_beside('out', 'out') == 'out'
  assert BigQueryTable.dead_letters_beside('bq://p.d.t', 'gs://b/runs') == 'bq://p.d.t_dead_letters'
  assert PostgresTable.dead_letters_beside('postgresql://h/db?table=t', 'gs://b/runs') == 'gs://b/runs'


def test_bigquery__the_write_method_picks_a_loaded_or_a_streamed_table():
  loaded = BigQueryTable.for_output('bq://p.d.t', ROWS, _settings())
  streamed = BigQueryTable.for_output('bq://p.d.t', ROWS, _settings(write_method='STREAMING_INSERTS'))
  assert isinstance(loaded, LoadedTable) and isinstance(streamed, StreamedTable)
  assert loaded.folder == 'gs://bucket/tmp/batch-inference/nightly/_attempt-20261207T000000000000Z-abcdef/predictions'
  assert (streamed.key_name, streamed.started_at, loaded.run_base) == ('id', STARTED, None)
  assert loaded.checks_before_query and not loaded.publishes_last


def test_bigquery__dead_letters_get_the_partition_column_they_are_stamped_with():
  table = BigQueryTable.for_output('bq://p.d.t_dead_letters', LETTERS, _settings())
  assert table.schema.names == dl.TABLE_SCHEMA.names and dl.REJECTED_AT not in dl.WRITTEN_SCHEMA.names
  streamed = BigQueryTable.for_output('bq://p.d.t_dead_letters', LETTERS, _settings(write_method='STREAMING_INSERTS'))
  assert streamed.key_name is None  # a refused dead letter is not routed again


def test_files__write_the_attempt_folder_and_dead_letters_as_json_lines():
  predictions = FileOutput.for_output('out/', ROWS, _settings(file_format='csv'))
  letters = FileOutput.for_output('out/', LETTERS, _settings(file_format='csv'))
  assert predictions.where == 'out/nightly/attempt-20261207T000000000000Z-abcdef' and predictions.run_base == 'out'
  assert (predictions.file_format, letters.file_format, letters.base_name) == ('csv', 'jsonl', 'dead_letters')
  assert predictions.publish(['out/x.csv'], 3) is None and not predictions.checks_before_query


def test_files__refuse_csv_for_rows_holding_lists():
  ranking = OutputRows('predictions', pa.schema([('id', pa.string()), ('top_items', pa.list_(pa.string()))]), {},
                       'predicted_at')
  with pytest.raises(ValueError, match=r'hold lists \(top_items: .*\), which CSV cannot hold'):
    FileOutput.for_output('out', ranking, _settings(file_format='csv'))
  assert FileOutput.for_output('out', ranking, _settings(file_format='jsonl')).file_format == 'jsonl'


def test_postgres__takes_the_serving_rows_and_refuses_dead_letters():
  serving = pa.schema([('id', pa.string()), ('rank', pa.int32())])
  rows = OutputRows(**{**ROWS.__dict__, 'serving_schema': serving})
  table = PostgresTable.for_output('postgresql://app@db/shop?table=serving.scores', rows, _settings())
  assert (table.schema, table.key, table.mode, table.publishes_last) == (serving, ('id',), 'upsert', True)
  assert table.staging.startswith('_bi_staging_')
  assert PostgresTable.flag_problems(None, 'dead_letter') == [
      '--dead_letter takes a folder or a bq:// table; dead letters do not go to PostgreSQL']
  with pytest.raises(ValueError, match='table'):
    PostgresTable.for_output('postgresql://app@db/shop', rows, _settings())


_KIND_NAMES = {'is_database', 'FileOutput', 'BigQueryTable', 'LoadedTable', 'StreamedTable', 'PostgresTable'}
_THEIR_HOMES = ('transforms/files/', 'transforms/bigquery/', 'transforms/postgres/', 'pipelines/destinations.py')


def test_no_module_outside_the_storage_packages_asks_which_kind_an_output_is():
  """Only the storage packages and the one dispatch (`kind_of`) name the kinds; the launcher, the graph, the
  last step and `status` ask the destination."""
  found = []
  for package in ('pipelines', 'models', 'transforms', 'deploy'):
    for path in (ROOT / package).rglob('*.py'):
      where = path.relative_to(ROOT).as_posix()
      if where.startswith(_THEIR_HOMES):
        continue
      for node in ast.walk(ast.parse(path.read_text(), where)):
        if isinstance(node, ast.ImportFrom) and any(a.name in _KIND_NAMES for a in node.names):
          found.append(f'{where}:{node.lineno} imports {[a.name for a in node.names if a.name in _KIND_NAMES]}')
  assert found == []


@dataclasses.dataclass(frozen=True)
class _Recording(Destination):
  """A destination that records what it was asked to publish, and fails where told to."""
  log: list = dataclasses.field(default_factory=list)
  fails: bool = False
  live: bool = False

  @classmethod
  def claims(cls, uri):
    return False

  @classmethod
  def for_output(cls, uri, rows, settings):
    raise NotImplementedError

  @property
  def publishes_last(self):
    return self.live

  def write(self):
    raise NotImplementedError

  def publish(self, written, rows):
    if self.fails:
      raise ValueError(f'{self.uri} failed')
    self.log.append((self.uri, list(written), rows))
    return rows


def _plan(predictions, dead_letters):
  return types.SimpleNamespace(run_id='night', predictions=predictions, dead_letters=dead_letters,
                               outputs=(predictions, dead_letters))


def test_publish__a_serving_database_publishes_after_the_other_output_and_not_when_it_failed():
  log = []
  database = _Recording('db', ROWS.schema, 'r', 'a', log=log, live=True)
  letters = _Recording('letters', LETTERS.schema, 'r', 'a', log=log)
  counts = {'rows_predicted': 7, 'rows_rejected': 3, 'rows_not_written': 1}  # the refused row among the rejected
  assert finish._publish(_plan(database, letters), [3, 4], ['f'], counts) == 7  # pylint: disable=protected-access
  assert log == [('letters', ['f'], 3), ('db', [3, 4], 7)]  # the refused row is among the dead letters
  log.clear()
  failing = _Recording('letters', LETTERS.schema, 'r', 'a', log=log, fails=True)
  with pytest.raises(ValueError, match='letters failed'):
    finish._publish(_plan(database, failing), [3, 4], ['f'], counts)  # pylint: disable=protected-access
  assert log == []


@pytest.mark.parametrize('output', ['bq://p.d.t', 'postgresql://app@db/shop?table=scores'])
def test_flags__any_output_that_holds_no_run_folders_needs_a_home_for_the_summary(output):
  flags = ['--model=m', '--input=x.csv', f'--output={output}', '--bq_write_method=STREAMING_INSERTS']
  with pytest.raises(ValueError, match='keeps its run summary and report in --summary_location'):
    BatchInferenceOptions(flags).validate_flags()
  BatchInferenceOptions(flags + ['--summary_location=build/runs']).validate_flags()
