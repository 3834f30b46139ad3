"""The benchmark runs, measures from outside, and writes its table (a tiny run, not a measurement)."""

import json
import sys

import pytest

from benchmarks import measure
from benchmarks import run as bench
from benchmarks import startup


def test_run_measured__sees_the_peak_memory_of_a_grandchild(tmp_path):
  # The child starts a grandchild that holds 200 MB, as a runner's worker would.
  script = ('import subprocess, sys; subprocess.run([sys.executable, "-c", '
            '"import time; x = bytearray(200 << 20); x[::4096] = b\\"x\\" * len(x[::4096]); time.sleep(1)"])')
  m = measure.run_measured([sys.executable, '-c', script], output_dir=str(tmp_path / 'out'),
                           log_path=str(tmp_path / 'log.txt'))
  assert m.returncode == 0
  assert m.peak_rss_mb > 200
  assert m.first_prediction_s is None  # it wrote no Parquet


@pytest.mark.slow
def test_bench__raw_and_ours_run_side_by_side_and_the_table_is_written(tmp_path, penguin_bundle):
  no_ray = tmp_path / 'no-ray-venv'
  no_ray.mkdir()
  (no_ray / 'UNAVAILABLE').write_text('ray does not install here: test reason')
  readme = tmp_path / 'README.md'
  readme.write_text('# x\n<!-- bench:start -->\nold table\n<!-- bench:end -->\nrest\n')

  code = bench.main(['--rows=2000', '--repeats=1', '--variants=raw,ours,ray-data', '--memory_check=0', '--startup_rounds=1',
                     f'--work={tmp_path / "bench"}', f'--model={penguin_bundle.path}', f'--ray_venv={no_ray}',
                     f'--update_readme={readme}'])

  assert code == 0
  results = json.loads((tmp_path / 'bench' / 'results.json').read_text())
  rows = {r['variant']: r for r in results['variants']}
  expected = json.loads((tmp_path / 'bench' / 'data-2000' / 'manifest.json').read_text())['complete_rows']
  for name in ('raw', 'ours'):
    run, = [r for r in results['runs'] if r['variant'] == name]
    assert run['ok'] and run['rows_predicted'] == expected < 2000  # the example's gaps are rejected
    assert rows[name]['rows_per_s'] > 0 and rows[name]['peak_rss_mb'] > 50
    assert 0 < rows[name]['first_prediction_s'] <= rows[name]['wall_s']
  assert rows['raw']['ratio_to_raw'] == 1.0
  assert rows['ray-data'] == {'variant': 'ray-data', 'skipped': 'ray does not install here: test reason'}
  table = (tmp_path / 'bench' / 'results.md').read_text()
  assert '| ours | 2,000 |' in table and 'not run: ray does not install here' in table
  # Issue 27's start-up targets, each printed with its measurement and verdict, in the page too.
  assert {v: r['ok'] for v, r in ((r['variant'], r) for r in results['startup']['runs'])} == dict.fromkeys(
      startup.VARIANTS, True)
  for target in ('| 344-row demo, SavedModel: wall over a bare TensorFlow import and load | ≤ 1.25× | ',
                 '| 344-row demo, SavedModel: peak RSS over a bare TensorFlow import and load | ≤ 1.20× | ',
                 '| 344-row demo, onnx bundle: wall and peak RSS | ≤ 2.5 s, ≤ 400 MB | ',
                 '| 344-row demo, sklearn bundle: wall and peak RSS | ≤ 2.5 s, ≤ 400 MB | '):
    assert target in table
  text = readme.read_text()
  assert '344-row demo, onnx bundle' in text
  assert 'old table' not in text and '| raw | 2,000 |' in text and text.endswith('<!-- bench:end -->\nrest\n')
