"""--only_unscored: a second night reads every row but predicts only the new and changed ones, and
reconciles read = predicted + rejected + skipped; at 200,000 rows."""

import glob
import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from testing.data import make_dataset
from pipelines import run as run_job
from transforms.files import scored_keys as incremental
from transforms.files import publish

pytestmark = pytest.mark.slow
ROWS, NEW, CHANGED = 200_000, 2_000, 500


def _write(table: pa.Table, folder) -> None:
  os.makedirs(folder, exist_ok=True)
  for i, start in enumerate(range(0, table.num_rows, 100_000)):
    pq.write_table(table.slice(start, 100_000), os.path.join(folder, f'part-{i}.parquet'))


def _complete(table: pa.Table) -> np.ndarray:
  ok = np.ones(table.num_rows, dtype=bool)
  for name in ('bill_length_mm', 'bill_depth_mm', 'flipper_length_mm', 'body_mass_g', 'island'):
    ok &= table.column(name).is_valid().to_numpy(zero_copy_only=False)
  return ok


@pytest.fixture(scope='module')
def nights(tmp_path_factory):
  """Night 1: 200,000 rows at version 1. Night 2: the same rows, 500 of them updated, and 2,000 (1%) new."""
  base = tmp_path_factory.mktemp('nights')
  make_dataset(str(base / 'gen1'), ROWS, seed=1)
  make_dataset(str(base / 'gen2'), NEW, seed=2)
  first = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(str(base / 'gen1' / '*.parquet')))])
  first = first.append_column('updated_at', pa.array(np.ones(ROWS, dtype=np.int64)))
  new = pq.read_table(glob.glob(str(base / 'gen2' / '*.parquet'))[0])
  new = new.set_column(0, 'id', pa.array(np.arange(ROWS, ROWS + NEW, dtype=np.int64)))
  new = new.append_column('updated_at', pa.array(np.ones(NEW, dtype=np.int64)))
  changed = np.random.default_rng(3).choice(ROWS, CHANGED, replace=False)
  versions = np.ones(ROWS, dtype=np.int64)
  versions[changed] = 2
  second = pa.concat_tables([first.set_column(first.schema.get_field_index('updated_at'), 'updated_at',
                                              pa.array(versions)), new])
  _write(first, base / 'night1')
  _write(second, base / 'night2')
  return {'base': base, 'first': first, 'second': second, 'changed': set(changed.tolist())}


def _run(nights, night, out, run_id, model, *extra):
  return run_job.run([f'--input={nights["base"] / night}/*.parquet', f'--model={model}', f'--output={out}',
                      f'--run_id={run_id}', '--key_column=id', '--only_unscored', '--row_version_column=updated_at',
                      '--report=false', *extra])


def _predicted_ids(summary) -> set[int]:
  files = glob.glob(os.path.join(summary.output, 'predictions-*.parquet'))
  return set(int(k) for t in (pq.read_table(f, columns=['id']) for f in files) for k in t.column('id').to_pylist())


def test_second_night__predicts_only_new_and_changed_rows(nights, tmp_path, penguin_bundle):
  out = tmp_path / 'out'
  first, second = nights['first'], nights['second']
  complete1 = _complete(first)
  night1 = _run(nights, 'night1', out, 'night-1', penguin_bundle.path)
  assert (night1.rows_read, night1.rows_skipped) == (ROWS, 0)
  assert night1.rows_predicted == int(complete1.sum()) and night1.reconciled
  record = publish.attempt_folder(str(out), 'night-1', night1.attempt)  # key files stay with the attempt, hidden
  keys = glob.glob(os.path.join(record, f'{incremental.KEYS_BASE}-*.parquet'))
  assert sum(pq.read_metadata(f).num_rows for f in keys) == night1.rows_predicted
  assert os.path.exists(out / '_scored' / 'penguin-species' / '1' / 'night-1.json')

  night2 = _run(nights, 'night2', out, 'night-2', penguin_bundle.path)
  ids = second.column('id').to_numpy()
  complete2 = _complete(second)
  fresh = (ids >= ROWS) | np.isin(ids, list(nights['changed']))
  assert night2.rows_read == ROWS + NEW  # reads everything
  assert _predicted_ids(night2) == set(ids[fresh & complete2].tolist())  # predicts only the new and changed
  # Skipped: every row night 1 predicted and that did not change; rejected rows are tried again.
  assert night2.rows_skipped == int((~fresh & complete2).sum())
  assert night2.rows_rejected == int((~complete2).sum())
  assert night2.rows_read == night2.rows_predicted + night2.rows_rejected + night2.rows_skipped
  assert night2.reconciled
  pointer = publish.read_pointer(str(out), 'night-2')
  assert pointer['rows_skipped'] == night2.rows_skipped and pointer['reconciled']
  predicted = pa.concat_tables([pq.read_table(f) for f in glob.glob(os.path.join(night2.output, 'predictions-*'))])
  assert set(pc.unique(predicted.column('updated_at')).to_pylist()) == {1, 2}  # the version scored is kept

  # Re-running night 2 replaces it: its own earlier keys do not count as scored.
  again = _run(nights, 'night2', out, 'night-2', penguin_bundle.path)
  assert (again.rows_predicted, again.rows_skipped) == (night2.rows_predicted, night2.rows_skipped)
  # Another model version has scored nothing yet.
  other = tmp_path / 'v2'
  shutil.copytree(penguin_bundle.path, other)
  metadata = json.loads((other / 'metadata.json').read_text())
  (other / 'metadata.json').write_text(json.dumps({**metadata, 'version': '2'}))
  v2 = _run(nights, 'night2', out, 'night-2-v2', str(other))
  assert (v2.rows_skipped, v2.rows_predicted) == (0, int(complete2.sum()))
  # What an incremental run predicted depended on earlier runs: it cannot be replayed exactly.
  assert run_job.main([f'--replay={out}/night-2/_run_summary.json']) == 2
