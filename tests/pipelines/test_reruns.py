"""Safe re-runs: the same --run_id replaces its output, a failed run publishes
nothing, and other run ids are never touched (transforms.files.publish)."""

import glob
import os
import shutil

import pyarrow.parquet as pq
import pytest

from models.examples.penguins import train
from pipelines import run as run_job
from transforms.files import checks
from transforms.files import publish

pytestmark = pytest.mark.slow


def _run(out, bundle, input_path, run_id, *extra):
  return run_job.run([f'--input={input_path}', f'--model={bundle.path}', f'--output={out}', f'--run_id={run_id}',
                      *extra])


def _published_rows(out, run_id) -> list[str]:
  """The keys a reader finds by following the run's pointer."""
  pointer = publish.read_pointer(str(out), run_id)
  return [k for p in sorted(glob.glob(os.path.join(pointer['output'], 'predictions-*.parquet')))
          for k in pq.read_table(p).column('row_id').to_pylist()]


def _head(tmp_path, lines: int) -> str:
  path = tmp_path / 'head.csv'
  path.write_text(''.join(open(train.EXAMPLE_DATA).readlines()[:lines + 1]))
  return str(path)


def test_same_run_id__publishes_the_new_attempt_and_removes_the_old_one(tmp_path, penguin_bundle):
  out = tmp_path / 'out'
  first = _run(out, penguin_bundle, train.EXAMPLE_DATA, 'r1')
  assert len(_published_rows(out, 'r1')) == first.rows_predicted == 342

  second = _run(out, penguin_bundle, _head(tmp_path, 50), 'r1')

  rows = _published_rows(out, 'r1')
  assert len(rows) == len(set(rows)) == second.rows_predicted == 49  # one of the first 50 birds lacks measurements
  assert second.attempt > first.attempt and second.output == str(out / 'r1' / second.attempt)
  assert publish.attempts(str(out), 'r1') == [second.attempt]  # the replaced attempt is gone
  assert second.reconciled and os.path.exists(second.report)


def test_failed_run__publishes_nothing_and_keeps_the_last_complete_output(tmp_path, penguin_bundle, monkeypatch,
                                                                          snapshot):
  out = tmp_path / 'out'
  good = _run(out, penguin_bundle, train.EXAMPLE_DATA, 'r1')
  before = snapshot(out / 'r1')
  data = tmp_path / 'in'
  data.mkdir()
  shutil.copy(train.EXAMPLE_DATA, data / 'a.csv')
  (data / 'b.parquet').write_bytes(b'PAR1 this file was cut short')
  monkeypatch.setattr(checks, 'MAX_FILES_PEEKED', 1)  # so the corrupt file is found by the workers

  for run_id in ('r1', 'r2'):
    with pytest.raises(run_job.RunError, match=f'(?s)cannot read {data}/b.parquet as parquet: .*nothing was published'):
      _run(out, penguin_bundle, f'{data}/*', run_id)

  failed = [a for a in publish.attempts(str(out), 'r1') if a != good.attempt]
  assert len(failed) == 1  # the failed attempt keeps only why it failed, for `status`
  assert os.listdir(out / 'r1' / f'_{failed[0]}') == ['failure.json']
  assert {k: v for k, v in snapshot(out / 'r1').items() if not k.startswith(f'_{failed[0]}')} == before
  assert publish.read_pointer(str(out), 'r2') is None  # r2 never completed
  assert not glob.glob(str(out / 'r2' / '**' / 'predictions-*'), recursive=True)

  (data / 'b.parquet').unlink()  # the operator moves the bad file aside and re-runs
  again = _run(out, penguin_bundle, f'{data}/*', 'r1')
  assert again.rows_predicted == 342 and publish.attempts(str(out), 'r1') == [again.attempt]


def test_new_run_id__leaves_earlier_runs_untouched(tmp_path, penguin_bundle, snapshot):
  out = tmp_path / 'out'
  _run(out, penguin_bundle, train.EXAMPLE_DATA, 'nightly-1')
  before = snapshot(out / 'nightly-1')
  second = _run(out, penguin_bundle, _head(tmp_path, 10), 'nightly-2', '--max_rejected_fraction=1')  # 1 of 10 rejected
  assert snapshot(out / 'nightly-1') == before
  assert len(_published_rows(out, 'nightly-2')) == second.rows_predicted == 9


def test_attempts_left_by_killed_launches__are_cleared_by_the_next_attempt_of_that_run_only(tmp_path, penguin_bundle):
  out = tmp_path / 'out'
  killed = out / 'r1' / '_attempt-20200101T000000000000Z-dead00'
  other = out / 'r10' / '_attempt-20200101T000000000000Z-cafe00'  # a different run id that shares a prefix
  newer = out / 'r1' / '_attempt-29990101T000000000000Z-beef00'  # launched later: may still be running
  for folder in (killed, other, newer):
    folder.mkdir(parents=True)
    (folder / 'predictions-00000-of-00001.parquet').write_bytes(b'half written')
  summary = _run(out, penguin_bundle, _head(tmp_path, 5), 'r1', '--max_rejected_fraction=1')  # 1 of 5 rejected
  assert not killed.exists()
  assert (other / 'predictions-00000-of-00001.parquet').exists() and newer.exists()
  assert len(_published_rows(out, 'r1')) == summary.rows_predicted == 4


def test_dead_letter_folder_elsewhere__gets_its_own_pointer_and_is_replaced_too(tmp_path, penguin_bundle):
  out, dead = tmp_path / 'out', tmp_path / 'dead'
  bad = tmp_path / 'bad.csv'
  bad.write_text(open(train.EXAMPLE_DATA).readline() + 'Adelie,Dream,x,1,1,1,male,2007\n')
  every_row_allowed = '--max_rejected_fraction=1'  # this input is all rejected, which fails a run by default
  first = _run(out, penguin_bundle, str(bad), 'r1', f'--dead_letter={dead}', every_row_allowed)
  summary = _run(out, penguin_bundle, str(bad), 'r1', f'--dead_letter={dead}', every_row_allowed)
  assert summary.dead_letter == str(dead / 'r1' / f'_{summary.attempt}')  # with the attempt's record
  assert os.listdir(summary.dead_letter) == ['dead_letters-00000-of-00001.jsonl'] and summary.rows_rejected == 1
  assert publish.attempts(str(dead), 'r1') == [summary.attempt] != [first.attempt]
  assert publish.read_pointer(str(dead), 'r1')['attempt'] == summary.attempt
