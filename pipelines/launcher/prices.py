"""A dated table of Dataflow batch prices, for `--estimate`'s cost forecast.

Transcribed by hand from Google Cloud's public price list pages "Dataflow
pricing" (batch worker vCPU, memory and Persistent Disk, us-central1) and
"GPU pricing" (Compute Engine on-demand GPU prices, which Dataflow GPU workers
pay), as they stood on PRICES_DATE. Nothing here is fetched; refresh the
numbers from those pages before relying on a forecast, and note that other
regions, committed-use discounts and FlexRS price differently.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

PRICES_DATE = '2025-06-01'
PRICES_SOURCE = ('Google Cloud price list pages "Dataflow pricing" (batch, us-central1) and "GPU pricing" '
                 '(Compute Engine, us-central1)')
REGION = 'us-central1'

VCPU_HOUR = 0.056  # USD per vCPU hour, Dataflow batch
MEMORY_GB_HOUR = 0.003557  # USD per GB hour, Dataflow batch
PD_GB_HOUR = 0.000054  # USD per GB hour, standard Persistent Disk
BOOT_DISK_GB = 25  # a batch worker's disk with Dataflow Shuffle (the default)
GPU_HOUR = {'nvidia-tesla-t4': 0.35, 'nvidia-l4': 0.56, 'nvidia-tesla-v100': 2.48, 'nvidia-tesla-a100': 2.934}
# Dataflow bills each worker per second, with a minimum of one minute.
MINIMUM_SECONDS = 60


@dataclasses.dataclass(frozen=True)
class Machine:
  name: str
  vcpus: int
  memory_gb: float
  gpu: Optional[str] = None  # the accelerator type the machine carries (one)

  @property
  def hourly(self) -> float:
    """USD per worker hour: vCPUs, memory, disk and the GPU."""
    return (self.vcpus * VCPU_HOUR + self.memory_gb * MEMORY_GB_HOUR + BOOT_DISK_GB * PD_GB_HOUR
            + (GPU_HOUR[self.gpu] if self.gpu else 0.0))


MACHINES = {m.name: m for m in (
    Machine('n1-standard-1', 1, 3.75), Machine('n1-standard-2', 2, 7.5), Machine('n1-standard-4', 4, 15),
    Machine('n1-standard-8', 8, 30), Machine('n2-standard-2', 2, 8), Machine('n2-standard-4', 4, 16),
    Machine('n2-standard-8', 8, 32), Machine('n2-standard-16', 16, 64), Machine('n2-highcpu-8', 8, 8),
    Machine('n1-standard-4+t4', 4, 15, 'nvidia-tesla-t4'), Machine('g2-standard-4', 4, 16, 'nvidia-l4'),
    Machine('g2-standard-8', 8, 32, 'nvidia-l4'),
)}


def machine(name: str, gpu: Optional[str] = None) -> Machine:
  """A machine type of the table, with `gpu` attached (Dataflow's worker_accelerator); ValueError if unknown."""
  base = MACHINES.get(name)
  if base is None:
    raise ValueError(f'machine type {name!r} is not in the price table (pipelines/launcher/prices.py, {PRICES_DATE}); '
                     f'known: {", ".join(MACHINES)}')
  if gpu and gpu not in GPU_HOUR:
    raise ValueError(f'GPU {gpu!r} is not in the price table; known: {", ".join(GPU_HOUR)}')
  return dataclasses.replace(base, gpu=gpu or base.gpu, name=name + (f'+{gpu}' if gpu and not base.gpu else ''))
