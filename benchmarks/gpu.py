"""The GPU row: a PyTorch bundle served by the product's own command, against a raw GPU loop.

    python -m benchmarks.gpu --rows 4000000 --out DIR        # on a machine with PyTorch and CUDA
    python -m benchmarks.gpu --rows 20000 --repeats 1 --device cpu --out DIR   # try it anywhere
    python -m benchmarks.gpu --check_imports                 # Beam and our code import, TensorFlow not

The GPU machine has PyTorch and no TensorFlow, so the example SavedModel
cannot run there. benchmarks/torch_model.py exports a heavier MLP on the
example's features with `torch.export` and imports it as a bundle, as a user
would. Variants, each its own measured process, run interleaved round after
round; medians are reported, `× raw-gpu` is the median of ratios within one
round:

  raw-gpu           no Beam: pyarrow batches, `FeatureSpec.transform`, the bundle's
                    model on the GPU (one call per 65,536 rows), pyarrow writes
  ours-gpu          python -m pipelines.run --model=BUNDLE --device=gpu, in one process
  ours-gpu-Nthread  the same with N worker threads in that process (one model copy)
  ours-gpu-Nproc    the same with N worker processes sharing one model copy
  ours-cpu          python -m pipelines.run --device=cpu (torch uses every core), on --cpu_rows

While each run goes on, NVML is sampled every 100 ms for GPU utilisation and
memory. results.json is rewritten after every run, so a run cut short still
leaves what it measured.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time

from benchmarks.report import fmt, per_variant

VARIANTS = ('raw-gpu', 'ours-gpu', 'ours-gpu-Nthread', 'ours-gpu-Nproc', 'ours-cpu')
RUN_ID = 'bench'


def check_imports() -> int:
  """Imports what `python -m pipelines.run` imports for a PyTorch bundle, and checks TensorFlow stayed out.

  Needs no PyTorch. Where PyTorch is installed, Beam's `ml.inference.base`
  imports it anyway (for its model manager), so the line says whether it did.
  """
  import models.handlers.pytorch  # noqa: F401
  import pipelines.run  # noqa: F401
  from models.examples.penguins import train
  spec = train.fit_features()
  print(f'imports ok: {len(spec.output_names)} features; tensorflow imported: {"tensorflow" in sys.modules}; '
        f'torch imported: {"torch" in sys.modules}', flush=True)
  return 1 if 'tensorflow' in sys.modules else 0


def _variant_name(variant: str, workers: int) -> str:
  return variant.replace('N', str(workers)) if variant in ('ours-gpu-Nproc', 'ours-gpu-Nthread') else variant


def command(variant: str, data: str, bundle: str, output: str, args) -> list[str]:
  """The command line of one run of `variant`."""
  files = os.path.join(data, '*.parquet')
  if variant == 'raw-gpu':
    return [sys.executable, '-m', 'benchmarks.frameworks', 'raw', '--framework=torch', f'--device={args.device}',
            f'--input={files}', f'--model={bundle}', f'--output={output}']
  device = 'cpu' if variant == 'ours-cpu' or args.device == 'cpu' else 'gpu'
  cmd = [sys.executable, '-m', 'pipelines.run', f'--input={files}', f'--model={bundle}', f'--output={output}',
         '--key_column=id', f'--run_id={RUN_ID}', '--quiet', f'--device={device}', *args.ours_flags]
  if variant in ('ours-gpu-Nproc', 'ours-gpu-Nthread'):
    mode = 'multi_processing' if variant == 'ours-gpu-Nproc' else 'multi_threading'
    cmd += [f'--direct_num_workers={args.workers}', f'--direct_running_mode={mode}']
  return cmd


def counts(variant: str, log: str, output: str) -> dict:
  """rows_read, rows_predicted and rows_rejected as the run reported them.

  The raw loop prints them as its last JSON line; our job writes them to its run summary.
  """
  if variant != 'raw-gpu':
    try:
      with open(os.path.join(output, RUN_ID, '_run_summary.json'), encoding='utf-8') as f:
        summary = json.load(f)
    except (OSError, ValueError):
      return {}
    return {k: summary.get(k) for k in ('rows_read', 'rows_predicted', 'rows_rejected')}
  for line in reversed(log.splitlines()):
    if line.startswith('{"rows_read"'):
      return json.loads(line)
  return {}


def run_once(variant: str, rows: int, round_no: int, args, bundle: str, time_left: float) -> dict:
  from testing.data import make_dataset
  from benchmarks.gpu_monitor import GpuSampler
  from benchmarks.measure import run_measured
  from benchmarks.run import predicted_rows
  data = os.path.join(args.work, f'data-{rows}')
  manifest = make_dataset(data, rows)
  output = os.path.join(args.work, 'out', variant)
  shutil.rmtree(output, ignore_errors=True)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.getcwd(), os.environ.get('PYTHONPATH')) if p))
  name = _variant_name(variant, args.workers)
  print(f'[{time.strftime("%H:%M:%S")}] round {round_no} {name}: {rows:,} rows ...', flush=True)
  sampler = GpuSampler().start()
  m = run_measured(command(variant, data, bundle, output, args), output_dir=output, env=env,
                   log_path=os.path.join(args.out, 'logs', f'{name}-{rows}-{round_no}.log'),
                   timeout_s=max(10.0, min(args.timeout_s, time_left)))
  gpu = sampler.stop()
  predicted = predicted_rows(output) if m.returncode == 0 else 0
  reported = counts(variant, m.log, output)
  ok = m.returncode == 0 and predicted == manifest['complete_rows'] == reported.get('rows_predicted')
  result = {'variant': name, 'rows': rows, 'round': round_no, 'ok': ok, 'returncode': m.returncode,
            'rows_predicted': predicted, 'rows_expected': manifest['complete_rows'],
            'counters': {k: v for k, v in reported.items() if k.startswith('rows_')},
            'wall_s': round(m.wall_s, 3), 'rows_per_s': round(rows / m.wall_s, 1),
            'peak_rss_mb': round(m.peak_rss_mb, 1),
            'first_prediction_s': None if m.first_prediction_s is None else round(m.first_prediction_s, 2), **gpu}
  if not ok:
    result['log_tail'] = m.log[-2000:]
  print(json.dumps({k: v for k, v in result.items() if k != 'log_tail'}), flush=True)
  if not ok:
    print(f'{name} failed (exit {m.returncode}, {predicted:,} of {manifest["complete_rows"]:,} rows); '
          f'log tail:\n{m.log[-1500:]}', file=sys.stderr, flush=True)
  shutil.rmtree(output, ignore_errors=True)
  return result


def summarize(runs: list[dict], names: list[str], skipped: dict[str, str]) -> list[dict]:
  """Medians per variant; `ratio_to_raw_gpu` is the median of ratios within one round."""
  table = per_variant(runs, names, skipped, baseline='raw-gpu', ratio_key='ratio_to_raw_gpu',
                      keys=('rows_per_s', 'wall_s', 'peak_rss_mb', 'first_prediction_s', 'gpu_util_mean',
                            'gpu_util_max', 'gpu_mem_peak_mb'))
  for row in table:
    if 'skipped' not in row:
      row['counts_ok'] = row['runs'] > 0 and row['ok_runs'] == row['runs']
  return table


def machine(device: str) -> dict:
  from benchmarks import report
  from benchmarks.gpu_monitor import gpu_names
  packages = (('apache_beam', 'apache-beam'), ('torch', 'torch'), ('pyarrow', 'pyarrow'), ('numpy', 'numpy'),
              ('protobuf', 'protobuf'))
  return {**report.machine(packages), 'gpu': gpu_names(), 'device': device}


def markdown(summary: dict) -> str:
  m = summary['machine']
  lines = [
      f'{summary["rows"]:,} rows (ours-cpu: {summary["cpu_rows"]:,}), {summary["repeats"]} rounds on '
      f'{m.get("gpu") or "no GPU"} (model on `{m["device"]}`), {m["cores"]} × {m["cpu"]}; PyTorch {m.get("torch")}, '
      f'Beam {m.get("apache_beam")}, pyarrow {m.get("pyarrow")}, Python {m["python"]}.',
      f'Model: MLP {summary["model"]}, {summary["model_mflops_per_row"]:.1f} MFLOP/row, random weights '
      '(throughput, not accuracy), fp32, exported with `torch.export`.', '',
      '| variant | rows | rows/s | × raw-gpu | wall s | peak RSS MB | first prediction s | GPU util mean % '
      '| GPU util max % | GPU mem peak MB | counts |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |']
  for row in summary['variants']:
    if 'skipped' in row:
      lines.append(f'| {row["variant"]} | not run: {row["skipped"]} |||||||||| ')
      continue
    state = 'ok' if row['counts_ok'] else f'{row["ok_runs"]}/{row["runs"]} runs ok'
    lines.append(
        f'| {row["variant"]} | {fmt(row["rows"], ",")} | {fmt(row["rows_per_s"], ",.0f")} '
        f'| {fmt(row["ratio_to_raw_gpu"], ".2f")} | {fmt(row["wall_s"], ".1f")} | {fmt(row["peak_rss_mb"], ",.0f")} '
        f'| {fmt(row["first_prediction_s"], ".1f")} | {fmt(row["gpu_util_mean"], ".0f")} '
        f'| {fmt(row["gpu_util_max"], ".0f")} | {fmt(row["gpu_mem_peak_mb"], ",.0f")} | {state} |')
  rates = {r['variant']: r.get('rows_per_s') for r in summary['variants']}
  if rates.get('ours-gpu') and rates.get('ours-cpu'):
    lines += ['', f'- ours-gpu / ours-cpu (rows/s): {rates["ours-gpu"] / rates["ours-cpu"]:.1f}×']
  return '\n'.join(lines) + '\n'


def write(summary: dict, out: str) -> None:
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'results.json'), 'w', encoding='utf-8') as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(out, 'results.md'), 'w', encoding='utf-8') as f:
    f.write(markdown(summary))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rows', type=int, default=1_000_000, help='Input rows of the GPU variants.')
  parser.add_argument('--cpu_rows', type=int, default=50_000, help='Input rows of ours-cpu (its rate is flat in N).')
  parser.add_argument('--repeats', type=int, default=3, help='Rounds of every variant; medians are reported.')
  parser.add_argument('--variants', default=','.join(VARIANTS), help=f'Comma-separated subset of {VARIANTS}.')
  parser.add_argument('--workers', type=int, default=8,
                      help='Worker processes of ours-gpu-Nproc, threads of ours-gpu-Nthread.')
  parser.add_argument('--device', default='cuda', choices=('cuda', 'cpu'),
                      help='cuda: the GPU variants on the GPU (ours with --device=gpu); cpu tries the script.')
  parser.add_argument('--hidden', type=int, default=None, help='Hidden units per layer (default 2048).')
  parser.add_argument('--layers', type=int, default=None, help='Hidden layers (default 4).')
  parser.add_argument('--ours_flags', default='', help='Extra pipeline flags for the ours variants.')
  parser.add_argument('--out', default='build/bench/gpu', help='results.md and results.json go here.')
  parser.add_argument('--work', default=os.path.join(tempfile.gettempdir(), 'gpu-bench'),
                      help='Input data and outputs (kept out of OUT, which holds results and logs).')
  parser.add_argument('--timeout_s', type=float, default=300, help='Most seconds one run may take.')
  parser.add_argument('--budget_s', type=float, default=None, help='Start no run after this many seconds.')
  parser.add_argument('--check_imports', action='store_true', help='Only check imports (no PyTorch needed).')
  args = parser.parse_args(argv)
  if args.check_imports:
    return check_imports()
  from benchmarks import torch_model
  from models.bundle import ModelBundle
  args.hidden, args.layers = args.hidden or torch_model.HIDDEN, args.layers or torch_model.LAYERS
  variants = [v.strip() for v in args.variants.split(',') if v.strip()]
  unknown = set(variants) - set(VARIANTS)
  if unknown:
    parser.error(f'unknown variants {sorted(unknown)}; choose from {VARIANTS}')

  started, clock = datetime.datetime.now(datetime.timezone.utc), time.monotonic()
  info = machine(args.device)
  print(json.dumps({'machine': info}), flush=True)
  names = [_variant_name(v, args.workers) for v in variants]
  skipped = {}
  if args.device.startswith('cuda') and not info['gpu']:
    skipped = {_variant_name(v, args.workers): 'no CUDA device' for v in variants if v != 'ours-cpu'}
  args.ours_flags = args.ours_flags.split()
  bundle = torch_model.make_bundle(os.path.join(args.work, f'bundle-{args.layers}x{args.hidden}'),
                                   hidden=args.hidden, layers=args.layers)
  width_in = len(ModelBundle.load(bundle).features.output_names)
  summary = {'started': started.isoformat(timespec='seconds'), 'rows': args.rows, 'cpu_rows': args.cpu_rows,
             'repeats': args.repeats, 'machine': info, 'model': f'{width_in}→{args.layers}×{args.hidden}→3',
             'model_mflops_per_row': torch_model.flops_per_row(width_in, 3, hidden=args.hidden,
                                                               layers=args.layers) / 1e6,
             'ours_flags': args.ours_flags, 'runs': [], 'variants': []}
  runnable = [v for v in variants if _variant_name(v, args.workers) not in skipped]
  for round_no in range(args.repeats):
    shift = round_no % len(runnable) if runnable else 0
    for variant in runnable[shift:] + runnable[:shift]:
      time_left = (args.budget_s - (time.monotonic() - clock)) if args.budget_s else args.timeout_s
      if time_left <= 10:
        print(f'budget of {args.budget_s:.0f} s spent: {variant} round {round_no} not run', flush=True)
        continue
      rows = min(args.rows, args.cpu_rows) if variant == 'ours-cpu' else args.rows
      summary['runs'].append(run_once(variant, rows, round_no, args, bundle, time_left))
      summary['variants'] = summarize(summary['runs'], names, skipped)
      write(summary, args.out)
  summary['variants'] = summarize(summary['runs'], names, skipped)
  write(summary, args.out)
  print(markdown(summary), flush=True)
  print(f'results: {os.path.join(args.out, "results.md")}, {os.path.join(args.out, "results.json")}', flush=True)
  return 0 if summary['runs'] and all(r['ok'] for r in summary['runs']) else 1


if __name__ == '__main__':
  sys.exit(main())
