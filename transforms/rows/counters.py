"""The job's Beam counters: one namespace, and the one place that names it.

Steps increment `counter(NAME)`; the run summary and the live progress line
read every counter of `NAMESPACE` back from the runner's metrics.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics.metric import Metrics

NAMESPACE = 'batch_inference'


def counter(name: str) -> beam.metrics.metricbase.Counter:
  """The job's counter NAME (rows_read, rows_predicted, rejected_<code>, ...)."""
  return Metrics.counter(NAMESPACE, name)
