"""Start-up: the 344-row example as a user runs it, against a bare load of its model.

    python -m benchmarks.startup --rounds 5

Each variant is its own process, measured from outside (benchmarks/measure.py:
wall time, peak RSS of the process tree), interleaved round after round in a
rotating order:

- `demo-saved_model`: `python -m pipelines.run` on the example CSV with the
  SavedModel bundle, as `./launch.sh demo` runs it;
- `bare-saved_model`: `python -c` that imports TensorFlow and loads that
  SavedModel, nothing else (the floor a TensorFlow run cannot go under);
- `demo-onnx`, `demo-sklearn`: the same rows through the same classifier as an
  ONNX and a scikit-learn bundle (benchmarks/frameworks.py), which import
  neither TensorFlow nor PyTorch; `bare-onnx`, `bare-sklearn` import their
  framework and load their model, as `bare-saved_model` does.

`benchmarks.run` runs these rounds too (`--startup_rounds`) and prints the
targets of issue 27 they meet or miss (`targets`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Optional

from benchmarks.measure import run_measured

EXAMPLE = 'models/examples/penguins/example/penguins.csv'
VARIANTS = ('demo-saved_model', 'bare-saved_model', 'demo-onnx', 'bare-onnx', 'demo-sklearn', 'bare-sklearn')
# The floor of each framework: import it and load the bundle's model, nothing else.
BARE_LOAD = {
    'saved_model': 'import sys, tensorflow as tf; tf.saved_model.load(sys.argv[1] + "/saved_model")',
    'onnx': 'import sys, onnxruntime as ort; ort.InferenceSession(sys.argv[1] + "/model.onnx", '
            'providers=["CPUExecutionProvider"])',
    'sklearn': 'import sys, skops.io; skops.io.load(sys.argv[1] + "/model.skops", trusted=sys.argv[2:])',
}
# Issue 27's bounds: the SavedModel demo against the bare load (ratios within a round), the others absolute.
MAX_WALL_RATIO, MAX_RSS_RATIO = 1.25, 1.2
MAX_WALL_S, MAX_RSS_MB = 2.5, 400.0


def bundles(model: str, work: str) -> dict[str, str]:
  """The SavedModel example bundle, and the same classifier as an ONNX and a scikit-learn bundle (made once)."""
  from benchmarks.frameworks import make_bundle
  return {'saved_model': model, **{fw: make_bundle(fw, os.path.join(work, 'bundles', fw)) for fw in ('onnx', 'sklearn')}}


def command(variant: str, bundle: str, output: str) -> list[str]:
  kind, framework = variant.split('-', 1)
  if kind == 'bare':
    from benchmarks.frameworks import TRUSTED
    return [sys.executable, '-c', BARE_LOAD[framework], bundle, *TRUSTED.get(framework, ())]
  return [sys.executable, '-m', 'pipelines.run', f'--input={EXAMPLE}', f'--model={bundle}', f'--output={output}',
          '--passthrough_columns=species,year']


def run_once(variant: str, bundle: str, work: str, round_no: int) -> dict:
  output = os.path.join(work, 'out', variant)
  shutil.rmtree(output, ignore_errors=True)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  env['PYTHONPATH'] = os.pathsep.join(p for p in (os.getcwd(), env.get('PYTHONPATH')) if p)
  m = run_measured(command(variant, bundle, output), output_dir=output,
                   log_path=os.path.join(work, 'logs', f'{variant}-{round_no}.log'), env=env)
  result = {'variant': variant, 'round': round_no, 'ok': m.returncode == 0, 'returncode': m.returncode,
            'wall_s': round(m.wall_s, 3), 'peak_rss_mb': round(m.peak_rss_mb, 1)}
  print(json.dumps(result), flush=True)
  if m.returncode:
    print(f'{variant} failed (exit {m.returncode}); log tail:\n{m.log[-1500:]}', file=sys.stderr, flush=True)
  shutil.rmtree(output, ignore_errors=True)
  return result


def run_rounds(rounds: int, model: str, work: str) -> list[dict]:
  made = bundles(model, work)
  runs = []
  for round_no in range(rounds):
    shift = round_no % len(VARIANTS)
    for variant in VARIANTS[shift:] + VARIANTS[:shift]:
      runs.append(run_once(variant, made[variant.split('-', 1)[1]], work, round_no))
  return runs


def _median(values: list[float]) -> Optional[float]:
  values = sorted(values)
  if not values:
    return None
  mid = len(values) // 2
  return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def summarize(runs: list[dict]) -> dict:
  """Medians per variant, and the SavedModel demo's wall and RSS over the bare load's, within each round."""
  good = [r for r in runs if r['ok']]
  table = {v: {'runs': sum(r['variant'] == v for r in runs), 'ok_runs': sum(r['variant'] == v for r in good),
               'wall_s': _median([r['wall_s'] for r in good if r['variant'] == v]),
               'peak_rss_mb': _median([r['peak_rss_mb'] for r in good if r['variant'] == v])} for v in VARIANTS}
  by_round: dict[int, dict[str, dict]] = {}
  for r in good:
    by_round.setdefault(r['round'], {})[r['variant']] = r
  pairs = [(rd['demo-saved_model'], rd['bare-saved_model']) for rd in by_round.values()
           if 'demo-saved_model' in rd and 'bare-saved_model' in rd]
  ratios = {key: _median([demo[key] / bare[key] for demo, bare in pairs]) for key in ('wall_s', 'peak_rss_mb')}
  return {'variants': table, 'saved_model_over_bare': ratios, 'rounds': len(by_round), 'runs': runs,
          'load_average': os.getloadavg()}


def targets(summary: dict) -> list[dict]:
  """Issue 27's start-up targets: what each asks, what was measured, whether it was met (None: not measured)."""
  rows = []
  ratio = summary['saved_model_over_bare']
  for key, bound, what in (('wall_s', MAX_WALL_RATIO, 'wall'), ('peak_rss_mb', MAX_RSS_RATIO, 'peak RSS')):
    value = ratio.get(key)
    rows.append({'target': f'344-row demo, SavedModel: {what} over a bare TensorFlow import and load',
                 'goal': f'≤ {bound:.2f}×', 'measured': None if value is None else f'{value:.2f}×',
                 'met': None if value is None else value <= bound})
  for fw in ('onnx', 'sklearn'):
    row = summary['variants'][f'demo-{fw}']
    wall, rss = row['wall_s'], row['peak_rss_mb']
    rows.append({'target': f'344-row demo, {fw} bundle: wall and peak RSS', 'goal': f'≤ {MAX_WALL_S} s, ≤ {MAX_RSS_MB:.0f} MB',
                 'measured': None if wall is None else f'{wall:.2f} s, {rss:.0f} MB',
                 'met': None if wall is None else wall <= MAX_WALL_S and rss <= MAX_RSS_MB})
  return rows


def markdown(summary: dict) -> str:
  load = summary.get('load_average')
  busy = f' (load average {load[0]:.1f} at the end, on {os.cpu_count()} cores)' if load else ''
  lines = [f'344-row example (`{EXAMPLE}`), {summary["rounds"]} interleaved rounds, medians{busy}:', '',
           '| variant | wall s | peak RSS MB |', '| --- | ---: | ---: |']
  for name, row in summary['variants'].items():
    failed = '' if row['ok_runs'] == row['runs'] else f' ({row["runs"] - row["ok_runs"]} runs failed)'
    wall = '–' if row['wall_s'] is None else f'{row["wall_s"]:.2f}'
    rss = '–' if row['peak_rss_mb'] is None else f'{row["peak_rss_mb"]:,.0f}'
    lines.append(f'| {name}{failed} | {wall} | {rss} |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--model', default='build/bundles/penguins', help='The example SavedModel bundle.')
  parser.add_argument('--work', default='build/bench-startup')
  args = parser.parse_args(argv)
  summary = summarize(run_rounds(args.rounds, args.model, args.work))
  print(markdown(summary))
  for t in targets(summary):
    print(f'- {t["target"]}: {t["measured"]} (target {t["goal"]}: {"met" if t["met"] else "missed"})')
  with open(os.path.join(args.work, 'startup.json'), 'w', encoding='utf-8') as f:
    json.dump(summary, f, indent=2)
  return 0 if all(r['ok'] for r in summary['runs']) else 1


if __name__ == '__main__':
  raise SystemExit(main())
