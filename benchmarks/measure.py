"""Runs one benchmark command as a child process and measures it from outside.

Measured the same way for every variant: wall time of the whole process
(start-up included, as a user pays it), peak resident memory summed over the
process and all its descendants (workers, model servers), and time to first
prediction: when the first Parquet file appears under the output directory
(Beam's sinks create their temporary shard when the first batch arrives).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from typing import Optional, Sequence

SAMPLE_SECONDS = 0.2


@dataclasses.dataclass
class Measurement:
  returncode: int
  wall_s: float
  peak_rss_mb: float
  first_prediction_s: Optional[float]
  log: str


def _parents() -> dict[int, int]:
  """pid -> parent pid of every process we may read."""
  parents = {}
  for name in os.listdir('/proc'):
    if not name.isdigit():
      continue
    try:
      with open(f'/proc/{name}/stat', 'rb') as f:
        stat = f.read()
    except OSError:
      continue
    # The command name may hold spaces: fields resume after its closing parenthesis.
    parents[int(name)] = int(stat[stat.rindex(b')') + 2:].split()[1])
  return parents


def tree_rss_bytes(root: int) -> int:
  """Resident memory of `root` and every descendant, in bytes."""
  children: dict[int, list[int]] = {}
  for pid, parent in _parents().items():
    children.setdefault(parent, []).append(pid)
  total, todo = 0, [root]
  while todo:
    pid = todo.pop()
    todo.extend(children.get(pid, ()))
    try:
      with open(f'/proc/{pid}/statm', 'rb') as f:
        total += int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except OSError:
      pass
  return total


def _first_parquet(directory: str) -> bool:
  for _, _, files in os.walk(directory):
    if any(f.endswith('.parquet') for f in files):
      return True
  return False


def last_error(log: str) -> str:
  """The line of a failed run's output that most likely says why (its last error line), for a results table."""
  lines = [line.strip() for line in log.splitlines() if line.strip() and not line.startswith('log:')]
  errors = [line for line in lines if any(w in line for w in ('Error', 'error', 'cannot', 'failed'))]
  return (errors or lines or ['no output'])[-1][:300]


def run_measured(command: Sequence[str], *, output_dir: str, log_path: str, env: Optional[dict] = None,
                 timeout_s: float = 3600) -> Measurement:
  """Runs `command` to completion, sampling its process tree every SAMPLE_SECONDS."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, 'wb') as log:
    start = time.monotonic()
    proc = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, env=env)
    peak, first = 0, None
    while proc.poll() is None:
      peak = max(peak, tree_rss_bytes(proc.pid))
      if first is None and _first_parquet(output_dir):
        first = time.monotonic() - start
      if time.monotonic() - start > timeout_s:
        proc.kill()
      time.sleep(SAMPLE_SECONDS)
    wall = time.monotonic() - start
  if first is None and _first_parquet(output_dir):
    first = wall
  with open(log_path, 'rb') as f:
    tail = f.read()[-4000:].decode('utf-8', 'replace')
  return Measurement(proc.returncode, wall, peak / 2**20, first, tail)
