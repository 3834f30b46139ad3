"""The image GPU row: ResNet-50 on JPEGs, the job's own command against a raw PyTorch GPU loop.

    python -m benchmarks.images_gpu --small 20000 --large 400 --out DIR     # PyTorch with CUDA, no TensorFlow
    python -m benchmarks.images_gpu --small 24 --large 2 --repeats 1 --device cpu   # tries the script anywhere
    python -m benchmarks.images_gpu --check_imports     # what the job needs imports, TensorFlow does not

Synthetic JPEGs (testing/image_sets.py) and a seeded ResNet-50 exported with
`torch.export` (testing/resnet.py) are made on the machine itself, so nothing
large travels to it. Variants, each a measured process, interleaved round
after round; `× raw-gpu` is the median of ratios within one round:

  raw-gpu   benchmarks/images_raw.py --device cuda: a DataLoader with a worker per core
            decoding (simplejpeg) and preprocessing, batches of --batch, the program on the GPU
  ours-gpu  python -m pipelines.run --input='DIR/*.jpg' --model=BUNDLE --device=gpu

While each run goes on, the GPU's utilisation and memory are sampled every
100 ms (benchmarks/gpu_monitor.py: NVML, or `nvidia-smi` where NVML is absent):
utilisation says how busy decoding keeps the GPU. results.json is rewritten
after every run, so a run cut short keeps what it measured.
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

from benchmarks.report import fmt, median

VARIANTS = ('raw-gpu', 'ours-gpu')
NEEDED = ('torch', 'apache_beam', 'pyarrow', 'simplejpeg', 'PIL', 'pydicom')


def check_imports() -> int:
  """Imports what the job needs for a PyTorch image bundle; 1 if one is missing or TensorFlow came along."""
  import importlib
  missing = []
  for name in NEEDED:
    try:
      importlib.import_module(name)
    except ImportError as e:
      missing.append(f'{name} ({e})')
  if not missing:
    for module in ('models.handlers.pytorch', 'pipelines.run', 'transforms.images.decode'):
      importlib.import_module(module)
  print(f'missing: {", ".join(missing) or "none"}; tensorflow imported: {"tensorflow" in sys.modules}', flush=True)
  return 1 if missing or 'tensorflow' in sys.modules else 0


def command(variant: str, images: str, bundle: str, output: str, args) -> list[str]:
  common = [f'--input={images}', f'--model={bundle}', f'--output={output}']
  if variant == 'raw-gpu':
    return [sys.executable, '-m', 'benchmarks.images_raw', *common, f'--device={args.device}',
            f'--workers={args.workers}', f'--batch={args.batch}']
  if variant == 'ours-gpu':
    return [sys.executable, '-m', 'pipelines.run', *common, '--run_id=bench', '--quiet',
            f'--device={"cpu" if args.device == "cpu" else "gpu"}', *args.ours_flags]
  raise ValueError(f'unknown variant {variant!r}')


def run_once(variant: str, round_no: int, args, data: str, manifest: dict, bundle: str) -> dict:
  from benchmarks.gpu_monitor import GpuSampler
  from benchmarks.images import read_predictions
  from benchmarks.measure import run_measured
  output = os.path.join(args.work, 'out', variant)
  shutil.rmtree(output, ignore_errors=True)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.getcwd(), os.environ.get('PYTHONPATH')) if p))
  images = len(manifest['files'])
  print(f'[{time.strftime("%H:%M:%S")}] round {round_no} {variant}: {images:,} images ...', flush=True)
  sampler = GpuSampler().start()
  m = run_measured(command(variant, os.path.join(data, '*.jpg'), bundle, output, args), output_dir=output, env=env,
                   log_path=os.path.join(args.out, 'logs', f'{variant}-{round_no}.log'), timeout_s=args.timeout_s)
  gpu = sampler.stop()
  predicted = set(read_predictions(output)) if m.returncode == 0 else set()
  ok = m.returncode == 0 and predicted >= set(manifest['files'])
  result = {'variant': variant, 'round': round_no, 'ok': ok, 'returncode': m.returncode, 'images': images,
            'images_predicted': len(predicted & set(manifest['files'])), 'wall_s': round(m.wall_s, 3),
            'images_per_s': round(images / m.wall_s, 1), 'peak_rss_mb': round(m.peak_rss_mb, 1), **gpu}
  print(json.dumps(result), flush=True)
  if not ok:
    result['log_tail'] = m.log[-2000:]
    print(f'{variant} failed (exit {m.returncode}); log tail:\n{m.log[-1500:]}', file=sys.stderr, flush=True)
  shutil.rmtree(output, ignore_errors=True)
  return result


def summarize(runs: list[dict], variants: list[str]) -> list[dict]:
  base = {r['round']: r['images_per_s'] for r in runs if r['variant'] == 'raw-gpu' and r['ok']}
  rows = []
  for variant in variants:
    good = [r for r in runs if r['variant'] == variant and r['ok']]
    ratios = [r['images_per_s'] / base[r['round']] for r in good if r['round'] in base]
    rows.append({'variant': variant, 'runs': sum(r['variant'] == variant for r in runs), 'ok_runs': len(good),
                 'ratio_to_raw_gpu': round(median(ratios), 3) if ratios else None,
                 **{k: median(r.get(k) for r in good) for k in ('images_per_s', 'wall_s', 'peak_rss_mb',
                                                                 'gpu_util_mean', 'gpu_util_max', 'gpu_mem_peak_mb')}})
  return rows


def markdown(summary: dict) -> str:
  m = summary['machine']
  counts = ', '.join(f'{n:,} at {s}×{s}' for s, n in summary['images'].items())
  lines = [f'{counts} JPEGs, ResNet-50 (seeded random weights, fp32, torch.export) on {m.get("gpu") or "no GPU"} '
           f'(`{summary["device"]}`), {m["cores"]} × {m["cpu"]}; PyTorch {m.get("torch")}, Beam {m.get("apache_beam")}, '
           f'{summary["repeats"]} round(s); raw-gpu: {summary["workers"]} DataLoader workers, batches of '
           f'{summary["batch"]}.', '',
           '| variant | images/s | × raw-gpu | wall s | peak RSS MB | GPU util mean % | GPU util max % '
           '| GPU mem peak MB | runs ok |', '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |']
  for row in summary['variants']:
    lines.append(f'| {row["variant"]} | {fmt(row["images_per_s"], ",.1f")} | {fmt(row["ratio_to_raw_gpu"], ".2f")} '
                 f'| {fmt(row["wall_s"], ".1f")} | {fmt(row["peak_rss_mb"], ",.0f")} '
                 f'| {fmt(row["gpu_util_mean"], ".0f")} | {fmt(row["gpu_util_max"], ".0f")} '
                 f'| {fmt(row["gpu_mem_peak_mb"], ",.0f")} | {row["ok_runs"]}/{row["runs"]} |')
  return '\n'.join(lines) + '\n'


def write(summary: dict, out: str) -> None:
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'results.json'), 'w', encoding='utf-8') as f:
    json.dump(summary, f, indent=1)
  with open(os.path.join(out, 'results.md'), 'w', encoding='utf-8') as f:
    f.write(markdown(summary))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--small', type=int, default=20_000, help='224×224 JPEGs.')
  parser.add_argument('--large', type=int, default=400, help='1024×1024 JPEGs.')
  parser.add_argument('--repeats', type=int, default=2, help='Rounds of every variant; medians are reported.')
  parser.add_argument('--variants', default=','.join(VARIANTS), help=f'Comma-separated subset of {VARIANTS}.')
  parser.add_argument('--device', default='cuda', choices=('cuda', 'cpu'), help='cpu tries the script anywhere.')
  parser.add_argument('--workers', type=int, default=os.cpu_count(), help='raw-gpu: DataLoader workers.')
  parser.add_argument('--batch', type=int, default=64, help='raw-gpu: images per model call.')
  parser.add_argument('--ours_flags', default='', help='Extra pipeline flags for ours-gpu.')
  parser.add_argument('--out', default='build/bench/images-gpu', help='results.md, results.json and logs go here.')
  parser.add_argument('--work', default=os.path.join(tempfile.gettempdir(), 'images-gpu-bench'),
                      help='Images, the bundle and outputs (kept out of OUT).')
  parser.add_argument('--timeout_s', type=float, default=300, help='Most seconds one run may take.')
  parser.add_argument('--check_imports', action='store_true', help='Only check the imports.')
  args = parser.parse_args(argv)
  if args.check_imports:
    return check_imports()
  from benchmarks.gpu import machine
  from testing import image_sets, resnet
  args.ours_flags = args.ours_flags.split()
  variants = [v.strip() for v in args.variants.split(',') if v.strip()]
  if set(variants) - set(VARIANTS):
    parser.error(f'unknown variants {sorted(set(variants) - set(VARIANTS))}; choose from {VARIANTS}')
  data = os.path.join(args.work, f'jpegs-{args.small}x224-{args.large}x1024')
  manifest = image_sets.make_jpegs(data, {224: args.small, 1024: args.large})
  bundle = resnet.make_bundle(os.path.join(args.work, 'resnet50'), 50)
  summary = {'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
             'images': manifest['counts'], 'repeats': args.repeats, 'device': args.device, 'workers': args.workers,
             'batch': args.batch, 'ours_flags': args.ours_flags, 'machine': machine(args.device), 'runs': [],
             'variants': []}
  print(json.dumps({'machine': summary['machine']}), flush=True)
  for round_no in range(args.repeats):
    shift = round_no % len(variants)
    for variant in variants[shift:] + variants[:shift]:
      summary['runs'].append(run_once(variant, round_no, args, data, manifest, bundle))
      summary['variants'] = summarize(summary['runs'], variants)
      write(summary, args.out)
  print(markdown(summary), flush=True)
  return 0 if summary['runs'] and all(r['ok'] for r in summary['runs']) else 1


if __name__ == '__main__':
  sys.exit(main())
