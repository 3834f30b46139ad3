"""Benchmark results: medians per variant, ratios to `raw`, the memory check, as JSON and Markdown."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import statistics
from typing import Optional

README_START = '<!-- bench:start -->'
README_END = '<!-- bench:end -->'
MEMORY_GROWTH_LIMIT = 0.30


# Module name -> distribution, for the versions a table states.
PACKAGES = (('apache_beam', 'apache-beam'), ('tensorflow', 'tensorflow'), ('pyarrow', 'pyarrow'), ('numpy', 'numpy'))


def machine(packages: tuple[tuple[str, str], ...] = PACKAGES) -> dict:
  """What the numbers were measured on, with the versions of `packages` (module, distribution)."""
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      names = re.findall(r'^model name\s*:\s*(.+)$', f.read(), re.M)
    cpu = names[0] if names else cpu
  except OSError:
    pass
  memory_gb = None
  try:
    with open('/proc/meminfo', encoding='utf-8') as f:
      memory_gb = round(int(re.search(r'MemTotal:\s+(\d+)', f.read()).group(1)) / 2**20, 1)
  except (OSError, AttributeError):
    pass
  versions = {}
  for module, package in packages:
    try:  # metadata, not an import: the orchestrator stays small and quick
      versions[module] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      pass
  return {'cpu': cpu, 'cores': os.cpu_count(), 'memory_gb': memory_gb, 'gpu': None,
          'load_average': round(os.getloadavg()[1], 1),  # over the last 5 minutes: how shared the cores were
          'python': platform.python_version(), 'os': f'{platform.system()} {platform.release()}', **versions}


def median(values) -> Optional[float]:
  values = [v for v in values if v is not None]
  return statistics.median(values) if values else None


def per_variant(runs: list[dict], names: list[str], skipped: dict[str, str], *, baseline: str,
                ratio_key: str, keys: tuple[str, ...]) -> list[dict]:
  """A row per variant: medians of `keys` over its good runs, and `ratio_key`, the median of its
  rate over `baseline`'s taken within each round (a busy machine slows a round's runs alike)."""
  base = {r['round']: r['rows_per_s'] for r in runs if r['variant'] == baseline and r['ok']}
  table = []
  for name in names:
    if name in skipped:
      table.append({'variant': name, 'skipped': skipped[name]})
      continue
    mine = [r for r in runs if r['variant'] == name]
    good = [r for r in mine if r['ok']]
    ratios = [r['rows_per_s'] / base[r['round']] for r in good if r['round'] in base]
    row = {'variant': name, 'rows': mine[0]['rows'] if mine else None, 'runs': len(mine), 'ok_runs': len(good),
           ratio_key: round(median(ratios), 3) if ratios else None}
    row.update({key: median(r[key] for r in good) for key in keys})
    table.append(row)
  return table


def memory_check(runs: list[dict]) -> Optional[dict]:
  """Peak RSS of one variant's good runs at N and 4N rows, and whether it grew by less than the limit."""
  by_rows: dict[int, list[float]] = {}
  for r in runs:
    if r['ok']:
      by_rows.setdefault(r['rows'], []).append(r['peak_rss_mb'])
  if len(by_rows) != 2:
    return None
  small, large = sorted(by_rows)
  growth = median(by_rows[large]) / median(by_rows[small]) - 1
  return {'rows': [small, large], 'peak_rss_mb': [median(by_rows[small]), median(by_rows[large])],
          'growth': round(growth, 3), 'limit': MEMORY_GROWTH_LIMIT, 'passed': growth < MEMORY_GROWTH_LIMIT,
          'runs': runs}


def round_ratio(runs: list[dict], numerator: str, denominator: str) -> Optional[float]:
  """The median over rounds of one variant's rate over another's in the same round."""
  rates: dict[int, dict[str, float]] = {}
  for r in runs:
    if r['ok']:
      rates.setdefault(r['round'], {})[r['variant']] = r['rows_per_s']
  ratios = [rate[numerator] / rate[denominator] for rate in rates.values() if numerator in rate and denominator in rate]
  return round(median(ratios), 3) if ratios else None


# The BigQuery comparisons the notes state: `ours-bq` against each of these.
BIGQUERY_RATIOS = ('ours', 'raw-bq', 'beam-textbook-bq')


def summarize(results: list[dict], memory: list[dict], skipped: dict[str, str], *, rows: int,
              variants: list[str]) -> dict:
  """Medians per variant; each ratio to raw is the median of ratios within one round."""
  table = per_variant(results, variants, skipped, baseline='raw', ratio_key='ratio_to_raw',
                      keys=('rows_per_s', 'wall_s', 'peak_rss_mb', 'first_prediction_s'))
  summary = {'rows': rows, 'machine': machine(), 'variants': table, 'runs': results}
  checks = {name: check for name in dict.fromkeys(r['variant'] for r in memory)
            if (check := memory_check([r for r in memory if r['variant'] == name]))}
  if checks:
    summary['memory_checks'] = checks
  rate = {row['variant']: row.get('rows_per_s') for row in table}
  if rate.get('ours') and rate.get('beam-textbook'):
    summary['ours_over_textbook'] = round(rate['ours'] / rate['beam-textbook'], 1)
  if rate.get('ours') and rate.get('ray-data'):
    summary['ours_over_ray'] = round(rate['ours'] / rate['ray-data'], 2)
  bigquery = {other: ratio for other in BIGQUERY_RATIOS if (ratio := round_ratio(results, 'ours-bq', other))}
  if bigquery:
    summary['ours_bq_over'] = bigquery
  return summary


def fmt(value, spec: str) -> str:
  return '–' if value is None else format(value, spec)


def markdown(summary: dict) -> str:
  m = summary['machine']
  lines = [
      f'{summary["rows"]:,} rows on {m["cores"]} × {m["cpu"]}, {m["memory_gb"]} GB RAM, no GPU; '
      f'Beam {m.get("apache_beam")}, TensorFlow {m.get("tensorflow")}, pyarrow {m.get("pyarrow")}, '
      f'Python {m["python"]}' + (f'; load average {m["load_average"]} at the end' if m.get('load_average') else '')
      + '.', '',
      '| variant | rows | rows/s | × raw | wall s | peak RSS MB | first prediction s |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: |']
  for row in summary['variants']:
    if 'skipped' in row:
      lines.append(f'| {row["variant"]} | not run: {row["skipped"]} | | | | | |')
      continue
    failed = '' if row['ok_runs'] == row['runs'] else f' ({row["runs"] - row["ok_runs"]} runs failed)'
    lines.append(f'| {row["variant"]}{failed} | {fmt(row["rows"], ",")} | {fmt(row["rows_per_s"], ",.0f")} '
                 f'| {fmt(row["ratio_to_raw"], ".2f")} | {fmt(row["wall_s"], ".1f")} '
                 f'| {fmt(row["peak_rss_mb"], ",.0f")} | {fmt(row["first_prediction_s"], ".1f")} |')
  notes = []
  if 'ours_over_textbook' in summary:
    notes.append(f'ours / beam-textbook: {summary["ours_over_textbook"]}×')
  if 'ours_over_ray' in summary:
    notes.append(f'ours / ray-data: {summary["ours_over_ray"]}×')
  for other, ratio in summary.get('ours_bq_over', {}).items():
    notes.append(f'ours-bq / {other}: {ratio:.2f}× (median of ratios within a round)')
  for name, check in summary.get('memory_checks', {}).items():
    verdict = 'passed' if check['passed'] else 'FAILED'
    notes.append(f'memory check ({verdict}): `{name}` peak RSS {check["peak_rss_mb"][0]:,.0f} MB at '
                 f'{check["rows"][0]:,} rows, {check["peak_rss_mb"][1]:,.0f} MB at {check["rows"][1]:,} rows '
                 f'({check["growth"]:+.0%}; limit +{check["limit"]:.0%})')
  if any(row['variant'].endswith('-bq') and 'skipped' not in row for row in summary['variants']):
    notes.append('`-bq` variants: table to table in local emulators (bqemulator over DuckDB, gcp-storage-emulator) '
                 'sharing these cores; their first prediction is the first Parquet file in the emulated Cloud '
                 'Storage (`–`: none, as JSON)')
  if notes:
    lines += [''] + [f'- {n}' for n in notes]
  if 'startup' in summary:
    from benchmarks import startup
    lines += ['', startup.markdown(summary['startup'])]
  if 'estimate' in summary:
    from benchmarks import estimate_error
    lines += ['', estimate_error.markdown(summary['estimate'])]
  lines += targets_markdown(summary)
  return '\n'.join(lines)


# Issue 27's BigQuery targets: ours-bq over another variant, at the rows the target names.
BIGQUERY_TARGETS = (('ours', 200_000, 0.8, 'BigQuery → BigQuery over Parquet → Parquet'),
                    ('raw-bq', 1_000_000, 0.85, 'BigQuery → BigQuery over a raw BigQuery loop'))


def targets(summary: dict) -> list[dict]:
  """Each target of issue 27 this run measured: what it asks, what was measured, whether it was met.

  A BigQuery ratio measured at other rows than its target's is shown, marked as such, and not judged.
  """
  from benchmarks import estimate_error, startup
  rows = []
  for other, at, bound, what in BIGQUERY_TARGETS:
    ratio = summary.get('ours_bq_over', {}).get(other)
    if ratio is None:
      continue
    judged = summary['rows'] == at
    rows.append({'target': f'{what} at {at:,} rows' + ('' if judged else f' (measured at {summary["rows"]:,})'),
                 'goal': f'≥ {bound:.2f}×', 'measured': f'{ratio:.2f}×', 'met': ratio >= bound if judged else None})
  if 'startup' in summary:
    rows += startup.targets(summary['startup'])
  if 'estimate' in summary:
    rows += estimate_error.targets(summary['estimate'])
  return rows


def targets_markdown(summary: dict) -> list[str]:
  found = targets(summary)
  if not found:
    return []
  verdict = {True: 'met', False: 'missed', None: 'not judged'}
  return ['', f'Targets of issue 27 (measured {summary.get("started", "")[:10]}):', '',
          '| target | goal | measured | |', '| --- | --- | --- | --- |'] + [
              f'| {t["target"]} | {t["goal"]} | {t["measured"] or "–"} | {verdict[t["met"]]} |' for t in found]


def write(summary: dict, directory: str) -> list[str]:
  os.makedirs(directory, exist_ok=True)
  paths = []
  for name, text in (('results.json', json.dumps(summary, indent=2)), ('results.md', markdown(summary) + '\n')):
    path = os.path.join(directory, name)
    with open(path, 'w', encoding='utf-8') as f:
      f.write(text)
    paths.append(path)
  return paths


def update_readme(path: str, table: str) -> None:
  """Replaces the text between the bench markers of a Markdown page (docs/performance.md) with `table`."""
  with open(path, encoding='utf-8') as f:
    text = f.read()
  start, end = text.find(README_START), text.find(README_END)
  if start < 0 or end < start:
    raise ValueError(f'{path} has no {README_START} ... {README_END} block to put the table in')
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text[:start + len(README_START)] + '\n' + table + '\n' + text[end:])
