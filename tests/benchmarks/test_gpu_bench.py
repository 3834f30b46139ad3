"""The GPU row's parts that run without a GPU: its bundle, its imports, its table."""

import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import gpu, torch_model


def test_bench_bundle__features_are_fitted_as_training_fits_them(penguin_bundle):
  bundle = torch_model.bench_bundle()
  assert bundle.features.to_dict() == penguin_bundle.features.to_dict()
  assert bundle.outputs.classes == penguin_bundle.outputs.classes


def test_flops_per_row__counts_every_linear_layer():
  assert torch_model.flops_per_row(12, 3, hidden=2048, layers=4) == 2 * (12 * 2048 + 3 * 2048 * 2048 + 2048 * 3)


def test_check_imports__pipeline_imports_without_tensorflow():
  # A fresh process: this session's trained fixture has imported TensorFlow already.
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  out = subprocess.run([sys.executable, '-m', 'benchmarks.gpu', '--check_imports'], capture_output=True, text=True,
                       env=env, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'tensorflow imported: False;' in out.stdout


def test_summarize__ratios_within_rounds_and_skipped_variants():
  def run(variant, round_no, rate, ok=True):
    return {'variant': variant, 'round': round_no, 'rows': 1000, 'ok': ok, 'rows_per_s': rate, 'wall_s': 1.0,
            'peak_rss_mb': 100.0, 'first_prediction_s': 0.5, 'gpu_util_mean': 10.0, 'gpu_util_max': 50.0,
            'gpu_mem_peak_mb': 900}
  runs = [run('raw-gpu', 0, 100.0), run('ours-gpu', 0, 50.0), run('raw-gpu', 1, 200.0), run('ours-gpu', 1, 200.0),
          run('ours-cpu', 0, 10.0), run('ours-cpu', 1, 0.0, ok=False)]
  table = gpu.summarize(runs, ['raw-gpu', 'ours-gpu', 'ours-gpu-8proc', 'ours-cpu'],
                        {'ours-gpu-8proc': 'no CUDA device'})
  rows = {r['variant']: r for r in table}
  assert rows['ours-gpu']['ratio_to_raw_gpu'] == 0.75  # median of 0.5 and 1.0, not 125 / 150
  assert rows['ours-gpu-8proc'] == {'variant': 'ours-gpu-8proc', 'skipped': 'no CUDA device'}
  assert not rows['ours-cpu']['counts_ok'] and rows['ours-cpu']['rows_per_s'] == 10.0
  summary = {'rows': 1000, 'cpu_rows': 1000, 'repeats': 2, 'model': '12→4×2048→3', 'model_mflops_per_row': 25.2,
             'machine': {'gpu': None, 'device': 'cuda', 'cores': 2, 'cpu': 'x', 'python': '3'}, 'variants': table}
  text = gpu.markdown(summary)
  assert '| ours-gpu-8proc | not run: no CUDA device |' in text
  assert '| ours-cpu | 1,000 | 10 |' in text and '1/2 runs ok' in text
  assert 'ours-gpu / ours-cpu (rows/s): 12.5×' in text


def test_torch_predictor__rows_of_class_probabilities():
  pytest.importorskip('torch')
  predictor = torch_model.TorchPredictor(12, 3, device='cpu', hidden=32, layers=2)
  out = predictor.predict(np.random.default_rng(0).normal(size=(5, 12)).astype(np.float32))
  assert out.shape == (5, 3)
  np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
