"""Safe re-runs: the same --run_id replaces its output, a failed run publishes
nothing, and other run ids are never touched."""

import glob
import hashlib
import os
import shutil

import pyarrow.parquet as pq
import pytest

from models.penguins import train
from pipelines import preflight
from pipelines import run as run_job

pytestmark = pytest.mark.slow


def _run(out, bundle, input_path, run_id, *extra):
  return run_job.run([f'--input={input_path}', f'--model={bundle.path}', f'--output={out}', f'--run_id={run_id}',
                      *extra])


def _snapshot(folder) -> dict[str, str]:
  """Every file under a folder with a hash of its bytes."""
  return {os.path.relpath(p, folder): hashlib.sha256(open(p, 'rb').read()).hexdigest()
          for p in glob.glob(os.path.join(folder, '**'), recursive=True) if os.path.isfile(p)}


def _prediction_rows(folder) -> list[str]:
  return [k for p in sorted(glob.glob(os.path.join(folder, 'predictions-*.parquet')))
          for k in pq.read_table(p).column('row_id').to_pylist()]


def _head(tmp_path, lines: int) -> str:
  path = tmp_path / 'head.csv'
  path.write_text(''.join(open(train.EXAMPLE_DATA).readlines()[:lines + 1]))
  return str(path)


def test_same_run_id__replaces_the_output_without_stale_shards_or_duplicates(tmp_path, penguin_bundle):
  out = tmp_path / 'out'
  first = _run(out, penguin_bundle, train.EXAMPLE_DATA, 'r1')
  run_dir = out / 'r1'
  assert len(_prediction_rows(run_dir)) == first.rows_predicted == 342
  # An earlier attempt that wrote more shards left files the new shard names would not overwrite.
  shard = sorted(glob.glob(str(run_dir / 'predictions-*.parquet')))[0]
  shutil.copy(shard, run_dir / 'predictions-00001-of-00002.parquet')
  (run_dir / 'dead_letters-00003-of-00004.jsonl').write_text('{"key": "stale"}\n')

  second = _run(out, penguin_bundle, _head(tmp_path, 50), 'r1')

  rows = _prediction_rows(run_dir)
  assert len(rows) == len(set(rows)) == second.rows_predicted == 49  # one of the first 50 birds lacks measurements
  assert not glob.glob(str(run_dir / '*-of-00002.*')) and not glob.glob(str(run_dir / '*-of-00004.*'))
  assert second.reconciled and (run_dir / 'run_summary.json').exists()
  assert not glob.glob(str(out / '.staging-*'))


def test_failed_run__publishes_nothing_and_keeps_the_last_complete_output(tmp_path, penguin_bundle, monkeypatch):
  out = tmp_path / 'out'
  _run(out, penguin_bundle, train.EXAMPLE_DATA, 'r1')
  before = _snapshot(out / 'r1')
  data = tmp_path / 'in'
  data.mkdir()
  shutil.copy(train.EXAMPLE_DATA, data / 'a.csv')
  (data / 'b.parquet').write_bytes(b'PAR1 this file was cut short')
  monkeypatch.setattr(preflight, 'MAX_FILES_PEEKED', 1)  # so the corrupt file is found by the workers

  for run_id in ('r1', 'r2'):
    with pytest.raises(run_job.RunError, match=f'(?s)cannot read {data}/b.parquet as parquet: .*nothing was published'):
      _run(out, penguin_bundle, f'{data}/*', run_id)

  assert _snapshot(out / 'r1') == before  # the last complete output of r1 is intact
  assert not (out / 'r2').exists()  # r2 never completed: no folder at all
  assert not glob.glob(str(out / '.staging-*'))

  (data / 'b.parquet').unlink()  # the operator moves the bad file aside and re-runs
  assert _run(out, penguin_bundle, f'{data}/*', 'r2').rows_predicted == 342


def test_new_run_id__leaves_earlier_runs_untouched(tmp_path, penguin_bundle):
  out = tmp_path / 'out'
  _run(out, penguin_bundle, train.EXAMPLE_DATA, 'nightly-1')
  before = _snapshot(out / 'nightly-1')
  second = _run(out, penguin_bundle, _head(tmp_path, 10), 'nightly-2')
  assert _snapshot(out / 'nightly-1') == before
  assert len(_prediction_rows(out / 'nightly-2')) == second.rows_predicted == 9


def test_staging_left_by_a_killed_attempt__is_cleared_by_the_next_attempt_only(tmp_path, penguin_bundle):
  out = tmp_path / 'out'
  killed = out / '.staging-r1-deadbeef'
  other = out / '.staging-r10-cafe0000'  # a different run id that shares a prefix
  for folder in (killed, other):
    folder.mkdir(parents=True)
    (folder / 'predictions-00000-of-00001.parquet').write_bytes(b'half written')
  summary = _run(out, penguin_bundle, _head(tmp_path, 5), 'r1')
  assert not killed.exists()
  assert (other / 'predictions-00000-of-00001.parquet').exists()
  assert len(_prediction_rows(out / 'r1')) == summary.rows_predicted == 4


def test_dead_letter_folder_elsewhere__is_replaced_too(tmp_path, penguin_bundle):
  out, dead = tmp_path / 'out', tmp_path / 'dead'
  bad = tmp_path / 'bad.csv'
  bad.write_text(open(train.EXAMPLE_DATA).readline() + 'Adelie,Dream,x,1,1,1,male,2007\n')
  _run(out, penguin_bundle, str(bad), 'r1', f'--dead_letter={dead}')
  (dead / 'r1' / 'dead_letters-00001-of-00002.jsonl').write_text('{"key": "stale"}\n')
  summary = _run(out, penguin_bundle, str(bad), 'r1', f'--dead_letter={dead}')
  files = sorted(os.listdir(dead / 'r1'))
  assert files == ['dead_letters-00000-of-00001.jsonl'] and summary.rows_rejected == 1
  assert not glob.glob(str(dead / '.staging-*'))
