"""`./launch.sh demo-images` end to end: the digit scans written as PNG files, a CNN trained on them and imported
(proven on its own held-out predictions), and the job's predictions for the held-out files checked against the
true digits."""

import json
import os
import subprocess

import pyarrow.parquet as pq
import pytest

from models.bundle import ModelBundle

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_demo_images__predicts_the_held_out_digits_well_above_chance(tmp_path):
  pytest.importorskip('torch')
  pytest.importorskip('sklearn')
  env = {**os.environ, 'DIGITS_BUNDLE': str(tmp_path / 'bundle'), 'DIGITS_FILES': str(tmp_path / 'files')}
  result = subprocess.run(['bash', os.path.join(REPO, 'launch.sh'), 'demo-images', f'--output={tmp_path}/out'],
                          env=env, capture_output=True, text=True, timeout=600, check=False, cwd=REPO)
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'rows predicted           359' in result.stdout, result.stdout

  bundle = ModelBundle.load(str(tmp_path / 'bundle'))
  assert bundle.images.color == 'L' and bundle.metadata['training_metrics']['holdout_accuracy'] > 0.9
  with open(tmp_path / 'files' / 'holdout' / 'labels.jsonl', encoding='utf-8') as f:
    truth = {row['uri']: row['label'] for row in map(json.loads, f)}
  files = [os.path.join(d, n) for d, _, names in os.walk(tmp_path / 'out') for n in names
           if n.startswith('predictions')]
  predicted = pq.read_table(files, columns=['uri', 'predicted_class']).to_pydict()
  assert sorted(predicted['uri']) == sorted(truth)
  accuracy = sum(truth[u] == c for u, c in zip(predicted['uri'], predicted['predicted_class'])) / len(truth)
  assert accuracy > 0.9  # chance is 0.1
