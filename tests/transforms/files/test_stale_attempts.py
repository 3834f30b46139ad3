"""What killed attempts leave under a folder output goes once it is old: with the next run into the folder,
and with `status --clean`; the published attempt, a young one and a running one stay.

A killed attempt's hidden folder is deleted by the next attempt of its run once
that publishes, but a run id that never runs again (a date) would keep it forever.
"""

import datetime
import os

import pyarrow.dataset as ds
import pytest
from apache_beam.io.filesystems import FileSystems

from models.examples.penguins import train
from pipelines import run as run_job
from pipelines.record import status
from transforms.files import publish

pytestmark = pytest.mark.slow

NOW = datetime.datetime.now(datetime.timezone.utc)


def _args(out, bundle, run_id):
  return [f'--input={train.EXAMPLE_DATA}', f'--model={bundle.path}', f'--output={out}', f'--run_id={run_id}',
          '--report=false']


def _killed(base: str, run_id: str, launched: datetime.datetime, *, written: datetime.datetime = None) -> str:
  """An attempt folder as a launcher killed mid-run leaves it: its record and part of its predictions,
  last written at `written` (a local file's time; on Cloud Storage, now)."""
  folder = publish.attempt_folder(base, run_id, publish.new_attempt(launched))
  for name in ('launch.json', 'heartbeat.json', 'predictions/predictions-00000-of-00002.parquet'):
    path = FileSystems.join(folder, name)
    if not path.startswith('gs://'):
      os.makedirs(os.path.dirname(path), exist_ok=True)
    with FileSystems.create(path) as f:
      f.write(b'{}')
    if written is not None:
      os.utime(path, (written.timestamp(), written.timestamp()))
  return folder


def _exists(folder: str) -> bool:
  return bool(FileSystems.match([folder + '/**'])[0].metadata_list)


def test_local__the_next_run_deletes_attempts_killed_over_a_day_ago_and_status_clean_does_on_demand(
    tmp_path, penguin_bundle, capsys):
  out = str(tmp_path / 'out')
  monday = run_job.run(_args(out, penguin_bundle, 'monday'))
  old = _killed(out, 'tuesday', NOW - datetime.timedelta(hours=30), written=NOW - datetime.timedelta(hours=29))
  young = _killed(out, 'wednesday', NOW - datetime.timedelta(hours=2), written=NOW - datetime.timedelta(hours=2))
  running = _killed(out, 'thursday', NOW - datetime.timedelta(hours=30))  # its heartbeat was just written

  friday = run_job.run(_args(out, penguin_bundle, 'friday'))  # another run id: only the old killed one goes
  assert not _exists(old)
  assert _exists(young) and _exists(running)
  assert _exists(publish.attempt_folder(out, 'monday', monday.attempt))
  assert _exists(publish.attempt_folder(out, 'friday', friday.attempt))

  capsys.readouterr()
  assert status.main([f'--output={out}', '--clean=0']) == 0
  printed = capsys.readouterr().out
  assert printed.startswith('--clean: removed 2 leftover(s) of attempts killed more than 0 h ago')
  assert young in printed and running in printed
  assert not _exists(young) and not _exists(running)
  for summary in (monday, friday):  # published: they stay, read as before
    assert ds.dataset(os.path.join(out, summary.run_id)).to_table().num_rows == 342
    assert _exists(publish.attempt_folder(out, summary.run_id, summary.attempt))
    assert publish.read_pointer(out, summary.run_id)['attempt'] == summary.attempt


def test_gcs__attempts_killed_long_ago_go_under_every_run_folder_the_published_and_young_stay(
    gcs_prefix, penguin_bundle, capsys):
  out = f'{gcs_prefix}/out'
  monday = run_job.run(_args(out, penguin_bundle, 'monday'))
  killed_before = _killed(out, 'monday', NOW - datetime.timedelta(hours=1))  # before or after the published one
  killed_other = _killed(out, 'tuesday', NOW - datetime.timedelta(hours=1))
  # A day and more from now, with files that cannot be dated back on Cloud Storage: launched 10 h from now is young.
  later = NOW + datetime.timedelta(hours=30)
  young = _killed(out, 'wednesday', NOW + datetime.timedelta(hours=10))

  removed = publish.remove_stale_attempts(out, datetime.timedelta(hours=24), now=later)
  assert sorted(removed) == sorted([killed_before, killed_other])
  assert not _exists(killed_before) and not _exists(killed_other) and _exists(young)
  assert _exists(publish.attempt_folder(out, 'monday', monday.attempt))

  killed = _killed(out, 'tuesday', NOW - datetime.timedelta(hours=1))
  capsys.readouterr()
  assert status.main([f'--output={out}', '--clean=0']) == 0
  assert f'removed 1 leftover(s) of attempts killed more than 0 h ago: {killed}' in capsys.readouterr().out
  assert not _exists(killed) and _exists(young)  # launched in the future: younger than any age
  assert _exists(publish.attempt_folder(out, 'monday', monday.attempt))
  assert publish.read_pointer(out, 'monday')['attempt'] == monday.attempt
