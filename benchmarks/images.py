"""The image benchmark: our job on JPEGs against a raw PyTorch loop, Beam's textbook recipe and Ray Data.

    ./launch.sh bench --images [ARGS]               # the same as:
    python -m benchmarks.images                     # a few minutes on 2 cores
    python -m benchmarks.images --small 50000 --large 2000 --repeats 3   # the issue's size

Synthetic JPEGs (testing/image_sets.py: `--small` of 224×224 and `--large` of
1024×1024, made once under WORK) go through ResNet-18 and ResNet-50 with seeded
random weights (testing/resnet.py, exported with `torch.export` as a user would)
in each variant, each run its own process measured from outside
(benchmarks/measure.py: wall time, peak RSS of the process tree):

  raw-torch      a DataLoader with a worker per core, simplejpeg and torchvision's
                 preprocessing, batches of 64, the exported program (benchmarks/images_raw.py)
  beam-textbook  MatchFiles → ReadMatches → per-element decode → PytorchModelHandlerTensor
                 on the DirectRunner (benchmarks/images_textbook.py)
  ray-data       read_binary_files → map_batches(decode) → map_batches(model actor)
                 (benchmarks/images_ray.py, in its own virtualenv)
  ours           python -m pipelines.run --input='DIR/*.jpg' --model=BUNDLE --output=OUT

Variants run interleaved, round after round, in a rotating order; the tables
report medians, and ratios are medians of ratios within one round. Every run's
predictions are checked: one per input image, and the share whose top class
agrees with raw-torch's in the same round. Decoding alone is measured apart
(benchmarks/images_decode.py). Results: WORK/results.json and results.md.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import shutil
import sys
import time
from typing import Optional

from benchmarks import images_report

VARIANTS = ('raw-torch', 'beam-textbook', 'ray-data', 'ours')
MODELS = (18, 50)
RUN_ID = 'bench'
KEY_COLUMNS = ('path', 'uri', 'file', 'key', 'id')  # the first a run's predictions have names each image


def _ray_python(venv: str) -> Optional[str]:
  path = os.path.join(venv, 'bin', 'python')
  return path if os.path.exists(path) else None


def unavailable(variant: str, args) -> Optional[str]:
  """Why a variant cannot run here, or None."""
  if variant == 'ray-data' and not _ray_python(args.ray_venv):
    note = os.path.join(args.ray_venv, 'UNAVAILABLE')
    if os.path.exists(note):
      with open(note, encoding='utf-8') as f:
        return f.read().strip()
    return f'no virtualenv at {args.ray_venv} (./launch.sh bench --images makes it)'
  return None


def command(variant: str, images: str, bundle: str, output: str, args) -> list[str]:
  """The command line of one run of `variant` on the files `images` (a glob)."""
  common = [f'--input={images}', f'--model={bundle}', f'--output={output}']
  if variant == 'raw-torch':
    return [sys.executable, '-m', 'benchmarks.images_raw', *common, f'--workers={args.workers}']
  if variant == 'beam-textbook':
    return [sys.executable, '-m', 'benchmarks.images_textbook', *common, f'--decoder={args.textbook_decoder}']
  if variant == 'ray-data':
    return [_ray_python(args.ray_venv), '-m', 'benchmarks.images_ray', *common]
  if variant == 'ours':
    return [sys.executable, '-m', 'pipelines.run', *common, f'--run_id={RUN_ID}', '--quiet', *args.ours_flags]
  raise ValueError(f'unknown variant {variant!r}')


def read_predictions(output: str) -> dict[str, str]:
  """Each predicted image's file name → its top class, from the Parquet files a run left (dead letters and
  temporary shards excluded)."""
  import pyarrow.parquet as pq
  predicted = {}
  for directory, dirs, files in os.walk(output):
    dirs[:] = [d for d in dirs if not d.startswith(('beam-temp', '.'))]
    for name in files:
      if not name.endswith('.parquet') or 'dead_letter' in name:
        continue
      table = pq.read_table(os.path.join(directory, name))
      key = next((c for c in KEY_COLUMNS if c in table.column_names), None)
      if key is None:
        raise ValueError(f'{os.path.join(directory, name)} has none of the key columns {KEY_COLUMNS}: '
                         f'{table.column_names}')
      classes = table.column('predicted_class').to_pylist()
      predicted.update({os.path.basename(str(k)): c for k, c in zip(table.column(key).to_pylist(), classes)})
  return predicted


def run_once(variant: str, depth: int, round_no: int, args, data: str, manifest: dict, bundle: str) -> dict:
  """One measured run; returns its result row, with `classes` (file → top class) for the agreement check."""
  from benchmarks.measure import last_error, run_measured
  output = os.path.join(args.work, 'out', f'{variant}-resnet{depth}')
  shutil.rmtree(output, ignore_errors=True)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.getcwd(), os.environ.get('PYTHONPATH')) if p))
  name, images = f'{variant}/resnet{depth}', len(manifest['files'])
  print(f'[{time.strftime("%H:%M:%S")}] round {round_no} {name}: {images:,} images ...', flush=True)
  m = run_measured(command(variant, os.path.join(data, '*.jpg'), bundle, output, args), output_dir=output, env=env,
                   log_path=os.path.join(args.work, 'logs', f'{variant}-resnet{depth}-{round_no}.log'),
                   timeout_s=args.timeout_s)
  classes, error = {}, None
  if m.returncode == 0:
    try:
      classes = read_predictions(output)
    except (OSError, ValueError) as e:
      error = str(e)
  missing = sorted(set(manifest['files']) - set(classes))
  ok = m.returncode == 0 and not missing and error is None
  result = {'variant': variant, 'model': f'resnet{depth}', 'round': round_no, 'ok': ok, 'returncode': m.returncode,
            'images': images, 'images_predicted': len(set(classes) & set(manifest['files'])),
            'wall_s': round(m.wall_s, 3), 'images_per_s': round(images / m.wall_s, 2),
            'peak_rss_mb': round(m.peak_rss_mb, 1)}
  print(json.dumps(result), flush=True)
  if not ok:
    result['error'] = error or (f'{len(missing)} images not predicted, e.g. {missing[:3]}' if m.returncode == 0
                                else f'exit {m.returncode}: {last_error(m.log)}')
    print(f'{name} failed: {result["error"]}; log tail:\n{m.log[-1500:]}', file=sys.stderr, flush=True)
  result['classes'] = classes
  shutil.rmtree(output, ignore_errors=True)
  return result


def measure_decoding(data: str, args) -> list[dict]:
  """Decoding alone: simplejpeg, Pillow, and `ours`, the job's own decode (header checks, EXIF, no resize)."""
  from benchmarks import images_decode
  from transforms.images.decode import decode
  from transforms.images.spec import ImageSpec
  spec = ImageSpec(color='RGB')  # resize policy none: the image as decoded
  return images_decode.measure(sorted(glob.glob(os.path.join(data, '*.jpg'))), rounds=args.decode_rounds,
                               ours=lambda data: decode(data, spec))


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--small', type=int, default=96, help='224×224 JPEGs (the issue: 50000).')
  parser.add_argument('--large', type=int, default=4, help='1024×1024 JPEGs (the issue: 2000).')
  parser.add_argument('--models', default=','.join(map(str, MODELS)), help='ResNet depths, comma-separated: 18,50.')
  parser.add_argument('--variants', default=','.join(VARIANTS), help=f'Comma-separated subset of {VARIANTS}.')
  parser.add_argument('--repeats', type=int, default=2, help='Rounds of every variant; medians are reported.')
  parser.add_argument('--workers', type=int, default=os.cpu_count(), help='raw-torch: DataLoader workers.')
  parser.add_argument('--textbook_decoder', default='simplejpeg', choices=('simplejpeg', 'pillow'))
  parser.add_argument('--ours_flags', default='', help='Extra flags for ours, e.g. "--direct_num_workers=2".')
  parser.add_argument('--decode_rounds', type=int, default=3, help='Rounds of the decode-only measurement (0: none).')
  parser.add_argument('--ray_venv', default='build/bench/ray-venv')
  parser.add_argument('--work', default='build/bench/images', help='Images, bundles, logs and results go here.')
  parser.add_argument('--timeout_s', type=float, default=1800, help='Most seconds one run may take.')
  args = parser.parse_args(argv)
  args.ours_flags = args.ours_flags.split()
  args.models = [int(d) for d in args.models.split(',') if d.strip()]
  args.variants = [v.strip() for v in args.variants.split(',') if v.strip()]
  unknown = set(args.variants) - set(VARIANTS)
  if unknown:
    parser.error(f'unknown variants {sorted(unknown)}; choose from {VARIANTS}')
  return args


def main(argv=None) -> int:
  from testing import image_sets, resnet
  args = parse_args(argv)
  started = datetime.datetime.now(datetime.timezone.utc)
  data = os.path.join(args.work, f'jpegs-{args.small}x224-{args.large}x1024')
  print(f'[{time.strftime("%H:%M:%S")}] images and bundles under {args.work} (made once) ...', flush=True)
  manifest = image_sets.make_jpegs(data, {224: args.small, 1024: args.large})
  bundles = {d: resnet.make_bundle(os.path.join(args.work, 'bundles', f'resnet{d}'), d) for d in args.models}
  skipped = {v: why for v in args.variants if (why := unavailable(v, args))}
  summary = {'started': started.isoformat(timespec='seconds'), 'images': manifest['counts'],
             'image_bytes': manifest['bytes'], 'repeats': args.repeats, 'models': [f'resnet{d}' for d in args.models],
             'variants': args.variants, 'skipped': skipped, 'ours_flags': args.ours_flags,
             'textbook_decoder': args.textbook_decoder, 'decode': [], 'runs': []}
  if args.decode_rounds:
    summary['decode'] = measure_decoding(data, args)
    print(json.dumps({'decode': summary['decode']}), flush=True)
  runnable = [(v, d) for d in args.models for v in args.variants if v not in skipped]
  for round_no in range(args.repeats):
    shift = round_no % len(runnable) if runnable else 0
    for variant, depth in runnable[shift:] + runnable[:shift]:
      summary['runs'].append(run_once(variant, depth, round_no, args, data, manifest, bundles[depth]))
    images_report.add_agreement(summary['runs'])
    paths, table = images_report.write(summary, args.work)  # after every round: a run cut short keeps what it did
  if not runnable:
    paths, table = images_report.write(summary, args.work)
  print(table, flush=True)
  print(f'results: {", ".join(paths)}', flush=True)
  return 0 if summary['runs'] and all(r['ok'] for r in summary['runs']) else 1


if __name__ == '__main__':
  sys.exit(main())
