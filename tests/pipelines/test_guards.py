"""The job's guards, run end to end: a night with too many rejections fails and publishes nothing, repeated
keys are found before anything is written, and a short ranking is counted.

Real files, the example penguin classifier and the example recommender, trained for real.
"""

import glob
import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from models.examples.penguins import train as penguins
from pipelines import run as run_job
from testing import penguin_tables
from transforms.files import publish

pytestmark = pytest.mark.slow

KEY = penguin_tables.KEY


def _main(tmp_path, bundle, input_path, *extra, run_id='night') -> int:
  return run_job.main([f'--input={input_path}', f'--model={bundle.path}', f'--output={tmp_path / "out"}',
                       f'--run_id={run_id}', '--report=false', '--quiet', *extra])


def _published(tmp_path, run_id='night') -> dict:
  return publish.read_pointer(str(tmp_path / 'out'), run_id)


def _predictions(summary: dict) -> pa.Table:
  return pa.concat_tables([pq.read_table(p) for p in sorted(glob.glob(os.path.join(summary['output'],
                                                                                   'predictions-*.parquet')))])


def _files_under(folder) -> list[str]:
  return [p for p in glob.glob(os.path.join(str(folder), '**'), recursive=True) if os.path.isfile(p)]


def _complete_penguins() -> pa.Table:
  """The example penguins with a key, less the 2 rows the model cannot score: none is rejected."""
  table = penguin_tables.table()
  return table.filter(pc.is_valid(table.column('bill_length_mm')))


# ---- the default rejection bound -----------------------------------------------------------------


def test_default_bound__a_night_with_40_percent_rejected_fails_publishes_nothing_and_says_why(
    tmp_path, penguin_bundle, capsys):
  table = _complete_penguins().slice(0, 300)
  bills = table.column('bill_length_mm').to_pylist()
  masses = table.column('body_mass_g').to_pylist()
  for i in range(0, 120, 2):  # 120 of 300 rows: 60 with no bill length, 60 with text for it
    bills[i] = None
    bills[i + 1] = 'n/a'
  rows = table.drop_columns(['bill_length_mm']).to_pylist()
  path = tmp_path / 'night.jsonl'
  path.write_text(''.join(json.dumps({**r, 'bill_length_mm': b, 'body_mass_g': m}) + '\n'
                          for r, b, m in zip(rows, bills, masses)))

  assert _main(tmp_path, penguin_bundle, str(path), f'--key_column={KEY}') == 1
  err = capsys.readouterr().err.strip().splitlines()
  message = next(line for line in err if 'rejected' in line)
  assert 'rejected 40.00% of its rows (120 of 300), more than --max_rejected_fraction=0.05 allows' in message
  assert 'top reasons: invalid_type 60, missing_value 60' in message
  assert 'Nothing was published' in message and 'pass --max_rejected_fraction=0.4 or more' in message
  assert _published(tmp_path) is None
  assert not [p for p in _files_under(tmp_path / 'out') if 'predictions-' in p]

  assert _main(tmp_path, penguin_bundle, str(path), f'--key_column={KEY}', '--max_rejected_fraction=0.4',
               run_id='allowed') == 0  # the flag the message names lets the same night publish
  assert _published(tmp_path, 'allowed')['rows_rejected'] == 120


def test_default_bound__the_bundled_demo_with_2_of_344_rejected_still_passes(tmp_path, penguin_bundle):
  assert _main(tmp_path, penguin_bundle, penguins.EXAMPLE_DATA) == 0
  summary = _published(tmp_path)
  assert (summary['rows_read'], summary['rows_rejected'], summary['reconciled']) == (344, 2, True)


# ---- duplicate keys --------------------------------------------------------------------------------


def _with_repeats(tmp_path) -> tuple[str, dict[str, int]]:
  """The complete penguins with 3 keys repeated: p0007 on 3 rows, p0010 and p0020 on 2 (7 rows of 342).
  Each row's updated_at is its position; the later copies have 1000 and up. Returns where each key was."""
  table = _complete_penguins().slice(0, 338)
  table = table.append_column('updated_at', pa.array(range(table.num_rows), pa.int64()))
  at = {key: i for i, key in enumerate(table.column(KEY).to_pylist())}
  repeats = table.take([at['p0007'], at['p0007'], at['p0010'], at['p0020']])
  repeats = repeats.set_column(repeats.schema.get_field_index('updated_at'), 'updated_at',
                               pa.array([1000, 1001, 1002, 1003], pa.int64()))
  path = str(tmp_path / 'repeats.parquet')
  pq.write_table(pa.concat_tables([table, repeats]), path)
  return path, at


def test_duplicate_keys__every_row_of_a_repeated_key_is_a_dead_letter_counted_with_examples(
    tmp_path, penguin_bundle, read_dead_letters):
  path, _ = _with_repeats(tmp_path)
  assert _main(tmp_path, penguin_bundle, path, f'--key_column={KEY}') == 0
  summary = _published(tmp_path)

  assert summary['duplicate_keys'] == {'keys': 3, 'rows': 7, 'examples': {'p0007': 3, 'p0010': 2, 'p0020': 2},
                                       'on_duplicate_key': 'reject'}
  assert summary['rows_read'] == 342 and summary['rejected_by_reason'] == {'duplicate_key': 7}
  assert summary['rows_predicted'] == 335 and summary['reconciled']
  keys = _predictions(summary).column(KEY).to_pylist()
  assert len(keys) == len(set(keys)) == 335 and not {'p0007', 'p0010', 'p0020'} & set(keys)
  letters = read_dead_letters(summary['dead_letter'])
  assert sorted(d['key'] for d in letters) == ['p0007'] * 3 + ['p0010'] * 2 + ['p0020'] * 2
  assert all(d['reason_code'] == 'duplicate_key' and d['stage'] == 'deduplicate' for d in letters)
  assert "key 'p0007' is on 3 rows of the input" in next(d['reason'] for d in letters if d['key'] == 'p0007')


def test_duplicate_keys__fail_stops_the_run_with_examples_and_publishes_nothing(tmp_path, penguin_bundle, capsys):
  path, _ = _with_repeats(tmp_path)
  assert _main(tmp_path, penguin_bundle, path, f'--key_column={KEY}', '--on_duplicate_key=fail') == 1
  err = capsys.readouterr().err
  assert ("3 keys appear more than once in the input (7 rows), e.g. 'p0007' ×3, 'p0010' ×2, 'p0020' ×2; "
          '--on_duplicate_key=fail stops the run before anything is written') in err
  assert _published(tmp_path) is None
  assert not [p for p in _files_under(tmp_path / 'out') if 'predictions-' in p]


def test_duplicate_keys__keep_last_by_keeps_the_latest_row_of_each_key_and_says_so(
    tmp_path, penguin_bundle, read_dead_letters):
  path, at = _with_repeats(tmp_path)
  assert _main(tmp_path, penguin_bundle, path, f'--key_column={KEY}', '--on_duplicate_key=keep_last_by:updated_at',
               '--passthrough_columns=updated_at') == 0
  summary = _published(tmp_path)

  predictions = _predictions(summary)
  keys = predictions.column(KEY).to_pylist()
  assert len(keys) == len(set(keys)) == 338
  latest = dict(zip(keys, predictions.column('updated_at').to_pylist()))
  assert (latest['p0007'], latest['p0010'], latest['p0020']) == (1001, 1002, 1003)
  assert summary['rejected_by_reason'] == {'superseded': 4} and summary['reconciled']
  assert summary['duplicate_keys']['on_duplicate_key'] == 'keep_last_by:updated_at'
  letters = read_dead_letters(summary['dead_letter'])
  assert sorted((d['key'], json.loads(d['record'])['updated_at']) for d in letters) == [
      ('p0007', at['p0007']), ('p0007', 1000), ('p0010', at['p0010']), ('p0020', at['p0020'])]
  assert all('the one with the highest updated_at was kept' in d['reason'] for d in letters)


def test_duplicate_keys__a_tie_on_the_order_keeps_no_row_of_the_key(tmp_path, penguin_bundle, read_dead_letters):
  table = _complete_penguins().slice(0, 100)
  table = table.append_column('updated_at', pa.array([5] * table.num_rows, pa.int64()))
  path = str(tmp_path / 'tied.parquet')
  pq.write_table(pa.concat_tables([table, table.slice(3, 1)]), path)  # one key twice, both updated_at 5
  assert _main(tmp_path, penguin_bundle, path, f'--key_column={KEY}', '--on_duplicate_key=keep_first_by:updated_at') == 0
  summary = _published(tmp_path)
  assert summary['rejected_by_reason'] == {'duplicate_key': 2} and summary['rows_predicted'] == 99
  assert table.column(KEY)[3].as_py() not in _predictions(summary).column(KEY).to_pylist()


# ---- rankings: keys are the input's keys; short rankings are counted --------------------------------


def test_ranking__repeated_users_are_counted_as_input_keys_and_short_rankings_are_reported(
    tmp_path, recommender_bundle, read_dead_letters):
  from models.examples.recommender import train as recommender
  shoppers = recommender.shoppers(250, seed=3).drop_null().slice(0, 200)  # rows the model can rank
  path = str(tmp_path / 'shoppers.parquet')
  pq.write_table(pa.concat_tables([shoppers, shoppers.slice(0, 2)]), path)  # 2 users on 2 rows each
  items = len(recommender_bundle.outputs.items)

  assert _main(tmp_path, recommender_bundle, path, '--key_column=user_id', f'--top_k={items + 5}') == 0
  summary = _published(tmp_path)
  assert summary['duplicate_keys']['keys'] == 2 and summary['duplicate_keys']['rows'] == 4
  assert summary['rejected_by_reason'] == {'duplicate_key': 4} and summary['rows_predicted'] == 198
  assert summary['short_rankings'] == {'rows': 198, 'top_k': items + 5}  # the catalogue is smaller than K

  assert _main(tmp_path, recommender_bundle, path, '--key_column=user_id', '--top_k=3', run_id='full') == 0
  assert _published(tmp_path, 'full')['short_rankings'] == {'rows': 0, 'top_k': 3}


# ---- rows a PostgreSQL table refuses count as rejected ----------------------------------------------


def _night_of_penguins(tmp_path, rows: int, bad_years: int) -> str:
  """`rows` complete penguins with their own keys; the first `bad_years` say year 1999."""
  complete = _complete_penguins()
  table = pa.concat_tables([complete] * -(-rows // complete.num_rows)).slice(0, rows)
  table = table.set_column(0, KEY, pa.array([f'p{i:07d}' for i in range(rows)], pa.string()))
  years = table.column('year').to_pylist()
  years[:bad_years] = [1999] * bad_years
  table = table.set_column(table.schema.get_field_index('year'), 'year', pa.array(years, pa.int64()))
  path = str(tmp_path / f'penguins-{bad_years}.parquet')
  pq.write_table(table, path)
  return path


def _scores(server, table):
  with server.connect() as conn:
    return conn.execute(f'SELECT {KEY}, predicted_class, year, run_id FROM {table} ORDER BY {KEY}').fetchall()


def test_refused_rows__count_in_the_rejection_bound_the_gate_and_the_summary(
    tmp_path, postgres_server, penguin_bundle, capsys):
  url = postgres_server.url('penguin_scores')
  flags = [f'--key_column={KEY}', '--passthrough_columns=year', f'--summary_location={tmp_path / "runs"}']

  def night(path, run_id, *extra):
    return run_job.main([f'--input={path}', f'--model={penguin_bundle.path}', f'--output={url}',
                         f'--run_id={run_id}', '--report=false', '--quiet', *flags, *extra])

  assert night(_night_of_penguins(tmp_path, 4_340, 0), 'night-1') == 0
  with postgres_server.connect(autocommit=True) as conn:  # the application's own rule on the table
    conn.execute('ALTER TABLE penguin_scores ADD CONSTRAINT year_known CHECK (year >= 2007)')
  before = _scores(postgres_server, 'penguin_scores')
  refusing = _night_of_penguins(tmp_path, 4_340, 10)  # 10 of 4,340 rows (0.23%) break the rule
  capsys.readouterr()

  assert night(refusing, 'night-2', '--max_rejected_fraction=0.001') == 1
  err = capsys.readouterr().err
  assert 'rejected 0.23% of its rows (10 of 4,340), more than --max_rejected_fraction=0.001 allows' in err
  assert 'top reasons: write_error 10' in err
  assert _scores(postgres_server, 'penguin_scores') == before  # nothing published

  assert night(refusing, 'night-2', '--max_rejected_fraction=1', '--gate=rejected_rate<=0.001') == 4
  assert 'rejected_rate is 0.002304' in capsys.readouterr().err
  assert _scores(postgres_server, 'penguin_scores') == before

  assert night(refusing, 'night-2') == 0  # within the default bound: published, and every count says so
  summary = publish.read_pointer(str(tmp_path / 'runs'), 'night-2')
  assert (summary['rows_read'], summary['rows_predicted'], summary['rows_rejected']) == (4_340, 4_330, 10)
  assert summary['rejected_by_reason'] == {'write_error': 10} and summary['rows_not_written'] == 10
  assert summary['reconciled'] and summary['rows_written'] == 4_330


def test_refused_rank_rows__reject_the_whole_ranking_of_their_key(tmp_path, postgres_server, recommender_bundle,
                                                                 read_dead_letters):
  top_k = 3
  with postgres_server.connect(autocommit=True) as conn:  # the application's table, with its own rule
    conn.execute('CREATE TABLE recs_whole (user_id text, rank integer, item_id text, score real '
                 'CONSTRAINT score_worth_showing CHECK (score >= 0.05), model_name text, model_version text, '
                 'run_id text, predicted_at timestamptz, PRIMARY KEY (user_id, rank))')
  from models.examples.recommender import train as recommender
  path = str(tmp_path / 'shoppers.parquet')
  pq.write_table(recommender.shoppers(2_000, seed=2), path)
  assert run_job.main([f'--input={path}', f'--model={recommender_bundle.path}',
                       f'--output={postgres_server.url("recs_whole")}', '--key_column=user_id', f'--top_k={top_k}',
                       f'--summary_location={tmp_path / "runs"}', '--run_id=whole', '--report=false', '--quiet',
                       '--max_rejected_fraction=1']) == 0
  summary = publish.read_pointer(str(tmp_path / 'runs'), 'whole')

  with postgres_server.connect() as conn:
    ranks = conn.execute('SELECT user_id, count(*) FROM recs_whole GROUP BY user_id').fetchall()
    low = conn.execute('SELECT count(*) FROM recs_whole WHERE score < 0.05').fetchone()[0]
  assert ranks and {n for _, n in ranks} == {top_k} and low == 0  # no user published with part of a ranking
  refused = [d for d in read_dead_letters(summary['dead_letter']) if d['reason_code'] == 'write_error']
  assert refused and len({d['key'] for d in refused}) == len(refused)  # one dead letter per user
  assert all('score_worth_showing' in d['reason'] and "the key's whole ranking is rejected" in d['reason']
             and len(json.loads(d['record'])['top_items']) == top_k for d in refused)
  assert {d['key'] for d in refused}.isdisjoint(u for u, _ in ranks)
  assert summary['rows_rejected'] - summary['rejected_by_reason'].get('missing_value', 0) == len(refused)
  assert summary['rows_not_written'] == len(refused) and summary['reconciled']
  assert summary['rows_written'] == len(ranks) * top_k == summary['rows_predicted'] * top_k


def test_on_duplicate_key__names_what_is_wrong_with_the_flag():
  from pipelines.options import BatchInferenceOptions
  base = ['--model=m', '--input=x.parquet', '--output=out']
  for flag, problem in [('--on_duplicate_key=keep_last', 'is not reject, fail, keep_last_by:COLUMN or keep_first_by'),
                        ('--on_duplicate_key=fail', 'needs --key_column'),
                        ('--on_duplicate_key=keep_last_by:id', 'by another column than the key')]:
    key = ['--key_column=id'] if 'keep_last_by' in flag else []
    with pytest.raises(ValueError, match=problem):
      BatchInferenceOptions(base + key + [flag]).validate_flags()
  BatchInferenceOptions(base + ['--key_column=id', '--on_duplicate_key=keep_first_by:updated_at']).validate_flags()


def test_rejection_share__counts_refused_rows_leaves_out_superseded_ones_and_keeps_skipped_rows_read():
  from pipelines.graph.finish import TooManyRejectedError, check_rejected
  from transforms.rows.dead_letters import guarded
  counts = {'rows_read': 1000, 'rows_predicted': 900, 'rows_rejected': 100, 'rejected_write_error': 40,
            'rejected_superseded': 50, 'rejected_missing_value': 10}
  assert guarded(counts) == (50, 950)
  check_rejected('r', counts, 0.06)
  with pytest.raises(TooManyRejectedError,
                     match=r'rejected 5.26% of its rows \(50 of 950\).*top reasons: write_error 40, missing_value 10\.'):
    check_rejected('r', counts, 0.05)
  incremental = {'rows_read': 364, 'rows_skipped': 342, 'rows_predicted': 20, 'rows_rejected': 2}
  check_rejected('r', incremental, 0.05)  # two old bad rows read again among 364: a good night
