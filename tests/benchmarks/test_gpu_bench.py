"""The GPU row's parts that run without a GPU: its bundle, its commands, its imports, its table."""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import gpu, torch_model


def test_make_bundle__an_exported_mlp_the_job_and_the_raw_loop_both_serve(tmp_path, penguin_bundle):
  pytest.importorskip('torch')
  from benchmarks import frameworks
  from models.bundle import ModelBundle
  from models.handlers.pytorch import Predictor
  path = torch_model.make_bundle(str(tmp_path / 'bundle'), hidden=16, layers=2)
  bundle = ModelBundle.load(path)
  assert bundle.features.to_dict() == penguin_bundle.features.to_dict()
  assert bundle.outputs.classes == penguin_bundle.outputs.classes
  assert bundle.metadata['format'] == 'torch'
  x = np.random.default_rng(0).normal(size=(5, len(bundle.features.output_names))).astype(np.float32)
  ours = Predictor(bundle.model_path, bundle.outputs, device='cpu').predict(x)
  raw = frameworks.raw_predict('torch', bundle.model_path, 'cpu')(x)
  np.testing.assert_allclose(ours, raw, rtol=1e-6)
  np.testing.assert_allclose(ours.sum(axis=1), 1.0, rtol=1e-5)
  assert torch_model.make_bundle(path, hidden=16, layers=2) == path  # made once


def test_command__ours_variants_run_the_product_on_the_device_asked_for():
  args = argparse.Namespace(device='cuda', workers=4, ours_flags=['--report=false'])
  raw = gpu.command('raw-gpu', 'DATA', 'BUNDLE', 'OUT', args)
  assert raw[1:4] == ['-m', 'benchmarks.frameworks', 'raw'] and '--device=cuda' in raw
  ours = gpu.command('ours-gpu', 'DATA', 'BUNDLE', 'OUT', args)
  assert ours[1:3] == ['-m', 'pipelines.run'] and '--device=gpu' in ours and '--model=BUNDLE' in ours
  assert '--report=false' in ours and not any(f.startswith('--direct_') for f in ours)
  assert '--device=cpu' in gpu.command('ours-cpu', 'DATA', 'BUNDLE', 'OUT', args)
  threads = gpu.command('ours-gpu-Nthread', 'DATA', 'BUNDLE', 'OUT', args)
  assert '--direct_num_workers=4' in threads and '--direct_running_mode=multi_threading' in threads
  assert '--direct_running_mode=multi_processing' in gpu.command('ours-gpu-Nproc', 'DATA', 'BUNDLE', 'OUT', args)
  assert '--device=cpu' in gpu.command('ours-gpu', 'DATA', 'BUNDLE', 'OUT', argparse.Namespace(
      device='cpu', workers=1, ours_flags=[]))


def test_counts__from_the_raw_loops_line_or_the_jobs_run_summary(tmp_path):
  (tmp_path / gpu.RUN_ID).mkdir()
  (tmp_path / gpu.RUN_ID / '_run_summary.json').write_text(json.dumps(
      {'rows_read': 10, 'rows_predicted': 9, 'rows_rejected': 1, 'run_id': gpu.RUN_ID}))
  assert gpu.counts('ours-gpu', '', str(tmp_path)) == {'rows_read': 10, 'rows_predicted': 9, 'rows_rejected': 1}
  assert gpu.counts('ours-gpu', '', str(tmp_path / 'missing')) == {}
  log = 'start\n{"rows_read": 4, "rows_predicted": 3, "rows_rejected": 1}\n'
  assert gpu.counts('raw-gpu', log, str(tmp_path)) == {'rows_read': 4, 'rows_predicted': 3, 'rows_rejected': 1}


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
