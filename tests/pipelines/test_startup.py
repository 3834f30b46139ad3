"""How `python -m pipelines.run` starts: the collector is off for the imports, then on, with start-up frozen;
and a run imports only the framework its bundle needs."""

import json
import os
import subprocess
import sys

import pytest

# Exit handlers run on the launcher's way out (`exit_now`), so one can read the collector's state there.
PROBE = '''
import atexit, gc, runpy, sys
atexit.register(lambda: print('collector', gc.isenabled(), gc.get_freeze_count(), flush=True))
sys.argv = ['pipelines/run.py', '--help']
runpy.run_module('pipelines.run', run_name='__main__')
'''


def test_launcher__collects_again_after_imports_with_start_up_frozen():
  out = subprocess.run([sys.executable, '-c', PROBE], capture_output=True, text=True, check=False, timeout=300,
                       env=dict(os.environ, PYTHONPATH=os.getcwd()))
  assert out.returncode == 0, out.stderr[-2000:]
  _, enabled, frozen = out.stdout.strip().splitlines()[-1].split()
  assert enabled == 'True'
  assert int(frozen) > 100_000  # Beam's and our modules' objects, out of every later collection


def test_importing_the_launcher__leaves_the_collector_alone():
  probe = 'import gc; import pipelines.run; print(gc.isenabled(), gc.get_freeze_count())'
  out = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, check=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=os.getcwd()))
  assert out.stdout.split()[-2:] == ['True', '0']


# What a run imports, read at its very end: the demo's rows through a bundle of another framework.
IMPORTS_PROBE = '''
import atexit, json, runpy, sys
atexit.register(lambda: print('imported', json.dumps(sorted(sys.modules)), flush=True))
sys.argv = ['pipelines/run.py'] + sys.argv[1:]
runpy.run_module('pipelines.run', run_name='__main__')
'''
# Frameworks and Beam parts an ONNX or scikit-learn run never uses (models/lean_imports.py).
NEVER_FOR_THESE = ('tensorflow', 'torch', 'keras', 'apache_beam.ml.transforms.base',
                   'apache_beam.ml.inference.model_manager')


@pytest.fixture(scope='module')
def framework_bundles(tmp_path_factory) -> dict[str, str]:
  """The example penguins' classifier as an ONNX and a scikit-learn bundle, imported as a user would."""
  from benchmarks.frameworks import make_bundle
  folder = tmp_path_factory.mktemp('bundles')
  return {fw: make_bundle(fw, str(folder / fw)) for fw in ('onnx', 'sklearn')}


@pytest.mark.slow
@pytest.mark.parametrize('framework', ['onnx', 'sklearn'])
def test_demo_rows__with_an_onnx_or_sklearn_bundle__import_no_tensorflow_nor_torch(framework, framework_bundles,
                                                                                    tmp_path):
  argv = ['--input=models/examples/penguins/example/penguins.csv', f'--model={framework_bundles[framework]}',
          f'--output={tmp_path / "out"}', '--passthrough_columns=species,year']
  out = subprocess.run([sys.executable, '-c', IMPORTS_PROBE, *argv], capture_output=True, text=True, check=False,
                       timeout=300, env=dict(os.environ, PYTHONPATH=os.getcwd()))
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
  assert 'rows predicted           342' in out.stdout
  imported = set(json.loads(out.stdout.strip().splitlines()[-1].split(' ', 1)[1]))
  assert [m for m in NEVER_FOR_THESE if m in imported] == []
  assert {'onnx': 'onnxruntime', 'sklearn': 'skops.io'}[framework] in imported  # the probe saw the model load
