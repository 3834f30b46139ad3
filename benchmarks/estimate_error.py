"""How far `--estimate`'s local forecast is from the measured process: the DirectRunner, here, side by side.

`python -m benchmarks.estimate_error --rows 1000000` makes N rows (testing.data)
and, for each model format (the example SavedModel, and the same classifier as
an ONNX bundle), runs `python -m pipelines.run --estimate` on them as its own
process (a sample of --sample rows), then the real run as a process, --repeats
times, measured from outside (benchmarks/measure.py), and compares the
estimate's forecast of the whole process on this machine (start-up included)
with the measured wall times. The Dataflow forecast cannot be checked without
Dataflow. Results: WORK/estimate.md and .json; TARGET is issue 27's bound.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys

from benchmarks.measure import run_measured
from testing.data import make_dataset

TARGET = 0.15
FORMATS = ('saved_model', 'onnx')


def _bundle(model_format: str, args) -> str:
  if model_format == 'saved_model':
    return args.model
  from benchmarks.frameworks import make_bundle
  return make_bundle('onnx', os.path.join(args.work, 'bundles', 'onnx'))


def _env() -> dict:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  env['PYTHONPATH'] = os.pathsep.join(p for p in (os.getcwd(), env.get('PYTHONPATH')) if p)
  return env


def measure_format(model_format: str, data: str, args) -> dict:
  """The forecast and the measured process wall times of one model format."""
  bundle = _bundle(model_format, args)
  flags = [sys.executable, '-m', 'pipelines.run', f'--input={data}/*.parquet', f'--model={bundle}', '--report=false']
  work = os.path.join(args.work, model_format)
  shutil.rmtree(work, ignore_errors=True)
  forecast_dir = os.path.join(work, 'estimate')
  m = run_measured(flags + [f'--output={work}/forecast-out', '--run_id=forecast', '--estimate',
                            f'--estimate_rows={args.sample}', f'--estimate_output={forecast_dir}'],
                   output_dir=work, log_path=os.path.join(work, 'estimate.log'), env=_env())
  if m.returncode:
    raise RuntimeError(f'--estimate failed (exit {m.returncode}):\n{m.log[-1500:]}')
  with open(os.path.join(forecast_dir, 'estimate.json'), encoding='utf-8') as f:
    measured = json.load(f)['measured']
  walls = []
  for i in range(args.repeats):
    out = os.path.join(work, f'out-{i}')
    run = run_measured(flags + [f'--output={out}', f'--run_id=full-{i}'], output_dir=out,
                       log_path=os.path.join(work, f'run-{i}.log'), env=_env())
    if run.returncode:
      raise RuntimeError(f'the run failed (exit {run.returncode}):\n{run.log[-1500:]}')
    walls.append(run.wall_s)
    shutil.rmtree(out, ignore_errors=True)
  wall = statistics.median(walls)
  forecast = measured['local_wall_seconds']
  return {'format': model_format, 'estimate_process_seconds': m.wall_s, 'forecast_wall_seconds': forecast,
          'measured_wall_seconds': walls, 'error': (forecast - wall) / wall,
          **{k: measured[k] for k in ('startup_seconds', 'fixed_wall_seconds', 'local_rows_seconds',
                                      'publish_seconds', 'rows_per_wall_second', 'separated')}}


def markdown(report: dict) -> str:
  lines = [f'{report["rows"]:,} rows, sample of {report["sample_rows"]:,}; forecast of the whole process here '
           f'(start-up included) against its measured wall time (target within ±{TARGET:.0%}).', '',
           '| format | forecast s (start-up + fixed + rows + publish) | measured s (runs) | error | target |',
           '| --- | ---: | ---: | ---: | --- |']
  for r in report['formats']:
    parts = ' + '.join(f'{r[k]:.1f}' for k in ('startup_seconds', 'fixed_wall_seconds', 'local_rows_seconds',
                                                 'publish_seconds'))
    verdict = 'met' if abs(r['error']) <= TARGET else 'missed'
    lines.append(f'| {r["format"]} | {r["forecast_wall_seconds"]:.1f} ({parts}) | '
                 f'{statistics.median(r["measured_wall_seconds"]):.1f} '
                 f'({", ".join(f"{w:.1f}" for w in r["measured_wall_seconds"])}) | {100 * r["error"]:+.0f}% | {verdict} |')
  return '\n'.join(lines)


def main_report(rows: int, *, sample: int = 50_000, repeats: int = 2, formats: tuple[str, ...] = FORMATS,
                model: str = 'build/bundles/penguins', work: str = 'build/bench-estimate') -> dict:
  """Measures every format in `formats` on `rows` rows; returns the report (benchmarks.run prints its targets)."""
  args = argparse.Namespace(rows=rows, sample=sample, repeats=repeats, model=model, work=work)
  data = os.path.join(work, f'data-{rows}')
  make_dataset(data, rows)
  return {'rows': rows, 'sample_rows': sample, 'target': TARGET,
          'formats': [measure_format(f, data, args) for f in formats]}


def targets(report: dict) -> list[dict]:
  """Issue 27's forecast target, one row per format."""
  return [{'target': f'--estimate at {report["rows"]:,} rows, {r["format"]}: local forecast against the process',
           'goal': f'within ±{TARGET:.0%}', 'measured': f'{100 * r["error"]:+.0f}%', 'met': abs(r['error']) <= TARGET}
          for r in report['formats']]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rows', type=int, default=1_000_000)
  parser.add_argument('--sample', type=int, default=50_000, help='--estimate_rows')
  parser.add_argument('--repeats', type=int, default=2, help='Measured runs of the whole input, per format.')
  parser.add_argument('--formats', default=','.join(FORMATS), help=f'Comma-separated subset of {FORMATS}.')
  parser.add_argument('--model', default='build/bundles/penguins', help='The example SavedModel bundle.')
  parser.add_argument('--work', default='build/bench-estimate')
  args = parser.parse_args(argv)
  report = main_report(args.rows, sample=args.sample, repeats=args.repeats, model=args.model, work=args.work,
                       formats=tuple(f.strip() for f in args.formats.split(',') if f.strip()))
  text = markdown(report)
  os.makedirs(args.work, exist_ok=True)
  with open(os.path.join(args.work, 'estimate.md'), 'w', encoding='utf-8') as f:
    f.write(text + '\n')
  with open(os.path.join(args.work, 'estimate.json'), 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=2)
  print(text)
  return 0 if all(abs(r['error']) <= TARGET for r in report['formats']) else 1


if __name__ == '__main__':
  raise SystemExit(main())
