"""The model-format benchmark runs and writes its table (a tiny run, not a measurement)."""

import json

import pytest

from benchmarks import frameworks

pytestmark = pytest.mark.slow


def test_frameworks_bench__raw_and_ours_predict_every_complete_row_and_the_table_is_written(tmp_path):
  work = tmp_path / 'bench' / 'frameworks'
  code = frameworks.main(['--rows=2000', '--frameworks=xgboost', '--kinds=raw,ours', f'--work={work}'])

  assert code == 0
  results = json.loads((work / 'results.json').read_text())['results']
  expected = json.loads((tmp_path / 'bench' / 'data-2000' / 'manifest.json').read_text())['complete_rows']
  assert [(r['variant'], r['ok'], r['rows_predicted']) for r in results] == [
      ('raw-xgboost', True, expected), ('ours-xgboost', True, expected)]
  assert expected < 2000  # the example's gaps are rejected by both
  assert json.loads((work / 'bundles' / 'xgboost' / 'metadata.json').read_text())['format'] == 'xgboost'
  table = (work / 'results.md').read_text()
  assert '| raw-xgboost |' in table and '| ours-xgboost |' in table and '| 1.00 |' in table
