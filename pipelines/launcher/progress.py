"""A live progress line for DirectRunner runs, fed by the job's own Beam metrics.

The DirectRunner (Beam's FnApiRunner) only hands metrics back when the run
ends. While a bundle runs, though, the runner can ask the SDK worker for
progress, and the answer carries the bundle's user counters so far: the same
`batch_inference` counters the summary reads. Beam's `ProgressRequester` takes
a callback for those answers, but the runner builds it without one, so
`direct_runner_progress` swaps in a requester that passes one, for the length
of a run. The worker answers progress requests only while it runs bundles
asynchronously, over the Fn API (the `multi_threading` and `multi_processing`
running modes); `pipelines.run` picks `multi_threading` when it shows progress
and the user chose no mode.

On Dataflow none of this is needed: the same counters show live on the job page.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Callable, Iterator, Optional, TextIO

from apache_beam.metrics import monitoring_infos
from apache_beam.runners.portability.fn_api_runner import fn_runner

from transforms.rows import counters

# The runners that answer the progress requests this line is fed by (Beam's FnApiRunner under them).
PROGRESS_RUNNERS = ('DirectRunner', 'SwitchingDirectRunner')


class LiveCounters:
  """Our counters summed over every bundle the runner reported progress for.

  Each bundle's latest report replaces its previous one (reports are running
  totals), so the sum only grows. A bundle's last report can precede its last
  rows, so the live totals may trail the committed ones the summary prints.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._by_bundle: dict[str, dict[str, int]] = {}

  def update(self, bundle_id: str, progress) -> None:
    """Takes one `ProcessBundleProgressResponse` of bundle `bundle_id`."""
    values: dict[str, int] = {}
    for info in progress.monitoring_infos:
      if not (monitoring_infos.is_user_monitoring_info(info) and monitoring_infos.is_counter(info)):
        continue
      namespace, name = monitoring_infos.parse_namespace_and_name(info)
      if namespace == counters.NAMESPACE:
        values[name] = values.get(name, 0) + monitoring_infos.extract_counter_value(info)
    if not values:
      return  # a report before the bundle started, or after it finished
    with self._lock:
      previous = self._by_bundle.get(bundle_id, {})
      self._by_bundle[bundle_id] = {k: max(v, previous.get(k, 0)) for k, v in {**previous, **values}.items()}

  def totals(self) -> dict[str, int]:
    with self._lock:
      totals: dict[str, int] = {}
      for values in self._by_bundle.values():
        for name, value in values.items():
          totals[name] = totals.get(name, 0) + value
      return totals


@contextlib.contextmanager
def direct_runner_progress(counters: LiveCounters, interval: float = 0.5) -> Iterator[LiveCounters]:
  """Feeds `counters` from the FnApiRunner's progress reports while the block runs."""
  original = fn_runner.ProgressRequester

  class _Requester(original):

    def __init__(self, worker_handler, instruction_id, frequency, callback=None):
      del frequency, callback
      super().__init__(worker_handler, instruction_id, interval,
                       callback=lambda progress: counters.update(instruction_id, progress))

  fn_runner.ProgressRequester = _Requester
  try:
    yield counters
  finally:
    fn_runner.ProgressRequester = original


def progress_line(totals: dict[str, int], elapsed: float) -> str:
  """`rows read 12,345 | predicted 12,300 | rejected 45 | 6,172 rows/s | 2.0s`."""
  if not totals:
    return f'starting: workers, model and first bundle | {elapsed:.1f}s'
  read = totals.get('rows_read', 0)
  rate = read / elapsed if elapsed > 0 else 0.0
  return (f'rows read {read:,} | predicted {totals.get("rows_predicted", 0):,} | '
          f'rejected {totals.get("rows_rejected", 0):,} | {rate:,.0f} rows/s | {elapsed:.1f}s')


class ProgressLine:
  """Rewrites one terminal line with `progress_line` every `interval` seconds, in a thread.

  Args:
    source: returns the current counter totals.
    stream: where to draw; nothing is drawn unless it is a terminal.
    interval: seconds between redraws.
  """

  def __init__(self, source: Callable[[], dict[str, int]], *, stream: Optional[TextIO] = None,
               interval: float = 0.5):
    self._source = source
    self._stream = stream or sys.stdout
    self._interval = interval
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._loop, name='progress-line', daemon=True)
    self._started = time.monotonic()
    self._width = 0

  def _draw(self) -> None:
    text = progress_line(self._source(), time.monotonic() - self._started)
    self._stream.write('\r' + text.ljust(self._width))
    self._stream.flush()
    self._width = len(text)

  def _loop(self) -> None:
    while not self._stop.wait(self._interval):
      self._draw()

  def __enter__(self) -> 'ProgressLine':
    self._started = time.monotonic()
    self._thread.start()
    return self

  def __exit__(self, *exc_info) -> None:
    self._stop.set()
    self._thread.join()
    if self._width:
      self._stream.write('\r' + ' ' * self._width + '\r')  # the summary replaces the line
      self._stream.flush()
