"""The pointer that publishes an attempt (transforms.files.publish), on real folders."""

import datetime

import pytest

from transforms.files import publish


def _attempt(year: int) -> str:
  return publish.new_attempt(datetime.datetime(year, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc))


def _make(base, run_id, attempt, *names):
  folder = base / run_id / attempt
  folder.mkdir(parents=True, exist_ok=True)
  for name in names:
    (folder / name).write_text(name)


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
  assert sorted(p.name for p in (tmp_path / 'r').iterdir()) == ['run_summary.json']


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
