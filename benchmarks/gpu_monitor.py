"""GPU utilisation and memory, sampled from outside while a benchmark run goes on.

NVML (the `pynvml` module of nvidia-ml-py) is asked every SAMPLE_SECONDS;
where it is missing, `nvidia-smi -lms` streams the same two numbers. NVML's
utilisation is the share of the last sample period in which any kernel ran:
it says how busy the GPU was kept, not how much of its arithmetic was used.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from typing import Callable, Optional

SAMPLE_SECONDS = 0.1


def _nvml_reader() -> Optional[tuple[Callable[[], tuple[float, float]], str]]:
  """A function returning (max utilisation %, memory used MB summed over GPUs), and the GPU names."""
  try:
    import pynvml
    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
  except Exception:  # pylint: disable=broad-except  # no module, no driver, no GPU: try nvidia-smi
    return None
  if not handles:
    return None
  names = [pynvml.nvmlDeviceGetName(h) for h in handles]
  names = [n.decode() if isinstance(n, bytes) else n for n in names]

  def read() -> tuple[float, float]:
    util = max(pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles)
    return float(util), sum(pynvml.nvmlDeviceGetMemoryInfo(h).used for h in handles) / 2**20
  return read, ', '.join(names)


def gpu_names() -> Optional[str]:
  """The GPUs this machine has, or None when neither NVML nor nvidia-smi finds one."""
  nvml = _nvml_reader()
  if nvml:
    return nvml[1]
  if shutil.which('nvidia-smi'):
    out = subprocess.run(['nvidia-smi', '--query-gpu=name', '--format=csv,noheader'], capture_output=True,
                         text=True, check=False)
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return ', '.join(names) if out.returncode == 0 and names else None
  return None


class GpuSampler:
  """Samples in a background thread between `start()` and `stop()`; `stop()` returns the summary."""

  def __init__(self):
    self._samples: list[tuple[float, float]] = []
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self._smi: Optional[subprocess.Popen] = None
    self.source: Optional[str] = None

  def start(self) -> 'GpuSampler':
    nvml = _nvml_reader()
    if nvml:
      self.source, target = 'nvml', lambda: self._poll(nvml[0])
    elif shutil.which('nvidia-smi'):
      self.source, target = 'nvidia-smi', self._stream_smi
    else:
      return self
    self._thread = threading.Thread(target=target, daemon=True)
    self._thread.start()
    return self

  def _poll(self, read: Callable[[], tuple[float, float]]) -> None:
    while not self._stop.wait(SAMPLE_SECONDS):
      try:
        self._samples.append(read())
      except Exception:  # pylint: disable=broad-except  # a missed sample is not worth a failed run
        pass

  def _stream_smi(self) -> None:
    self._smi = subprocess.Popen(
        ['nvidia-smi', '--query-gpu=utilization.gpu,memory.used', '--format=csv,noheader,nounits',
         f'-lms={int(SAMPLE_SECONDS * 1000)}'], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in self._smi.stdout:
      try:
        util, used = (float(x) for x in line.split(',')[:2])
      except ValueError:
        continue
      self._samples.append((util, used))

  def stop(self) -> dict:
    """Mean and max utilisation (%) and peak memory used (MB) over the samples; None where there were none."""
    self._stop.set()
    if self._smi is not None:
      self._smi.terminate()
      self._smi.wait()
    if self._thread is not None:
      self._thread.join(timeout=5)
    if not self._samples:
      return {'gpu_util_mean': None, 'gpu_util_max': None, 'gpu_mem_peak_mb': None, 'gpu_samples': 0}
    utils = [u for u, _ in self._samples]
    return {'gpu_util_mean': round(sum(utils) / len(utils), 1), 'gpu_util_max': max(utils),
            'gpu_mem_peak_mb': round(max(m for _, m in self._samples)), 'gpu_samples': len(self._samples)}
