"""Measures `ours` under several flag sets, interleaved, to choose defaults from numbers.

    python -m benchmarks.sweep --rows 1000000 --repeats 2 \\
        --config 'read=8192 --read_batch_size=8192' --config 'read=65536 --read_batch_size=65536'

Each --config is `NAME FLAGS...`. Prints one JSON line per run and a Markdown
table of medians (wall time, rows/s, peak RSS, time to first prediction).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys

from testing.data import make_dataset
from benchmarks.measure import run_measured
from benchmarks.run import predicted_rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rows', type=int, default=1_000_000)
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--model', default='build/bundles/penguins')
  parser.add_argument('--work', default='build/bench')
  parser.add_argument('--config', action='append', required=True, help='NAME FLAGS...; repeat for each set.')
  args = parser.parse_args(argv)
  data = os.path.join(args.work, f'data-{args.rows}')
  expected = make_dataset(data, args.rows)['complete_rows']
  configs = [(c.split()[0], c.split()[1:]) for c in args.config]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  env['PYTHONPATH'] = os.pathsep.join(p for p in (os.getcwd(), env.get('PYTHONPATH')) if p)
  runs: dict[str, list] = {name: [] for name, _ in configs}
  for round_no in range(args.repeats):
    for name, flags in configs[round_no % len(configs):] + configs[:round_no % len(configs)]:
      output = os.path.join(args.work, 'out', 'sweep')
      shutil.rmtree(output, ignore_errors=True)
      command = [sys.executable, '-m', 'pipelines.run', f'--input={data}/*.parquet', f'--model={args.model}',
                 f'--output={output}', '--key_column=id', '--run_id=sweep', *flags]
      m = run_measured(command, output_dir=output, log_path=os.path.join(args.work, 'logs', f'sweep-{name}.log'),
                       env=env)
      ok = m.returncode == 0 and predicted_rows(output) == expected
      with open(os.path.join(output, 'sweep', '_run_summary.json'), encoding='utf-8') as f:
        m.pipeline_s = json.load(f)['wall_seconds']  # the pipeline alone, without imports and preflight
      runs[name].append(m)
      print(json.dumps({'config': name, 'round': round_no, 'ok': ok, 'wall_s': round(m.wall_s, 2),
                        'pipeline_s': m.pipeline_s, 'peak_rss_mb': round(m.peak_rss_mb),
                        'first_prediction_s': m.first_prediction_s}), flush=True)
  print('\n| config | flags | wall s | pipeline s | rows/s | peak RSS MB | first prediction s |\n'
        '| --- | --- | ---: | ---: | ---: | ---: | ---: |')
  for name, flags in configs:
    wall = statistics.median(m.wall_s for m in runs[name])
    first = statistics.median(m.first_prediction_s or 0 for m in runs[name])
    pipeline = statistics.median(m.pipeline_s for m in runs[name])
    print(f'| {name} | `{" ".join(flags)}` | {wall:.1f} | {pipeline:.1f} | {args.rows / wall:,.0f} '
          f'| {statistics.median(m.peak_rss_mb for m in runs[name]):,.0f} | {first:.1f} |')
  return 0


if __name__ == '__main__':
  sys.exit(main())
