"""The image benchmark's results: medians per model and variant, the targets' ratios, JSON and Markdown."""

from __future__ import annotations

import json
import os
from typing import Optional

from benchmarks.report import fmt, machine, median

BASELINE = 'raw-torch'
# The image issue's targets: ours over each variant (images/s, within a round), and decoding a 224×224 JPEG.
TARGETS = (('raw-torch', 0.9), ('ray-data', 1.5), ('beam-textbook', 3.0))
DECODE_TARGET = 500  # images/s per core, 224×224
PACKAGES = (('apache_beam', 'apache-beam'), ('torch', 'torch'), ('simplejpeg', 'simplejpeg'), ('PIL', 'pillow'),
            ('numpy', 'numpy'))


def add_agreement(runs: list[dict]) -> None:
  """Sets each good run's `agrees_with_raw`: the share of images whose top class is raw-torch's in that round
  and model. Same decoder, preprocessing and weights should give (nearly) 1.0."""
  base = {(r['round'], r['model']): r['classes'] for r in runs if r['variant'] == BASELINE and r['ok']}
  for r in runs:
    reference = base.get((r['round'], r['model']))
    if r['ok'] and reference and r.get('classes'):
      same = sum(reference.get(name) == c for name, c in r['classes'].items())
      r['agrees_with_raw'] = round(same / len(r['classes']), 4)


def round_ratio(runs: list[dict], model: str, numerator: str, denominator: str) -> Optional[float]:
  """The median over rounds of one variant's images/s over another's, same model, same round."""
  rates: dict[int, dict[str, float]] = {}
  for r in runs:
    if r['ok'] and r['model'] == model:
      rates.setdefault(r['round'], {})[r['variant']] = r['images_per_s']
  ratios = [rate[numerator] / rate[denominator] for rate in rates.values() if numerator in rate and denominator in rate]
  return round(median(ratios), 3) if ratios else None


def summarize(summary: dict) -> dict:
  """A row per (model, variant) of medians over its good runs, and the targets each model measured."""
  runs, rows, targets = summary['runs'], [], []
  for model in summary['models']:
    for variant in summary['variants']:
      if variant in summary['skipped']:
        rows.append({'model': model, 'variant': variant, 'skipped': summary['skipped'][variant]})
        continue
      mine = [r for r in runs if r['model'] == model and r['variant'] == variant]
      good = [r for r in mine if r['ok']]
      row = {'model': model, 'variant': variant, 'runs': len(mine), 'ok_runs': len(good),
             'ratio_to_raw_torch': round_ratio(runs, model, variant, BASELINE)}
      row.update({k: median(r.get(k) for r in good) for k in ('images_per_s', 'wall_s', 'peak_rss_mb',
                                                              'agrees_with_raw')})
      if len(good) < len(mine):
        row['error'] = next(r['error'] for r in mine if not r['ok'])
      rows.append(row)
    for other, goal in TARGETS:
      ratio = round_ratio(runs, model, 'ours', other)
      targets.append({'target': f'ours / {other}, {model}', 'goal': goal, 'measured': ratio,
                      'met': None if ratio is None else ratio >= goal})
  decode = [d for d in summary.get('decode', ()) if d['size'] == '224x224' and d['decoder'] != 'pillow']
  for d in decode:
    targets.append({'target': f'decode 224×224, {d["decoder"]}, images/s per core', 'goal': DECODE_TARGET,
                    'measured': d['images_per_s_per_core'], 'met': d['images_per_s_per_core'] >= DECODE_TARGET})
  return {**{k: v for k, v in summary.items() if k != 'runs'}, 'table': rows, 'targets': targets,
          'runs': [{k: v for k, v in r.items() if k != 'classes'} for r in runs]}


def markdown(result: dict) -> str:
  m = result['machine']
  counts = ', '.join(f'{n:,} at {s}×{s}' for s, n in result['images'].items())
  lines = [f'{counts} JPEGs ({result["image_bytes"] / 2**20:,.1f} MiB, quality 90), {result["repeats"]} round(s), '
           f'{m["cores"]} × {m["cpu"]}, no GPU; PyTorch {m.get("torch")}, Beam {m.get("apache_beam")}, '
           f'simplejpeg {m.get("simplejpeg")}, Pillow {m.get("PIL")}, Python {m["python"]}; load average '
           f'{m["load_average"]} at the end. ResNets with seeded random weights (throughput, not accuracy), '
           f'fp32, exported with torch.export.', '',
           '| model | variant | images/s | × raw-torch | wall s | peak RSS MB | agrees with raw-torch |',
           '| --- | --- | ---: | ---: | ---: | ---: | ---: |']
  for row in result['table']:
    if 'skipped' in row:
      lines.append(f'| {row["model"]} | {row["variant"]} | not run: {row["skipped"]} | | | | |')
      continue
    state = '' if row['ok_runs'] == row['runs'] else f' ({row["runs"] - row["ok_runs"]} of {row["runs"]} failed)'
    lines.append(f'| {row["model"]} | {row["variant"]}{state} | {fmt(row["images_per_s"], ",.1f")} '
                 f'| {fmt(row["ratio_to_raw_torch"], ".2f")} | {fmt(row["wall_s"], ".1f")} '
                 f'| {fmt(row["peak_rss_mb"], ",.0f")} | {fmt(row["agrees_with_raw"], ".1%")} |')
  failures = [f'{row["model"]} {row["variant"]}: {row["error"]}' for row in result['table'] if row.get('error')]
  if failures:
    lines += [''] + [f'- failed: {f}' for f in failures]
  if result.get('decode'):
    lines += ['', 'Decoding alone (bytes in memory → RGB array, one thread; median of rounds):', '',
              '| decoder | size | images/s per core |', '| --- | --- | ---: |']
    lines += [f'| {d["decoder"]} | {d["size"]} | {d["images_per_s_per_core"]:,.0f} |' for d in result['decode']]
  if result['targets']:
    verdict = {True: 'met', False: 'missed', None: 'not measured'}
    lines += ['', 'Targets:', '', '| target | goal | measured | |', '| --- | --- | --- | --- |']
    for t in result['targets']:
      unit = '×' if t['target'].startswith('ours') else ''
      goal = f'≥ {t["goal"]}{unit}'
      lines.append(f'| {t["target"]} | {goal} | {fmt(t["measured"], ".2f" if unit else ",.0f")}{unit if t["measured"] is not None else ""} '
                   f'| {verdict[t["met"]]} |')
  return '\n'.join(lines) + '\n'


def write(summary: dict, directory: str) -> tuple[list[str], str]:
  """results.json (every run, the table, the targets) and results.md in `directory`; returns their paths
  and the Markdown."""
  result = summarize({**summary, 'machine': machine(PACKAGES)})
  os.makedirs(directory, exist_ok=True)
  paths = []
  table = markdown(result)
  for name, text in (('results.json', json.dumps(result, indent=1)), ('results.md', table)):
    with open(os.path.join(directory, name), 'w', encoding='utf-8') as f:
      f.write(text)
    paths.append(os.path.join(directory, name))
  return paths, table
