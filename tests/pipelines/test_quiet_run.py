"""A run's console holds our own lines; the libraries' output goes to the log file the summary names.

Each test runs the real command, `python -m pipelines.run`, on the example data, the way
`./launch.sh demo` does, on a machine like a fresh clone's: no TF_CPP_MIN_LOG_LEVEL set, and
no PyTorch (`./launch.sh demo` installs none), which is what makes Beam's RunInference warn
"Resource module is not available" at each model load.
"""

import os
import re
import subprocess
import sys

import pytest

from models.examples.penguins import train
from pipelines.launcher import logs

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What a library's start-up output looks like: absl/TensorFlow C++ lines ("I0000 00:00:..."),
# absl's pre-init notice, the CUDA probe, Python logging of other modules, Beam's notices.
NOISE = re.compile(r'^[IWEF]\d{4} |absl|cuInit|cuda|tensorflow|Resource module|apache_beam|WARNING|INFO',
                   re.IGNORECASE | re.MULTILINE)


def _run(tmp_path, model, *flags):
  no_torch = tmp_path / 'fresh-clone-site'
  (no_torch / 'torch').mkdir(parents=True, exist_ok=True)
  (no_torch / 'torch' / '__init__.py').write_text('raise ImportError("no torch, as after ./launch.sh demo")\n')
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  env['PYTHONPATH'] = f'{no_torch}{os.pathsep}{ROOT}'
  return subprocess.run(
      [sys.executable, '-m', 'pipelines.run', f'--input={train.EXAMPLE_DATA}',
       f'--model={model}', f'--output={tmp_path / "out"}', '--run_id=r1', '--passthrough_columns=species,year',
       *flags],
      capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


def test_a_run_prints_only_our_lines_and_the_full_log_goes_to_the_file_it_names(tmp_path, penguin_bundle):
  done = _run(tmp_path, penguin_bundle.path)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.startswith('Run r1: DONE on DirectRunner'), done.stdout[:3000]
  ours = [r'run r1 \(attempt-\S+\): predicting \S+penguins\.csv with penguin-species v1',
          r'run r1: publishing to \S+/out/r1/attempt-\S+ and \S+/out/r1/_attempt-\S+',
          r'run r1: published attempt attempt-\S+']
  lines = done.stderr.splitlines()
  assert len(lines) == len(ours) and all(re.fullmatch(p, line) for p, line in zip(ours, lines)), done.stderr
  assert not NOISE.search(done.stdout + done.stderr)
  [log] = re.findall(r'^  log +(\S+)$', done.stdout, re.MULTILINE)
  assert os.path.dirname(log) == str(tmp_path / 'out' / logs.LOGS_FOLDER)
  with open(log, encoding='utf-8') as f:
    text = f.read()
  assert re.search(r'^[IWEF]\d{4} ', text, re.MULTILINE), text[:3000]  # TensorFlow's C++ start-up lines
  assert ' INFO apache_beam.' in text  # Beam's log at INFO
  for line in lines:  # and ours
    assert re.search(rf'^\S+ \S+ INFO root: {re.escape(line)}$', text, re.MULTILINE)
  assert 'Resource module is not available' not in text  # silenced where Beam logs it


def test_verbose_prints_the_libraries_output_as_before(tmp_path, penguin_bundle):
  done = _run(tmp_path, penguin_bundle.path, '--verbose')
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'Run r1: DONE on DirectRunner' in done.stdout
  assert re.search(r'^[IWEF]\d{4} ', done.stderr, re.MULTILINE), done.stderr[:3000]
  assert ' INFO apache_beam.' in done.stderr
  assert 'INFO root: run r1: published attempt attempt-' in done.stderr
  assert 'Resource module is not available' not in done.stderr
  assert not re.search(r'^  log ', done.stdout, re.MULTILINE)
  assert not (tmp_path / 'out' / logs.LOGS_FOLDER).exists()


def test_log_folder__beside_a_local_output_else_the_temporary_folder(tmp_path):
  assert logs.log_folder(str(tmp_path / 'out')) == str(tmp_path / 'out' / '_logs')
  elsewhere = logs.log_folder(None)
  for output in ('gs://bucket/predictions', 'bq://p.d.t', 'postgresql://db/x?table=t'):
    assert logs.log_folder(output) == elsewhere
