"""The pointer that publishes an attempt, and the folder that shows it (transforms.files.publish), on real folders."""

import datetime
import glob
import os

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from transforms.files import publish


def _attempt(year: int) -> str:
  return publish.new_attempt(datetime.datetime(year, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc))


def _make(base, run_id, attempt, *names):
  folder = base / run_id / ('_' + attempt)
  folder.mkdir(parents=True, exist_ok=True)
  for name in names:
    (folder / name).write_text(name)


def _write_attempt(base, run_id, attempt, rows: int, shards: int = 2) -> None:
  """An attempt as the job leaves it before publishing: predictions staged, its record beside them."""
  staged = publish.staged_folder(str(base), run_id, attempt, 'predictions')
  os.makedirs(staged)
  for i in range(shards):
    pq.write_table(pa.table({'attempt': [attempt] * rows}), f'{staged}/predictions-{i:05d}-of-{shards:05d}.parquet')
  for name in ('report.html', 'profile.json', 'launch.json'):
    with open(os.path.join(publish.attempt_folder(str(base), run_id, attempt), name), 'w') as f:
      f.write('{}')
  with open(os.path.join(publish.attempt_folder(str(base), run_id, attempt), 'dead_letters-00000-of-00001.jsonl'),
            'w') as f:
    f.write('{"reason_code": "invalid_type"}\n')


def visible_rows(folder) -> list:
  """What a reader that globs sees: a pyarrow dataset of the folder, and a recursive glob that skips
  paths starting with `_` or `.` (the Hadoop convention); both must agree."""
  table = ds.dataset(str(folder)).to_table()
  dataset = table.column('attempt').to_pylist() if table.num_columns else []  # no visible file: no schema
  files = [f for f in glob.glob(f'{folder}/**', recursive=True) if os.path.isfile(f)
           and not any(part.startswith(('_', '.')) for part in os.path.relpath(f, folder).split(os.sep))]
  globbed = [v for f in sorted(files) for v in pq.read_table(f).column('attempt').to_pylist()]
  assert sorted(dataset) == sorted(globbed)
  return sorted(dataset)


def test_new_attempt__sorts_by_launch_time():
  assert _attempt(2025) < _attempt(2026) < publish.new_attempt()
  assert _attempt(2026).startswith('attempt-20260102T030405000006Z-')


def test_switch_pointer__publishes_newer_attempts_only_and_leaves_no_temporary_file(tmp_path):
  old, new = _attempt(2025), _attempt(2026)
  assert publish.read_pointer(str(tmp_path), 'r') is None
  assert publish.switch_pointer(str(tmp_path), 'r', {'attempt': old, 'rows_read': 1})
  assert publish.switch_pointer(str(tmp_path), 'r', {'attempt': new, 'rows_read': 2})
  assert not publish.switch_pointer(str(tmp_path), 'r', {'attempt': old, 'rows_read': 1})  # finished late
  assert publish.read_pointer(str(tmp_path), 'r') == {'attempt': new, 'rows_read': 2}
  assert sorted(p.name for p in (tmp_path / 'r').iterdir()) == ['_run_summary.json']


def test_remove_older_attempts__keeps_this_and_newer_ones_and_other_runs(tmp_path):
  a, b, c = _attempt(2024), _attempt(2025), _attempt(2026)
  for attempt in (a, b, c):
    _make(tmp_path, 'r', attempt, 'predictions-00000-of-00001.parquet')
  _make(tmp_path, 'r2', a, 'x')
  assert publish.remove_older_attempts(str(tmp_path), 'r', b) == [a]
  assert publish.attempts(str(tmp_path), 'r') == [b, c]
  assert publish.attempts(str(tmp_path), 'r2') == [a]


@pytest.mark.parametrize('run_id', ['', '../x', 'a/b', 'a*', '-lead', 'x' * 129])
def test_check_run_id__refuses_paths_and_wildcards(run_id):
  with pytest.raises(ValueError, match='--run_id'):
    publish.check_run_id(run_id)


def _publish(base, run_id, attempt) -> bool:
  """What the job's last step does: the pointer first, then the files shown."""
  return publish.switch_pointer(str(base), run_id, {'attempt': attempt}) and publish.show_attempt(
      str(base), run_id, attempt, 'predictions')


def test_show_attempt__hides_the_older_attempt_then_shows_this_one_and_nothing_else(tmp_path):
  old, new = _attempt(2025), _attempt(2026)
  _write_attempt(tmp_path, 'r', old, rows=3)
  assert visible_rows(tmp_path / 'r') == []  # written, not published: hidden
  assert not publish.show_attempt(str(tmp_path), 'r', old, 'predictions')  # not published: not shown
  assert _publish(tmp_path, 'r', old)
  assert visible_rows(tmp_path / 'r') == [old] * 6
  _write_attempt(tmp_path, 'r', new, rows=2)
  assert visible_rows(tmp_path / 'r') == [old] * 6  # the new night, written, is not seen beside the old
  assert _publish(tmp_path, 'r', new)
  assert visible_rows(tmp_path / 'r') == [new] * 4
  assert publish.shown_attempts(str(tmp_path), 'r') == [new]
  assert sorted(os.listdir(publish.shown_folder(str(tmp_path), 'r', new))) == [
      'predictions-00000-of-00002.parquet', 'predictions-00001-of-00002.parquet']
  assert publish.remove_older_attempts(str(tmp_path), 'r', new) == [old]
  assert publish.attempts(str(tmp_path), 'r') == [new] and visible_rows(tmp_path / 'r') == [new] * 4


def test_show_attempt__a_retry_finishes_an_interrupted_move_and_repeating_it_changes_nothing(tmp_path):
  attempt = _attempt(2026)
  _write_attempt(tmp_path, 'r', attempt, rows=2, shards=3)
  publish.switch_pointer(str(tmp_path), 'r', {'attempt': attempt})
  staged = publish.staged_folder(str(tmp_path), 'r', attempt, 'predictions')
  shown = publish.shown_folder(str(tmp_path), 'r', attempt)
  os.makedirs(shown)  # a publish killed after it moved one file of three
  os.rename(f'{staged}/predictions-00000-of-00003.parquet', f'{shown}/predictions-00000-of-00003.parquet')
  assert publish.show_attempt(str(tmp_path), 'r', attempt, 'predictions')
  assert publish.show_attempt(str(tmp_path), 'r', attempt, 'predictions')
  assert visible_rows(tmp_path / 'r') == [attempt] * 6 and not glob.glob(f'{staged}/predictions-*')


def test_show_attempt__an_attempt_that_finished_late_never_shows_over_a_newer_one(tmp_path):
  old, new = _attempt(2025), _attempt(2026)
  _write_attempt(tmp_path, 'r', old, rows=1)
  _write_attempt(tmp_path, 'r', new, rows=2)
  assert _publish(tmp_path, 'r', new)
  assert not _publish(tmp_path, 'r', old)  # finished late: neither the pointer nor the files are its
  assert not publish.show_attempt(str(tmp_path), 'r', old, 'predictions')
  assert visible_rows(tmp_path / 'r') == [new] * 4
