"""How `python -m pipelines.run` starts: the collector is off for the imports, then on, with start-up frozen."""

import os
import subprocess
import sys

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
