"""What the live progress line costs: the DirectRunner in `in_memory` mode without it, against
`multi_threading` with progress requests every 0.5 s and the line drawn (to /dev/null).

    python -m benchmarks.progress_overhead --input big.csv --model build/bundles/penguins --repeats 3

Runs alternate between the two settings so that machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.graph.batch_inference import build_pipeline
from pipelines.launcher.resolve import resolve
from pipelines.launcher.progress import LiveCounters, ProgressLine, direct_runner_progress
from pipelines.record.summary import counters


def one_run(input_path: str, model: str, output: str, progress: bool) -> tuple[float, int]:
  mode = 'multi_threading' if progress else 'in_memory'
  options = PipelineOptions([f'--input={input_path}', f'--model={model}', f'--output={output}',
                             f'--direct_running_mode={mode}', '--report=false'])
  plan, _ = resolve(options)
  pipeline = beam.Pipeline(options=options)
  build_pipeline(pipeline, plan)
  live = LiveCounters()
  with open(os.devnull, 'w') as sink, contextlib.ExitStack() as stack:
    if progress:
      stack.enter_context(direct_runner_progress(live))
      stack.enter_context(ProgressLine(live.totals, stream=sink))
    started = time.monotonic()
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.monotonic() - started
  return seconds, counters(result)['rows_read']


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', required=True)
  parser.add_argument('--model', required=True)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  times: dict[bool, list[float]] = {False: [], True: []}
  with tempfile.TemporaryDirectory() as output:
    for _ in range(args.repeats):
      for progress in (False, True):
        seconds, rows = one_run(args.input, args.model, output, progress)
        times[progress].append(seconds)
        print(f'{"multi_threading + progress" if progress else "in_memory, no progress":28} {seconds:6.1f}s '
              f'{rows / seconds:10,.0f} rows/s', flush=True)
  for progress, label in ((False, 'in_memory, no progress'), (True, 'multi_threading + progress')):
    print(f'median {label:28} {statistics.median(times[progress]):6.1f}s')


if __name__ == '__main__':
  main()
