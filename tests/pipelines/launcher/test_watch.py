"""--watch: each file that lands under the input prefix is predicted once, across restarts."""

import os
import shutil

import pytest
from apache_beam.io.filesystems import FileSystems

from models.examples.penguins import train
from pipelines import run as run_job
from pipelines.launcher.watch import manifest_path, read_manifest, ready_files, run_id_for, watch


def _land(directory, name) -> str:
  """Copies the example data in under a temporary name, then renames it: how writers should land files."""
  partial = directory / f'.{name}.partial'
  shutil.copy(train.EXAMPLE_DATA, partial)
  os.replace(partial, directory / name)
  return str(directory / name)


def _matches(pattern):
  return FileSystems.match([pattern])[0].metadata_list


def test_ready_files__wait_for_a_file_to_settle_and_skip_processed_ones(tmp_path):
  (tmp_path / 'a.csv').write_text('x\n1\n')
  (tmp_path / 'b.csv').write_text('x\n1\n')
  pattern, last_seen = str(tmp_path / '*.csv'), {}
  done = {str(tmp_path / 'b.csv'): {}}
  assert ready_files(_matches(pattern), done, last_seen) == []  # first look: not settled yet
  assert ready_files(_matches(pattern), done, last_seen) == [str(tmp_path / 'a.csv')]
  with open(tmp_path / 'a.csv', 'a') as f:
    f.write('2\n')  # still growing: wait another look
  os.utime(tmp_path / 'a.csv', (1, 1))
  assert ready_files(_matches(pattern), done, last_seen) == []


def test_run_id_for__stable_per_path_and_distinct_for_same_names():
  assert run_id_for('gs://b/in/day.csv', 'nightly') == run_id_for('gs://b/in/day.csv', 'nightly')
  assert run_id_for('gs://b/in/day.csv', None).startswith('watch-day.csv-')
  assert run_id_for('gs://b/in/day.csv', None) != run_id_for('gs://b/other/day.csv', None)


@pytest.mark.slow
def test_watch__predicts_each_landed_file_once_across_restarts(tmp_path, penguin_bundle):
  inbox, out = tmp_path / 'inbox', tmp_path / 'out'
  inbox.mkdir()
  first = _land(inbox, 'monday.csv')
  argv = [f'--input={inbox}/', f'--model={penguin_bundle.path}', f'--output={out}', '--watch',
          '--watch_interval=0.2', '--watch_max_files=2', '--watch_timeout=120', '--report=false']
  landed = []

  def land_second(summary):  # a new file lands while the watcher runs
    if not landed:
      landed.append(_land(inbox, 'tuesday.csv'))

  summaries = watch(argv, run_job.run, on_run=land_second)
  assert [s.run_id for s in summaries] == [run_id_for(first, None), run_id_for(landed[0], None)]
  assert all(s.rows_read == 344 and s.reconciled for s in summaries)
  for s in summaries:
    assert any(f.startswith('predictions-') for f in os.listdir(s.output))
  entries = read_manifest(manifest_path(str(out)))
  assert set(entries) == {first, landed[0]} and all(e['state'] == 'DONE' for e in entries.values())

  # A restarted watcher skips both files, then takes only the one that is new.
  third = _land(inbox, 'wednesday.csv')
  again = watch([*argv[:-3], '--watch_interval=0.2', '--watch_timeout=3', '--report=false'], run_job.run)
  assert [s.run_id for s in again] == [run_id_for(third, None)]
  assert set(read_manifest(manifest_path(str(out)))) == {first, landed[0], third}


@pytest.mark.slow
def test_watch__a_file_that_fails_is_recorded_and_the_watcher_goes_on(tmp_path, penguin_bundle, capsys):
  inbox, out = tmp_path / 'inbox', tmp_path / 'out'
  inbox.mkdir()
  (inbox / 'broken.parquet').write_bytes(b'not parquet at all')
  good = _land(inbox, 'good.csv')
  code = run_job.main([f'--input={inbox}/*', f'--model={penguin_bundle.path}', f'--output={out}', '--watch',
                       '--watch_interval=0.2', '--watch_max_files=2', '--watch_timeout=120', '--report=false'])
  entries = read_manifest(manifest_path(str(out)))
  assert code == 0
  assert entries[str(inbox / 'broken.parquet')]['state'] == 'FAILED'
  assert 'broken.parquet' in entries[str(inbox / 'broken.parquet')]['error']
  assert entries[good]['state'] == 'DONE' and entries[good]['rows_predicted'] == 342
  assert capsys.readouterr().out.count('read = predicted + rejected: yes') == 1
