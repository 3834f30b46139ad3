"""Parts of the run report that options add: the publish gate's verdict and the challenger comparison.

Each is a `pipelines.record.report.Section` (HTML plus its charts), appended to the
page by `write_report`, drawn from `gate.json` and `comparison.json`'s data.
"""

from __future__ import annotations

import html
from typing import Any, Optional

from pipelines.record.report import Section, figure, png


def flip_chart(flips: dict[str, dict[str, int]]) -> bytes:
  """The class-flip matrix: rows the champion put in a class, by the class the challenger chose."""
  import numpy as np
  champion = sorted(flips)
  challenger = sorted({b for row in flips.values() for b in row})
  counts = np.array([[flips[a].get(b, 0) for b in challenger] for a in champion], dtype=float)
  fig, ax = figure(width=1.6 + 1.1 * len(challenger), height=1.4 + 0.7 * len(champion))
  shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
  ax.imshow(shares, cmap='Blues', vmin=0, vmax=1, aspect='auto')
  for i in range(len(champion)):
    for j in range(len(challenger)):
      ax.text(j, i, f'{int(counts[i, j]):,}', ha='center', va='center',
              color='white' if shares[i, j] > 0.5 else '#222')
  ax.set_xticks(range(len(challenger)), challenger)
  ax.set_yticks(range(len(champion)), champion)
  ax.set_xlabel('challenger predicts')
  ax.set_ylabel('model predicts')
  ax.set_title('Class flips (rows)')
  return png(fig)


def quantile_chart(quantiles: list[dict[str, float]]) -> bytes:
  """Each model's score at each quantile, and the shift between them."""
  fig, ax = figure()
  qs = [100 * q['q'] for q in quantiles]
  ax.plot(qs, [q['champion'] for q in quantiles], marker='o', label='model', color='#4f81bd')
  ax.plot(qs, [q['challenger'] for q in quantiles], marker='s', label='challenger', color='#c0504d')
  ax.set_xlabel('quantile (%)')
  ax.set_ylabel('score')
  twin = ax.twinx()
  twin.bar(qs, [q['shift'] for q in quantiles], width=3, alpha=0.3, color='#9bbb59', label='shift')
  twin.axhline(0, color='#888', linewidth=0.5)
  twin.set_ylabel('challenger − model')
  ax.set_title('Score by quantile')
  ax.legend(loc='upper left')
  return png(fig)


def segment_chart(segments: list[dict[str, Any]], classes: bool) -> bytes:
  """Per segment: agreement (a classifier) or mean score shift (a regressor)."""
  names = [str(s['segment']) for s in segments]
  values = [100 * (s['agreement'] or 0.0) if classes else (s['mean_shift'] or 0.0) for s in segments]
  fig, ax = figure(height=1.2 + 0.4 * len(names))
  bars = ax.barh(names[::-1], values[::-1], color='#4f81bd')
  ax.bar_label(bars, labels=[f'{v:.1f}%' if classes else f'{v:+.3g}' for v in values[::-1]], padding=3)
  ax.set_xlabel('agreement (%)' if classes else 'mean score shift (challenger − model)')
  ax.set_title('By segment')
  ax.margins(x=0.15)
  return png(fig)


def challenger_summary(plan, comparison: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
  """The run summary's line about the challenger."""
  if plan.challenger is None or comparison is None:
    return None
  return {'name': plan.challenger.name, 'version': plan.challenger.version, 'path': plan.challenger.path,
          **{k: comparison.get(k) for k in ('agreement', 'psi', 'score_shift', 'challenger_unscored')}}


def _fmt(value: Optional[float], pattern: str = '{:.4g}') -> str:
  return '–' if value is None else pattern.format(value)


def comparison_section(comparison: dict[str, Any]) -> Section:
  e = html.escape
  classes = comparison['agreement'] is not None
  charts, alts = {}, {}
  if classes and comparison['flips']:
    charts['flips'], alts['flips'] = flip_chart(comparison['flips']), 'class-flip matrix'
  if comparison['quantiles']:
    charts['quantiles'], alts['quantiles'] = quantile_chart(comparison['quantiles']), 'score shift by quantile'
  segments = comparison['segments']
  if len(segments) > 1 or (segments and segments[0]['segment'] != ''):
    charts['segments'], alts['segments'] = segment_chart(segments, classes), 'comparison by segment'
  rows = ''.join(
      f'<tr><td>{e(str(s["segment"]))}</td><td>{s["rows"]:,}</td><td>{_fmt(s["agreement"], "{:.2%}")}</td>'
      f'<td>{_fmt(s["champion_mean"])}</td><td>{_fmt(s["challenger_mean"])}</td><td>{_fmt(s["mean_shift"], "{:+.4g}")}'
      '</td></tr>' for s in segments)
  body = f"""<h2 id="challenger">Challenger</h2>
<table><tr><td>rows compared</td><td>{comparison['rows']:,}</td></tr>
<tr><td>scored by both</td><td>{comparison['scored_by_both']:,}</td></tr>
<tr><td>the challenger could not score</td><td>{comparison['challenger_unscored']:,}</td></tr>
<tr><td>agreement</td><td>{_fmt(comparison['agreement'], '{:.2%}')}</td></tr>
<tr><td>PSI of the challenger's predictions against the model's</td><td>{_fmt(comparison['psi'])}</td></tr>
<tr><td>largest score shift at a quantile</td><td>{_fmt(comparison['score_shift'])}</td></tr></table>
{'{chart:flips}' if 'flips' in charts else ''}
{'{chart:quantiles}' if 'quantiles' in charts else ''}
{'{chart:segments}' if 'segments' in charts else ''}
<table><tr><th>segment</th><th>rows</th><th>agreement</th><th>model mean score</th><th>challenger mean score</th>
<th>shift</th></tr>{rows}</table>"""
  return Section(body, charts, alts)


def gate_section(verdict: dict[str, Any]) -> Section:
  e = html.escape
  rows = ''.join(
      f'<tr><td>{e(c["threshold"])}</td><td>{_fmt(c["value"])}</td>'
      + ('<td class="ok">held</td>' if c['held'] else f'<td class="flag">{e(c["message"])}</td>') + '</tr>'
      for c in verdict['checks'])
  head = ('<p class="ok">Every threshold held: the run was published.</p>' if verdict['passed'] else
          '<p class="flag">A threshold broke: nothing was published. The staged output is kept in this attempt\'s '
          'folder.</p>')
  return Section(f'<h2 id="gate">Publish gate</h2>{head}<table><tr><th>threshold</th><th>measured</th><th>verdict'
                 f'</th></tr>{rows}</table>', {})


def report_sections(comparison: Optional[dict[str, Any]], verdict: Optional[dict[str, Any]]) -> list[Section]:
  sections = []
  if verdict is not None:
    sections.append(gate_section(verdict))
  if comparison is not None:
    sections.append(comparison_section(comparison))
  return sections
