"""Parts of the run report that options add: the publish gate's verdict and the challenger comparison.

Each is a `pipelines.record.report.Section` (HTML plus its charts), placed by
`write_report` before the counts, drawn from `gate.json`'s and `comparison.json`'s
data. The gate's verdict also opens the page: a reviewer reads PASSED or
FAILED, which threshold and by how much, before anything else.
"""

from __future__ import annotations

import html
from typing import Any, Optional

from pipelines.record import charts
from pipelines.record.report import Section


def flip_chart(flips: dict[str, dict[str, int]]) -> str:
  """The class-flip matrix: rows the champion put in a class, by the class the challenger chose."""
  champion = sorted(flips)
  challenger = sorted({b for row in flips.values() for b in row})
  counts = [[flips[a].get(b, 0) for b in challenger] for a in champion]
  return charts.matrix(champion, challenger, counts, title='Class flips (rows)', xlabel='challenger predicts',
                       ylabel='champion predicts')


def quantile_chart(quantiles: list[dict[str, float]]) -> str:
  """Each model's score at each quantile."""
  qs = [100 * q['q'] for q in quantiles]
  return charts.lines(qs, [('champion', [q['champion'] for q in quantiles], charts.BLUE),
                           ('challenger', [q['challenger'] for q in quantiles], charts.RED)],
                      title='Score of the predicted class by quantile', xlabel='quantile (%)', ylabel='score')


def segment_chart(segments: list[dict[str, Any]], classes: bool) -> str:
  """Per segment: agreement (a classifier) or mean score shift (a regressor)."""
  names = [str(s['segment']) for s in segments]
  values = [100 * (s['agreement'] or 0.0) if classes else (s['mean_shift'] or 0.0) for s in segments]
  return charts.hbars(names, [('segment', values, charts.BLUE)], title='By segment', percent=classes,
                      xlabel='agreement (%)' if classes else 'mean score shift (challenger − champion)')


def distribution_chart(stats: dict[str, Any], classes: bool) -> str:
  """One score's distribution under each model, over the same bins."""
  drawn = stats['distribution']
  what = f'probability of {stats["score"]}' if classes else 'score'
  return charts.histogram(drawn['edges'], [('champion', drawn['champion'], charts.BLUE),
                                           ('challenger', drawn['challenger'], charts.RED)],
                          title=f'Distribution of the {what}', xlabel=what)


def challenger_summary(plan, comparison: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
  """The run summary's line about the challenger."""
  if plan.challenger is None or comparison is None:
    return None
  return {'name': plan.challenger.name, 'version': plan.challenger.version, 'path': plan.challenger.path,
          **{k: comparison.get(k) for k in ('agreement', 'psi', 'score_psi', 'top5_overlap', 'score_shift',
                                            'challenger_unscored')}}


def _fmt(value: Optional[float], pattern: str = '{:.4g}') -> str:
  return '–' if value is None else pattern.format(value)


def _named(model: Optional[dict[str, Any]]) -> str:
  return f'{model["name"]} v{model["version"]}' if model else ''


def score_table(scores: list[dict[str, Any]], classes: bool) -> str:
  """Per ranked score: how far it moved, the PSI of its distribution, and the overlap of the top keys."""
  e = html.escape
  shares = [t['share'] for t in scores[0]['top']] if scores else []
  head = ''.join(f'<th>top {100 * s:g}% overlap</th>' for s in shares)
  rows = ''
  for s in scores:
    q = s['shift_quantiles']
    tops = ''.join(f'<td title="{t["shared"]:,} keys in both of {t["champion_keys"]:,} and {t["challenger_keys"]:,}">'
                   f'{_fmt(t.get("overlap"), "{:.1%}")}</td>' for t in s['top'])
    rows += (f'<tr><td>{e(str(s["score"]))}</td><td>{s["champion_mean"]:.4g}</td><td>{s["challenger_mean"]:.4g}</td>'
             f'<td>{s["mean_shift"]:+.4g}</td><td>{s["mean_abs_shift"]:.4g}</td>'
             f'<td>{q["0.05"]:+.3g} / {q["0.5"]:+.3g} / {q["0.95"]:+.3g}</td>'
             f'<td>{_fmt(s["moved_rows"], "{:.1%}")}</td><td>{_fmt(s["psi"])}</td>{tops}</tr>')
  what = 'probability of class' if classes else 'score'
  return (f'<table id="scores"><tr><th>{what}</th><th>champion mean</th><th>challenger mean</th><th>mean shift</th>'
          f'<th>mean |shift|</th><th>shift 5% / 50% / 95%</th><th>rows moved ≥ 0.1</th><th>PSI</th>{head}</tr>'
          f'{rows}</table>')


def comparison_section(comparison: dict[str, Any]) -> Section:
  e = html.escape
  classes = comparison['agreement'] is not None
  champion, challenger = _named(comparison.get('champion')), _named(comparison.get('challenger'))
  drawn, alts = {}, {}
  for i, stats in enumerate(comparison.get('scores', [])):
    drawn[f'scores-{i}'] = distribution_chart(stats, classes)
    alts[f'scores-{i}'] = f'distribution of {stats["score"]} under each model'
  if classes and comparison['flips']:
    drawn['flips'], alts['flips'] = flip_chart(comparison['flips']), 'class-flip matrix'
  if comparison['quantiles']:
    drawn['quantiles'], alts['quantiles'] = quantile_chart(comparison['quantiles']), 'score by quantile'
  segments = comparison['segments']
  if len(segments) > 1 or (segments and segments[0]['segment'] != ''):
    drawn['segments'], alts['segments'] = segment_chart(segments, classes), 'comparison by segment'
  rows = ''.join(
      f'<tr><td>{e(str(s["segment"]))}</td><td>{s["rows"]:,}</td><td>{_fmt(s["agreement"], "{:.2%}")}</td>'
      f'<td>{_fmt(s["champion_mean"])}</td><td>{_fmt(s["challenger_mean"])}</td><td>{_fmt(s["mean_shift"], "{:+.4g}")}'
      '</td></tr>' for s in segments)
  tops = ''.join(f'<tr><td>top {share} of keys by score: the share both models put there (lowest over the scores)'
                 f'</td><td>{_fmt(comparison.get(f"top{share[:-1]}_overlap"), "{:.1%}")}</td></tr>'
                 for share in ('1%', '5%', '10%'))
  body = f"""<h2 id="challenger">Challenger: {e(challenger)} against the champion {e(champion)}</h2>
<table><tr><td>champion</td><td>{e(champion or '–')}</td></tr>
<tr><td>challenger</td><td>{e(challenger or '–')}</td></tr>
<tr><td>rows compared</td><td>{comparison['rows']:,}</td></tr>
<tr><td>scored by both</td><td>{comparison['scored_by_both']:,}</td></tr>
<tr><td>the challenger could not score</td><td>{comparison['challenger_unscored']:,}</td></tr>
<tr><td>agreement (the same predicted class)</td><td>{_fmt(comparison['agreement'], '{:.2%}')}</td></tr>
{tops}
<tr><td>PSI of the scores, over the champion's deciles (largest over the scores)</td>
<td>{_fmt(comparison.get('score_psi'))}</td></tr>
<tr><td>PSI of the {'predicted classes' if classes else 'scores (3 significant digits)'}</td>
<td>{_fmt(comparison['psi'])}</td></tr>
<tr><td>largest shift of the predicted class's score at a quantile</td><td>{_fmt(comparison['score_shift'])}</td></tr>
</table>
<h3>Each {"class's probability" if classes else 'score'}, champion against challenger</h3>
{score_table(comparison.get('scores', []), classes)}
<p class="note">Shift: challenger minus champion, per row. Overlap: of the keys either model ranks in its top
share by that score, those in both, over the larger set (ties at the boundary are kept in). PSI: the challenger's
distribution of the score against the champion's, over the champion's deciles.</p>
{''.join(f'{{chart:{name}}}' for name in drawn if name.startswith('scores-'))}
{'{chart:flips}' if 'flips' in drawn else ''}
{'{chart:quantiles}' if 'quantiles' in drawn else ''}
{'{chart:segments}' if 'segments' in drawn else ''}
<table><tr><th>segment</th><th>rows</th><th>agreement</th><th>champion mean score</th><th>challenger mean score</th>
<th>shift</th></tr>{rows}</table>"""
  return Section(body, drawn, alts)


def _margin(check: dict[str, Any]) -> str:
  if check['held']:
    margin = abs(check['value'] - check['bound'])
    return f'{check["metric"]} is {check["value"]:.4g}, within {check["threshold"]} by {margin:.4g}'
  return check['message']


def gate_section(verdict: dict[str, Any]) -> Section:
  """The gate's table, and the verdict that opens the page: PASSED or FAILED, each threshold and by how much."""
  e = html.escape
  rows = ''.join(
      f'<tr><td>{e(c["threshold"])}</td><td>{_fmt(c["value"])}</td>'
      + ('<td class="ok">held</td>' if c['held'] else f'<td class="flag">{e(c["message"])}</td>') + '</tr>'
      for c in verdict['checks'])
  broken = [c for c in verdict['checks'] if not c['held']]
  if verdict['passed']:
    lead = ('<p class="verdict ok" id="verdict">PASSED the publish gate: '
            + '; '.join(e(_margin(c)) for c in verdict['checks']) + '. The run was published.</p>')
    state = 'PASSED'
  else:
    lead = ('<p class="verdict flag" id="verdict">FAILED the publish gate: '
            + '; '.join(e(_margin(c)) for c in broken)
            + '. Nothing was published; the staged output is kept in this attempt\'s folder.</p>')
    state = 'FAILED'
  return Section(f'<h2 id="gate">Publish gate</h2><table><tr><th>threshold</th><th>measured</th><th>verdict'
                 f'</th></tr>{rows}</table>', {}, lead=lead, state=state)


def report_sections(comparison: Optional[dict[str, Any]], verdict: Optional[dict[str, Any]]) -> list[Section]:
  sections = []
  if verdict is not None:
    sections.append(gate_section(verdict))
  if comparison is not None:
    sections.append(comparison_section(comparison))
  return sections
