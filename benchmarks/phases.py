"""Where the seconds of one run go: `python -m pipelines.run` with its phases timed, nothing else changed.

    python -m benchmarks.emulated benchmarks.phases --input=bq://... --output=bq://... (as benchmarks.run does)
    python -m benchmarks.phases --input=... --output=...   (files)

Wraps the launcher's and the job's steps with a clock before the run module
loads (each is looked up by name when `pipelines.run` imports it), runs it as
`python -m pipelines.run` would, and at its end writes each step's start and
length, in seconds since the process started, to the JSON file that
PHASES_OUT names (benchmarks/bigquery_breakdown.py reads them). Steps that
overlap (the read session opened while the bundle loads) show as such.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import os
import runpy
import sys
import threading
import time
from typing import Any



def _process_seconds() -> float:
  """Seconds since this process started (as pipelines.launcher.estimate.process_seconds; not imported from
  there, so that nothing of the job is imported before the clock starts)."""
  with open('/proc/self/stat', 'rb') as f:
    stat = f.read()
  with open('/proc/uptime', 'rb') as f:
    uptime = float(f.read().split()[0])
  return uptime - int(stat[stat.rindex(b')') + 2:].split()[19]) / os.sysconf('SC_CLK_TCK')


_T0 = time.perf_counter() - _process_seconds()  # the process's start, on the perf_counter clock
_LOCK = threading.Lock()
PHASES: list[dict[str, Any]] = []

# (module, attribute, phase): what is timed. A class method is 'Class.method'.
TIMED = (
    ('pipelines.launcher.preflight', 'check', 'preflight: bundle load, model check, input files'),
    ('transforms.bigquery.checks', 'check_input_table', 'input table check'),
    ('pipelines.launcher.resolve', 'create_read_session', 'read session'),
    ('pipelines.launcher.resolve', 'check_outputs', 'output checks'),
    ('pipelines.launcher.resolve', 'resolve', 'resolve (all of the above)'),
    ('pipelines.graph.batch_inference', 'build_pipeline', 'build the graph'),
    ('transforms.bigquery.read', '_ReadStreamFn.process', 'read a stream'),
    ('transforms.bigquery.publish', 'publish_run', 'publish: load job (and MERGE for a re-run)'),
    ('transforms.files.publish', 'switch_pointer', 'publish: the run pointer'),
    ('pipelines.graph.finish', 'write_report', 'report'),
    ('pipelines.graph.finish', '_publish', 'publish every output'),
)


def _now() -> float:
  return time.perf_counter() - _T0


def _timed(fn, phase: str):
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    start = _now()
    try:
      result = fn(*args, **kwargs)
      if hasattr(result, '__next__'):  # a generator (a DoFn's process): time it to its end
        result = list(result)
      return result
    finally:
      with _LOCK:
        PHASES.append({'phase': phase, 'start': round(start, 3), 'seconds': round(_now() - start, 3)})
  return wrapper


def install() -> None:
  for module_name, attribute, phase in TIMED:
    try:
      module = importlib.import_module(module_name)
    except ImportError:
      continue
    owner, name = module, attribute
    if '.' in attribute:
      cls, name = attribute.split('.')
      owner = getattr(module, cls, None)
    if owner is not None and hasattr(owner, name):
      setattr(owner, name, _timed(getattr(owner, name), phase))


def _write() -> None:
  PHASES.append({'phase': 'process end', 'start': round(_now(), 3), 'seconds': 0.0})
  path = os.environ.get('PHASES_OUT')
  if path:
    with open(path, 'w', encoding='utf-8') as f:
      json.dump(sorted(PHASES, key=lambda p: p['start']), f, indent=1)


def main() -> None:
  PHASES.append({'phase': 'interpreter start', 'start': 0.0, 'seconds': round(_now(), 3)})
  start = _now()
  install()
  PHASES.append({'phase': 'imports (Beam, ours; not the model\'s framework)', 'start': round(start, 3),
                 'seconds': round(_now() - start, 3)})
  atexit.register(_write)
  sys.argv = ['pipelines/run.py', *sys.argv[1:]]
  runpy.run_module('pipelines.run', run_name='__main__', alter_sys=True)


if __name__ == '__main__':
  main()
