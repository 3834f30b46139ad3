"""How far `--estimate`'s forecast is from a measured run: the DirectRunner, here, side by side.

`python -m benchmarks.estimate_error --rows 1000000` makes N rows (testing.data),
runs `--estimate` on them (a sample of --sample rows, measured in this process),
then runs the whole input in this same process, --repeats times, and compares
the forecast wall time of the DirectRunner with the measured ones (the
estimate's own forecast for this machine; its Dataflow forecast cannot be
checked without Dataflow). Results: WORK/estimate.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time

from testing.data import make_dataset
from pipelines import run as run_job
from pipelines.launcher import estimate


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rows', type=int, default=1_000_000)
  parser.add_argument('--sample', type=int, default=50_000, help='--estimate_rows')
  parser.add_argument('--repeats', type=int, default=2, help='Measured runs of the whole input.')
  parser.add_argument('--model', default='build/bundles/penguins')
  parser.add_argument('--work', default='build/bench-estimate')
  args = parser.parse_args(argv)
  data = os.path.join(args.work, f'data-{args.rows}')
  make_dataset(data, args.rows)
  flags = [f'--input={data}/*.parquet', f'--model={args.model}', '--report=false', '--quiet']
  out = os.path.join(args.work, 'out')
  shutil.rmtree(out, ignore_errors=True)
  start = time.perf_counter()
  result = estimate.estimate(flags + [f'--output={out}', '--run_id=forecast', '--estimate',
                                      f'--estimate_rows={args.sample}'], run_job.run)
  estimate_seconds = time.perf_counter() - start
  forecast = result['measured']['local_wall_seconds']
  measured = []
  for i in range(args.repeats):
    start = time.perf_counter()
    summary = run_job.run(flags + [f'--output={out}', f'--run_id=full-{i}'])
    measured.append(time.perf_counter() - start)
    assert summary.rows_read == args.rows
  wall = statistics.median(measured)
  report = {'rows': args.rows, 'sample_rows': args.sample, 'estimate_seconds': estimate_seconds,
            'forecast_wall_seconds': forecast, 'measured_wall_seconds': measured,
            'error': (forecast - wall) / wall, 'rows_per_cpu_second': result['measured']['rows_per_cpu_second'],
            'rows_per_wall_second': result['measured']['rows_per_wall_second'],
            'fixed_wall_seconds': result['measured']['fixed_wall_seconds'], 'separated': result['measured']['separated']}
  lines = [f'{args.rows:,} rows, sample of {args.sample:,} (x{estimate.REPLICAS}); the estimate itself took '
           f'{estimate_seconds:.1f}s.', '',
           '| forecast wall s | measured wall s (median of runs) | runs | error |', '| ---: | ---: | --- | ---: |',
           f'| {forecast:.2f} | {wall:.2f} | {", ".join(f"{m:.2f}" for m in measured)} | {100 * report["error"]:+.0f}% |',
           '', f'Measured on the sample: {report["rows_per_cpu_second"]:,.0f} rows per CPU-second, '
           f'{report["rows_per_wall_second"]:,.0f} rows per wall second, {report["fixed_wall_seconds"]:.2f}s fixed.']
  os.makedirs(args.work, exist_ok=True)
  with open(os.path.join(args.work, 'estimate.md'), 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  with open(os.path.join(args.work, 'estimate.json'), 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=2)
  print('\n'.join(lines))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
