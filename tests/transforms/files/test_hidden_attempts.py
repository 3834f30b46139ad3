"""Readers that glob see the published night and nothing else, on a local disk and on gs://.

Spark, BigQuery external tables and pandas or pyarrow datasets do not read the
run's pointer: they read every file under `OUTPUT/RUN_ID/` that is not hidden
(the Hadoop convention: no path part starting with `_` or `.`). A run whose
gate breaks has written its predictions but published nothing, the state of any
attempt still running or killed before it publishes: its rows must not show.
"""

import datetime
import io
import os

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems

from models.examples.penguins import train
from pipelines import run as run_job
from pipelines.graph import gate
from transforms.files import publish

pytestmark = pytest.mark.slow

FAILING_GATE = '--gate=rejected_rate<=0.001'  # the example rejects 2 rows of 344


def _args(out, bundle, run_id, *extra):
  return [f'--input={train.EXAMPLE_DATA}', f'--model={bundle.path}', f'--output={out}', f'--run_id={run_id}',
          '--report=false', *extra]


def _hidden(relative: str) -> bool:
  return any(part.startswith(('_', '.')) for part in relative.split('/'))


def globbed(folder: str) -> pa.Table:
  """Every file under `folder` a glob-reading engine takes: recursive, Hive-filtered, on any file system."""
  found = FileSystems.match([folder.rstrip('/') + '/**'])[0].metadata_list
  tables = []
  for m in sorted(found, key=lambda m: m.path):
    if not _hidden(m.path[len(folder.rstrip('/')) + 1:]):
      with FileSystems.open(m.path) as f:
        tables.append(pq.read_table(io.BytesIO(f.read())))
  return pa.concat_tables(tables) if tables else pa.table({})


def _published(summary) -> pa.Table:
  """The rows of the attempt the pointer names, read from the folder its summary names."""
  return globbed(summary.output)


def _same_rows(a: pa.Table, b: pa.Table) -> bool:
  return a.num_rows == b.num_rows and a.sort_by('row_id').equals(b.sort_by('row_id'))


def test_local__a_broken_gate_shows_nothing_and_a_pass_shows_exactly_its_own_rows(tmp_path, penguin_bundle):
  out = tmp_path / 'out'
  night = str(out / 'night')
  first = run_job.run(_args(out, penguin_bundle, 'night'))
  assert ds.dataset(night).to_table().num_rows == 342

  # Written, not published (a broken gate keeps its files, as a running or killed attempt has them).
  assert run_job.main(_args(out, penguin_bundle, 'night', FAILING_GATE)) == gate.GATE_EXIT_STATUS
  [kept] = [a for a in publish.attempts(str(out), 'night') if a != first.attempt]
  staged = publish.staged_folder(str(out), 'night', kept, 'predictions')
  assert sum(pq.read_metadata(os.path.join(staged, f)).num_rows for f in os.listdir(staged)) == 342
  assert _same_rows(ds.dataset(night).to_table(), _published(first))  # the first night, once
  assert _same_rows(globbed(night), _published(first))

  second = run_job.run(_args(out, penguin_bundle, 'night'))
  assert second.output == publish.shown_folder(str(out), 'night', second.attempt)
  table = ds.dataset(night).to_table()
  assert table.num_rows == 342 and _same_rows(table, _published(second)) and not _same_rows(table, _published(first))
  assert _same_rows(globbed(night), table)
  assert ds.dataset(str(out)).to_table().num_rows == 342  # the whole output: every run's published night
  assert publish.shown_attempts(str(out), 'night') == [second.attempt]


def test_gcs__a_broken_gate_shows_nothing_and_a_pass_shows_exactly_its_own_rows(gcs, gcs_prefix, penguin_bundle):
  out = f'{gcs_prefix}/out'
  night = f'{out}/night'
  assert run_job.main(_args(out, penguin_bundle, 'night', FAILING_GATE)) == gate.GATE_EXIT_STATUS
  [kept] = publish.attempts(out, 'night')
  assert FileSystems.match([publish.staged_folder(out, 'night', kept, 'predictions') + '/predictions-*'])[0].metadata_list
  assert globbed(night).num_rows == 0  # written, not published: nothing shows

  summary = run_job.run(_args(out, penguin_bundle, 'night'))
  assert summary.output == f'{night}/{summary.attempt}'
  table = globbed(night)
  assert table.num_rows == 342 and _same_rows(table, _published(summary))

  fs, root = _pyarrow_gcs(gcs, night)
  assert _same_rows(ds.dataset(root, filesystem=fs).to_table(), table)


def _pyarrow_gcs(gcs, path):
  """pyarrow's own Cloud Storage file system, pointed at the emulator, and `path` in its terms."""
  from pyarrow import fs
  endpoint = gcs.endpoint.split('://', 1)
  return (fs.GcsFileSystem(anonymous=True, scheme=endpoint[0], endpoint_override=endpoint[1],
                            retry_time_limit=datetime.timedelta(seconds=5)),
          path[len('gs://'):])
