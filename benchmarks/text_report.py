"""The text benchmark's results: medians per set and variant, the targets' ratios, JSON and Markdown."""

from __future__ import annotations

import json
import os
from typing import Optional

from benchmarks.report import fmt, machine, median

BASELINE = 'plain-loop'
# The text issue's targets, ours over the plain loop (rows/s within a round): no loss where every text has
# about the same length, a gain where lengths vary widely and a fixed batch pads to its longest.
TARGETS = (('uniform', 0.9), ('mixed', 1.2))
PACKAGES = (('apache_beam', 'apache-beam'), ('torch', 'torch'), ('tokenizers', 'tokenizers'),
            ('transformers', 'transformers'), ('numpy', 'numpy'))
KEYS = ('rows_per_s', 'tokens_per_s', 'wall_s', 'peak_rss_mb', 'padding_share', 'max_abs_diff')


def round_ratio(runs: list[dict], text_set: str, numerator: str, denominator: str) -> Optional[float]:
  """The median over rounds of one variant's rows/s over another's, same set, same round."""
  rates: dict[int, dict[str, float]] = {}
  for r in runs:
    if r['ok'] and r['set'] == text_set:
      rates.setdefault(r['round'], {})[r['variant']] = r['rows_per_s']
  ratios = [rate[numerator] / rate[denominator] for rate in rates.values() if numerator in rate and denominator in rate]
  return round(median(ratios), 3) if ratios else None


def summarize(summary: dict) -> dict:
  """A row per (set, variant) of medians over its good runs, and each target as measured."""
  runs, rows, targets = summary['runs'], [], []
  for text_set in summary['sets']:
    for variant in summary['variants']:
      if variant in summary['skipped']:
        rows.append({'set': text_set, 'variant': variant, 'skipped': summary['skipped'][variant]})
        continue
      mine = [r for r in runs if r['set'] == text_set and r['variant'] == variant]
      good = [r for r in mine if r['ok']]
      row = {'set': text_set, 'variant': variant, 'runs': len(mine), 'ok_runs': len(good),
             'ratio_to_plain_loop': round_ratio(runs, text_set, variant, BASELINE)}
      row.update({k: median(r.get(k) for r in good) for k in KEYS})
      if len(good) < len(mine):
        row['error'] = next(r['error'] for r in mine if not r['ok'])
      rows.append(row)
  for text_set, goal in TARGETS:
    if text_set in summary['sets']:
      ratio = round_ratio(runs, text_set, 'ours', BASELINE)
      targets.append({'target': f'ours / plain-loop, {text_set} lengths', 'goal': goal, 'measured': ratio,
                      'met': None if ratio is None else ratio >= goal})
  return {**summary, 'table': rows, 'targets': targets}


def markdown(result: dict) -> str:
  m = result['machine']
  lines = [f'{result["rows"]:,} texts a set (mixed: {result["words"]["mixed"]}; uniform: '
           f'{result["words"]["uniform"]}), {result["repeats"]} round(s), {m["cores"]} × {m["cpu"]}, no GPU; '
           f'PyTorch {m.get("torch")}, tokenizers {m.get("tokenizers")}, Beam {m.get("apache_beam")}, '
           f'Python {m["python"]}; load average {m["load_average"]} at the end. A BERT encoder '
           f'({result["model"]}) of seeded random weights, fp32, max_tokens {result["max_tokens"]}, mean pooling, '
           'normalised. Padding share: tokens the model was given over real tokens.', '',
           '| set | variant | rows/s | tokens/s | × plain-loop | wall s | peak RSS MB | padding share '
           '| max abs diff to plain-loop |',
           '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for row in result['table']:
    if 'skipped' in row:
      lines.append(f'| {row["set"]} | {row["variant"]} | not run: {row["skipped"]} | | | | | | |')
      continue
    state = '' if row['ok_runs'] == row['runs'] else f' ({row["runs"] - row["ok_runs"]} of {row["runs"]} failed)'
    lines.append(f'| {row["set"]} | {row["variant"]}{state} | {fmt(row["rows_per_s"], ",.1f")} '
                 f'| {fmt(row["tokens_per_s"], ",.0f")} | {fmt(row["ratio_to_plain_loop"], ".2f")} '
                 f'| {fmt(row["wall_s"], ".1f")} | {fmt(row["peak_rss_mb"], ",.0f")} '
                 f'| {fmt(row["padding_share"], ".2f")} | {fmt(row["max_abs_diff"], ".1e")} |')
  failures = [f'{row["set"]} {row["variant"]}: {row["error"]}' for row in result['table'] if row.get('error')]
  if failures:
    lines += [''] + [f'- failed: {f}' for f in failures]
  if result['targets']:
    verdict = {True: 'met', False: 'missed', None: 'not measured'}
    lines += ['', 'Targets:', '', '| target | goal | measured | |', '| --- | --- | --- | --- |']
    for t in result['targets']:
      measured = '' if t['measured'] is None else f'{t["measured"]:.2f}×'
      lines.append(f'| {t["target"]} | ≥ {t["goal"]}× | {measured} | {verdict[t["met"]]} |')
  return '\n'.join(lines) + '\n'


def write(summary: dict, directory: str) -> tuple[list[str], str]:
  """results.json (every run, the table, the targets) and results.md in `directory`; returns their paths
  and the Markdown."""
  result = summarize({**summary, 'machine': machine(PACKAGES)})
  os.makedirs(directory, exist_ok=True)
  paths, table = [], markdown(result)
  for name, text in (('results.json', json.dumps(result, indent=1)), ('results.md', table)):
    with open(os.path.join(directory, name), 'w', encoding='utf-8') as f:
      f.write(text)
    paths.append(os.path.join(directory, name))
  return paths, table
