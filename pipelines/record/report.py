"""The run report: one self-contained HTML page beside the output, its charts inline as SVG.

Drawn inside the job's last step, from the run summary, the run's profile
(`transforms.rows.data_profile`, written by the job as profile.json) and the
training statistics stored in the model bundle. Charts are SVG written as text
(`pipelines.record.charts`), so drawing the page costs milliseconds and imports
no plotting library; the page holds them, so it can be mailed or opened from a
bucket as one file.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
from typing import Any, Optional, Sequence

from apache_beam.io.filesystems import FileSystems

from pipelines.record import charts
from pipelines.record.summary import RunSummary

REPORT_FILE = 'report.html'
# A feature is flagged when this run departs from training by more than these.
MISSING_RATE_DRIFT = 0.05  # absolute change in the share of missing values
OOV_RATE_DRIFT = 0.02  # absolute change in the share of unseen categories
MEAN_DRIFT_STDS = 0.5  # change in the mean, in training standard deviations
_BINS = 40  # bars of a histogram of scores


def outcome_chart(summary: RunSummary) -> str:
  codes = sorted(summary.rejected_by_reason)
  labels = ['predicted'] + [f'rejected: {code}' for code in codes]
  values = [summary.rows_predicted] + [summary.rejected_by_reason[c] for c in codes]
  colors = [charts.BLUE] + [charts.RED] * len(codes)
  if summary.rows_skipped:
    labels, values = labels + ['skipped: scored before'], values + [summary.rows_skipped]
    colors = colors + [charts.GREY]
  return charts.hbars(labels, [('rows', values, colors)], title=f'{summary.rows_read:,} rows read', xlabel='rows')


def throughput_chart(per_second: list[list[float]]) -> str:
  """Rows predicted per second, in at most 120 bars (a long run's seconds are averaged in wider bars)."""
  if not per_second:
    return charts.histogram([0.0, 1.0], [('rows', [0], charts.BLUE)], title='Throughput over time',
                            xlabel='seconds since the first prediction', ylabel='rows predicted per second')
  start = per_second[0][0]
  span = int(per_second[-1][0] - start) + 1
  width = -(-span // 120)
  counts = [0.0] * -(-span // width)
  for second, n in per_second:
    counts[int(second - start) // width] += n / width
  return charts.histogram([i * width for i in range(len(counts) + 1)], [('rows per second', counts, charts.BLUE)],
                          title='Throughput over time', xlabel='seconds since the first prediction',
                          ylabel='rows predicted per second')


def binned(values: Sequence[float], counts: Sequence[float], lo: float, hi: float,
           bins: int) -> tuple[list[float], list[float]]:
  """Counted values (`values[i]` seen `counts[i]` times) in `bins` equal bins from lo to hi: (edges, counts)."""
  width = (hi - lo) / bins or 1.0
  out = [0.0] * bins
  for value, n in zip(values, counts):
    out[min(bins - 1, max(0, int((value - lo) / width)))] += n
  return [lo + i * width for i in range(bins + 1)], out


def predictions_chart(predictions: dict[str, list]) -> str:
  if predictions['classes']:
    return charts.columns([str(c) for c, _ in predictions['classes']], [n for _, n in predictions['classes']],
                          title='Predicted classes', ylabel='rows')
  values = [v for v, _ in predictions['scores']]
  lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
  edges, counts = binned(values, [n for _, n in predictions['scores']], lo, hi if hi > lo else lo + 1.0,
                         min(_BINS, max(1, len(values))))
  return charts.histogram(edges, [('rows', counts, charts.BLUE)], title='Distribution of scores', xlabel='score')


def confidence_chart(confidence: list[list[float]]) -> str:
  edges, counts = binned([v for v, _ in confidence], [n for _, n in confidence], 0.0, 1.0, 20)
  return charts.histogram(edges, [('rows', counts, charts.BLUE)], title='Model confidence',
                          xlabel='probability of the predicted class')


def rate_chart(title: str, names: list[str], run: list[Optional[float]], training: list[Optional[float]]) -> str:
  """Side-by-side bars of a per-feature rate, this run against training."""
  as_percent = lambda values: [100 * (v or 0.0) for v in values]
  return charts.hbars(names, [('this run', as_percent(run), charts.BLUE),
                              ('training', as_percent(training), charts.GREEN)],
                      title=title, xlabel='% of rows', percent=True)


def drift_rows(run: dict[str, Any], training: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
  """One row per feature: this run's and training's statistics, and what has drifted."""
  rows = []
  for name, stats in run['features'].items():
    trained = (training or {}).get('features', {}).get(name, {})
    row = {'feature': name, 'dtype': stats['dtype'], 'missing_rate': stats['missing_rate'],
           'training_missing_rate': trained.get('missing_rate'), 'flags': []}
    if _moved(row['missing_rate'], row['training_missing_rate'], MISSING_RATE_DRIFT):
      row['flags'].append('missing values changed')
    if stats['dtype'] == 'string':
      row.update(oov_rate=stats.get('oov_rate'), training_oov_rate=trained.get('oov_rate'))
      if _moved(row['oov_rate'], row['training_oov_rate'], OOV_RATE_DRIFT):
        row['flags'].append('unseen categories')
    else:
      row.update(mean=stats.get('mean'), training_mean=trained.get('mean'), training_std=trained.get('std'))
      if None not in (row['mean'], row['training_mean']) and row['training_std']:
        shift = abs(row['mean'] - row['training_mean']) / row['training_std']
        if shift > MEAN_DRIFT_STDS:
          row['flags'].append(f'mean moved {shift:.1f} training std')
    rows.append(row)
  return rows


def _moved(now: Optional[float], then: Optional[float], tolerance: float) -> bool:
  return now is not None and then is not None and abs(now - then) > tolerance


def _pct(value: Optional[float]) -> str:
  return '–' if value is None else f'{100 * value:.1f}%'


def _num(value: Optional[float]) -> str:
  return '–' if value is None else f'{value:,.3g}'


def embed(name: str, svg: str, alt: str) -> str:
  """A chart inline in the page, named and described for a screen reader, so the page stays one file."""
  return svg.replace('<svg ', f'<svg id="chart-{name}" role="img" aria-label="{html.escape(alt)}" ', 1)


@dataclasses.dataclass(frozen=True)
class Section:
  """A part of the page a feature adds, placed before the counts: HTML with `{chart:NAME}` where each chart goes.

  `lead` opens the page, under its title (a verdict a reader must see first); `state` replaces the run's
  state in the title and the first lines (a run the gate held back is not DONE).
  """
  html: str
  charts: dict[str, str]
  alts: dict[str, str] = dataclasses.field(default_factory=dict)
  lead: str = ''
  state: Optional[str] = None

  def render(self) -> str:
    text = self.html
    for name, svg in self.charts.items():
      text = text.replace(f'{{chart:{name}}}', embed(name, svg, self.alts.get(name, name)))
    return text


def _write(path: str, data: bytes) -> None:
  with FileSystems.create(path, mime_type='text/html') as f:
    f.write(data)


def write_report(out_dir: str, summary: RunSummary, profile: dict[str, Any], *,
                 training_statistics: Optional[dict[str, Any]], model: dict[str, Any],
                 sections: Sequence[Section] = (), outputs: str = '') -> str:
  """Writes report.html under `out_dir`; returns its path.

  Args:
    out_dir: the run's output directory, local or gs://.
    summary: the run's counts.
    profile: what `transforms.rows.data_profile.ProfileRun` produced for this run.
    training_statistics: the bundle's training profile; None for older bundles.
    model: the bundle's metadata (name, version, created, training metrics).
    sections: more parts of the page (the gate, a challenger's comparison), each with its charts.
    outputs: what the model returns, in words (`models.bundle.Outputs.describe`).
  """
  drift = drift_rows(profile['input'], training_statistics)
  drawn = {'outcome': outcome_chart(summary),
           'throughput': throughput_chart(profile['predictions']['per_second'])}
  if profile['predictions']['classes'] or profile['predictions']['scores']:  # an embedding or a ranking has neither
    drawn['predictions'] = predictions_chart(profile['predictions'])
  if profile['predictions']['confidence']:
    drawn['confidence'] = confidence_chart(profile['predictions']['confidence'])
  names = [r['feature'] for r in drift]
  drawn['missing'] = rate_chart('Missing values by feature', names, [r['missing_rate'] for r in drift],
                                [r['training_missing_rate'] for r in drift])
  strings = [r for r in drift if r['dtype'] == 'string']
  if strings:
    drawn['oov'] = rate_chart('Unseen (out-of-vocabulary) categories', [r['feature'] for r in strings],
                              [r['oov_rate'] for r in strings], [r['training_oov_rate'] for r in strings])
  page = _html(summary, profile, drift, drawn, training_statistics, model, sections, outputs)
  path = FileSystems.join(out_dir, REPORT_FILE)
  _write(path, page.encode('utf-8'))
  return path


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border-bottom:1px solid #ddd;padding:.25em .8em;text-align:right}
td:first-child,th:first-child{text-align:left}.flag{color:#c0504d;font-weight:600}svg{max-width:100%;height:auto}
.ok{color:#4f8a2d}table.info td{text-align:left}.verdict{font-size:1.15em;padding:.6em .8em;border-left:.3em solid}
.verdict.flag{background:#fbeeee}.verdict.ok{background:#eef6ea;font-weight:600}.note{color:#666}
#scores{font-size:.85em}"""


def _value(value: Any) -> str:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return str(value)
  return f'{value:,}' if isinstance(value, int) else f'{value:.4g}'


def model_numbers(summary: RunSummary, profile: dict[str, Any], model: dict[str, Any]) -> str:
  """The bundle's training metrics beside this run's own numbers (a scoring run has no labels, so its numbers are
  what it predicted; the training metrics say how good the model was when it was made)."""
  e = html.escape
  trained = [(str(k), _value(v)) for k, v in (model.get('training_metrics') or {}).items()]
  if not trained:
    trained = [('no training metrics', 'the bundle records none (the import\'s --metric NAME=VALUE stores them)')]
  read = summary.rows_read - summary.rows_skipped
  run = [('rows predicted', f'{summary.rows_predicted:,}'),
         ('rows rejected', f'{summary.rows_rejected:,} ({_pct(summary.rows_rejected / read if read else 0.0)})')]
  classes = profile['predictions']['classes']
  total = sum(n for _, n in classes)
  run += [(f'predicted {c}', _pct(n / total)) for c, n in classes if total]
  scores = profile['predictions']['scores']
  if scores and not classes:
    n = sum(c for _, c in scores)
    run.append(('mean score', _value(sum(v * c for v, c in scores) / n)))
  rows = ''.join(
      f'<tr><td>{e(a[0]) if a else ""}</td><td>{e(a[1]) if a else ""}</td><td>{e(b[0]) if b else ""}</td>'
      f'<td>{e(b[1]) if b else ""}</td></tr>'
      for a, b in (((trained[i] if i < len(trained) else None), (run[i] if i < len(run) else None))
                   for i in range(max(len(trained), len(run)))))
  return (f'<table class="info" id="model-numbers"><tr><th>at training (the bundle\'s metadata)</th><th></th>'
          f'<th>this run</th><th></th></tr>{rows}</table>')


def _html(summary: RunSummary, profile: dict[str, Any], drift: list[dict[str, Any]], drawn: dict[str, str],
          training: Optional[dict[str, Any]], model: dict[str, Any], sections: Sequence[Section],
          outputs: str = '') -> str:
  e = html.escape
  img = lambda name, alt: embed(name, drawn[name], alt)
  state = next((s.state for s in sections if s.state), summary.state)
  check = ('<span class="ok">yes</span>' if summary.reconciled
           else '<span class="flag">NO: some rows are unaccounted for</span>')
  reasons = ''.join(f'<tr><td>&nbsp;&nbsp;rejected: {e(code)}</td><td>{n:,}</td></tr>'
                    for code, n in sorted(summary.rejected_by_reason.items()))
  skipped = (f'<tr><td>rows skipped (scored before by this model version)</td><td>{summary.rows_skipped:,}</td></tr>'
             if summary.rows_skipped else '')
  flagged = [r for r in drift if r['flags']]
  if training is None:
    verdict = 'The model bundle holds no training statistics, so this run cannot be compared with training.'
  elif flagged:
    verdict = (f'<span class="flag">{len(flagged)} feature(s) differ from training</span>: '
               + '; '.join(f'{e(r["feature"])} ({", ".join(r["flags"])})' for r in flagged)
               + '. Check the upstream data, or retrain on recent data.')
  else:
    verdict = '<span class="ok">No feature differs from training beyond the thresholds.</span>'
  feature_rows = ''.join(
      f'<tr><td>{e(r["feature"])}</td><td>{_pct(r["missing_rate"])}</td><td>{_pct(r["training_missing_rate"])}</td>'
      f'<td>{_pct(r.get("oov_rate")) if r["dtype"] == "string" else _num(r.get("mean"))}</td>'
      f'<td>{_pct(r.get("training_oov_rate")) if r["dtype"] == "string" else _num(r.get("training_mean"))}</td>'
      f'<td class="flag">{e(", ".join(r["flags"]))}</td></tr>' for r in drift)
  categories = ''
  for name, stats in profile['input']['features'].items():
    if stats['dtype'] != 'string':
      continue
    trained = ((training or {}).get('features', {}).get(name) or {}).get('frequencies', {})
    tokens = list(dict.fromkeys(list(trained) + list(stats['frequencies'])))
    categories += (f'<h3>{e(name)}</h3><table><tr><th>category</th><th>this run</th><th>training</th></tr>'
                   + ''.join(f'<tr><td>{e(t)}</td><td>{_pct(stats["frequencies"].get(t, 0.0))}</td>'
                             f'<td>{_pct(trained.get(t)) if training else "–"}</td></tr>' for t in tokens)
                   + f'<tr><td><i>unseen in training</i></td><td>{_pct(stats.get("oov_rate"))}</td><td></td></tr>'
                   + '</table>')
  challenger = (f'<tr><td>challenger</td><td>{e(str(summary.challenger.get("name")))} '
                f'v{e(str(summary.challenger.get("version")))} ({e(str(summary.challenger.get("path")))})</td></tr>'
                if summary.challenger else '')
  returns = f'<tr><td>outputs</td><td>{e(outputs)}</td></tr>' if outputs else ''
  if 'predictions' in drawn:
    predicted = img('predictions', 'distribution of predictions')
  else:
    predicted = (f'<p id="no-prediction-chart">The model returns {e(outputs or "no class or score")}: no class or '
                 'score distribution to draw.</p>')
  made = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
  return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(state)}: run {e(summary.run_id)}</title><style>{_STYLE}</style>
</head>
<body>
<h1>Run {e(summary.run_id)}</h1>
{''.join(s.lead for s in sections)}
<p>{e(state)} on {e(summary.runner)}, started {e(summary.started_at)}, {summary.wall_seconds:.1f}s,
{summary.rows_per_second:,.0f} rows/s. Report written {made}.</p>
<table class="info">
<tr><td>{'champion' if summary.challenger else 'model'}</td>
<td>{e(str(model.get('name')))} v{e(str(model.get('version')))}
 (created {e(str(model.get('created', '?')))})</td></tr>
{returns}{challenger}<tr><td>input</td><td>{e(summary.input)} ({summary.files_read:,} files)</td></tr>
<tr><td>output</td><td>{e(summary.output)}</td></tr>
<tr><td>dead letters</td><td>{e(summary.dead_letter)}</td></tr>
</table>
{model_numbers(summary, profile, model)}
{''.join(s.render() for s in sections)}
<h2>Counts</h2>
<table><tr><td>rows read</td><td>{summary.rows_read:,}</td></tr>
<tr><td>rows predicted</td><td>{summary.rows_predicted:,}</td></tr>
<tr><td>rows rejected</td><td>{summary.rows_rejected:,}</td></tr>{reasons}
{skipped}<tr><td>read = predicted + rejected{' + skipped' if summary.rows_skipped else ''}</td><td>{check}</td></tr></table>
{img('outcome', 'rows predicted and rejected by reason')}
<h2>Throughput</h2>
{img('throughput', 'rows predicted per second over the run')}
<h2>Predictions</h2>
{predicted}
{img('confidence', 'model confidence') if 'confidence' in drawn else ''}
<h2>Input compared with training</h2>
<p>{verdict}</p>
<table><tr><th>feature</th><th>missing</th><th>missing in training</th><th>unseen share / mean</th>
<th>in training</th><th>drift</th></tr>{feature_rows}</table>
<p>Rows profiled: {profile['input']['rows']:,} in this run (before validation), {(training or {}).get('rows', 0):,} in
training. Flagged when missing values move more than {100 * MISSING_RATE_DRIFT:.0f} points, unseen categories more than
{100 * OOV_RATE_DRIFT:.0f} points, or a mean more than {MEAN_DRIFT_STDS} training standard deviations.</p>
{img('missing', 'missing values by feature, this run and training')}
{img('oov', 'unseen categories by feature, this run and training') if 'oov' in drawn else ''}
<h2>Categories</h2>
{categories or '<p>No categorical features.</p>'}
</body></html>
"""
