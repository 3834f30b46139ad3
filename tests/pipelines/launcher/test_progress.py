"""The live progress line: counters from the DirectRunner's progress reports, drawn on a terminal."""

import io
import os
import pty
import re
import subprocess
import sys
import threading
import time

import apache_beam as beam
import pytest
from apache_beam.metrics import monitoring_infos
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner

from models.examples.penguins import train
from pipelines.launcher.progress import LiveCounters, ProgressLine, direct_runner_progress, progress_line


def _report(counters=None) -> beam_fn_api_pb2.ProcessBundleProgressResponse:
  return beam_fn_api_pb2.ProcessBundleProgressResponse(monitoring_infos=[
      monitoring_infos.int64_user_counter(namespace, name, value, ptransform='Step')
      for (namespace, name), value in (counters or {}).items()])


def test_live_counters__keep_each_bundles_latest_report_and_sum_bundles():
  live = LiveCounters()
  live.update('b1', _report({('batch_inference', 'rows_read'): 10}))
  live.update('b1', _report({('batch_inference', 'rows_read'): 25, ('other', 'rows_read'): 99}))
  live.update('b2', _report({('batch_inference', 'rows_read'): 5, ('batch_inference', 'rows_rejected'): 1}))
  live.update('b2', _report())  # the bundle finished: an empty report keeps what it had
  assert live.totals() == {'rows_read': 30, 'rows_rejected': 1}


def _slow_count(x):
  beam.metrics.Metrics.counter('batch_inference', 'rows_read').inc(x)
  time.sleep(0.5)
  return x


def test_direct_runner_progress__reports_counters_while_the_bundle_still_runs():
  live = LiveCounters()
  seen, done = [], threading.Event()

  def sample():
    while not done.is_set():
      seen.append(live.totals().get('rows_read', 0))
      time.sleep(0.05)

  sampler = threading.Thread(target=sample)
  options = PipelineOptions(['--direct_running_mode=multi_threading'])
  with direct_runner_progress(live, interval=0.1):
    sampler.start()
    with beam.Pipeline(options=options) as p:
      _ = p | beam.Create([1, 10, 100, 1000], reshuffle=False) | beam.Map(_slow_count)
  done.set()
  sampler.join()
  # Partial sums were visible before the run ended: the line moves while rows flow.
  assert any(0 < n < 1111 for n in seen), seen
  assert fn_runner.ProgressRequester.__name__ == 'ProgressRequester'  # restored after the run


def test_progress_line__redraws_one_line_and_clears_it():
  stream = io.StringIO()
  totals = {'rows_read': 1200, 'rows_predicted': 1000, 'rows_rejected': 3}
  with ProgressLine(lambda: totals, stream=stream, interval=0.05):
    time.sleep(0.3)
  text = stream.getvalue()
  assert text.count('\r') >= 3 and '\n' not in text
  assert 'rows read 1,200 | predicted 1,000 | rejected 3 |' in text
  assert text.endswith('\r') and text.rsplit('\r', 2)[-2].strip() == ''


def test_progress_line__says_starting_before_the_first_counter():
  assert progress_line({}, 2.0).startswith('starting')
  assert progress_line({'rows_read': 500}, 2.0) == 'rows read 500 | predicted 0 | rejected 0 | 250 rows/s | 2.0s'


def _read_all(fd: int) -> bytes:
  chunks = []
  while True:
    try:
      chunk = os.read(fd, 65536)
    except OSError:  # the terminal closed with the process
      break
    if not chunk:
      break
    chunks.append(chunk)
  return b''.join(chunks)


@pytest.mark.slow
def test_run_on_a_terminal__draws_live_counters_then_the_summary(tmp_path, penguin_bundle):
  lines = open(train.EXAMPLE_DATA, encoding='utf-8').read().splitlines()
  big = tmp_path / 'big.csv'
  # 1,032,000 rows: a few seconds, so the line is redrawn with live counts (0.5 s apart) before the end
  big.write_text('\n'.join([lines[0]] + lines[1:] * 3000) + '\n', encoding='utf-8')
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
  controller, terminal = pty.openpty()
  process = subprocess.Popen(
      [sys.executable, '-m', 'pipelines.run', f'--input={big}', f'--model={penguin_bundle.path}',
       f'--output={tmp_path / "out"}', '--run_id=tty', '--report=false'],
      cwd=root, stdout=terminal, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
      env={**os.environ, 'PYTHONPATH': root})
  os.close(terminal)
  text = _read_all(controller).decode('utf-8', 'replace')
  os.close(controller)
  assert process.wait(timeout=300) == 0
  counts = [int(m.replace(',', '')) for m in re.findall(r'\rrows read ([\d,]+) \|', text)]
  assert any(n > 0 for n in counts), f'no live counts on the terminal: {text[:2000]!r}'
  assert 'Run tty: DONE' in text and 'rows read          1,032,000' in text


@pytest.mark.parametrize('argv, quiet', [([], False), (['--quiet'], True), (['--quiet=true'], True),
                                         (['--quiet=false'], False)])
def test_quiet_flag__bare_or_with_a_value_as_flex_template_parameters_pass_it(argv, quiet):
  from apache_beam.options.pipeline_options import PipelineOptions

  from pipelines.options import BatchInferenceOptions
  assert PipelineOptions(argv).view_as(BatchInferenceOptions).quiet is quiet
