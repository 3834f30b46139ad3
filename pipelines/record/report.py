"""The run report: one self-contained HTML page, and its charts as PNG files, beside the output.

Drawn on the launcher after the job, from the run summary (Beam metrics), the
run's profile (`transforms.rows.data_profile`, written by the job as profile.json) and
the training statistics stored in the model bundle. The page embeds its
charts, so it can be mailed or opened from a bucket as one file.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import io
from typing import Any, Optional, Sequence

from apache_beam.io.filesystems import FileSystems

from pipelines.record.summary import RunSummary

REPORT_FILE = 'report.html'
# A feature is flagged when this run departs from training by more than these.
MISSING_RATE_DRIFT = 0.05  # absolute change in the share of missing values
OOV_RATE_DRIFT = 0.02  # absolute change in the share of unseen categories
MEAN_DRIFT_STDS = 0.5  # change in the mean, in training standard deviations


def figure(width: float = 7.0, height: float = 3.2):
  import matplotlib
  matplotlib.use('Agg')  # no display on workers or in CI
  from matplotlib import pyplot as plt
  fig, ax = plt.subplots(figsize=(width, height), dpi=100)
  return fig, ax


def png(fig) -> bytes:
  from matplotlib import pyplot as plt
  buffer = io.BytesIO()
  fig.tight_layout()
  fig.savefig(buffer, format='png')
  plt.close(fig)
  return buffer.getvalue()


def outcome_chart(summary: RunSummary) -> bytes:
  labels = ['predicted'] + [f'rejected: {code}' for code in sorted(summary.rejected_by_reason)]
  values = [summary.rows_predicted] + [summary.rejected_by_reason[c] for c in sorted(summary.rejected_by_reason)]
  colors = ['#4f81bd'] + ['#c0504d'] * (len(labels) - 1)
  if summary.rows_skipped:
    labels, values, colors = labels + ['skipped: scored before'], values + [summary.rows_skipped], colors + ['#999']
  fig, ax = figure(height=1.0 + 0.4 * len(labels))
  bars = ax.barh(labels[::-1], values[::-1], color=colors[::-1])
  ax.bar_label(bars, labels=[f'{v:,}' for v in values[::-1]], padding=3)
  ax.set_xlabel('rows')
  ax.set_title(f'{summary.rows_read:,} rows read')
  ax.margins(x=0.15)
  return png(fig)


def throughput_chart(per_second: list[list[float]]) -> bytes:
  fig, ax = figure()
  if per_second:
    start = per_second[0][0]
    ax.bar([s - start for s, _ in per_second], [n for _, n in per_second], width=1.0, align='edge', color='#4f81bd')
  ax.set_xlabel('seconds since the first prediction')
  ax.set_ylabel('rows predicted per second')
  ax.set_title('Throughput over time')
  return png(fig)


def predictions_chart(predictions: dict[str, list]) -> bytes:
  fig, ax = figure()
  if predictions['classes']:
    names = [str(c) for c, _ in predictions['classes']]
    bars = ax.bar(names, [n for _, n in predictions['classes']], color='#4f81bd')
    ax.bar_label(bars, labels=[f'{n:,}' for _, n in predictions['classes']])
    ax.set_ylabel('rows')
    ax.set_title('Predicted classes')
  else:
    values = [v for v, _ in predictions['scores']]
    ax.hist(values, weights=[n for _, n in predictions['scores']], bins=min(40, max(1, len(values))),
            color='#4f81bd')
    ax.set_xlabel('score')
    ax.set_ylabel('rows')
    ax.set_title('Distribution of scores')
  return png(fig)


def confidence_chart(confidence: list[list[float]]) -> bytes:
  fig, ax = figure()
  ax.hist([v for v, _ in confidence], weights=[n for _, n in confidence], bins=20, range=(0, 1), color='#4f81bd')
  ax.set_xlabel('probability of the predicted class')
  ax.set_ylabel('rows')
  ax.set_title('Model confidence')
  return png(fig)


def rate_chart(title: str, names: list[str], run: list[Optional[float]], training: list[Optional[float]]) -> bytes:
  """Side-by-side bars of a per-feature rate, this run against training."""
  import numpy as np
  fig, ax = figure(height=1.2 + 0.45 * len(names))
  y = np.arange(len(names))
  as_percent = lambda values: [100 * (v or 0.0) for v in values]
  ax.barh(y + 0.2, as_percent(run), height=0.4, label='this run', color='#4f81bd')
  ax.barh(y - 0.2, as_percent(training), height=0.4, label='training', color='#9bbb59')
  ax.set_xlim(0, max([1.0] + as_percent(run) + as_percent(training)) * 1.1)
  ax.set_yticks(y, names)
  ax.invert_yaxis()
  ax.set_xlabel('% of rows')
  ax.set_title(title)
  ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1.0))
  return png(fig)


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


def embed(name: str, png: bytes, alt: str) -> str:
  """An <img> holding a chart, so the page stays one file."""
  return (f'<img id="chart-{name}" alt="{html.escape(alt)}" '
          f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">')


@dataclasses.dataclass(frozen=True)
class Section:
  """A part of the page a feature adds: HTML with `{chart:NAME}` where each chart goes."""
  html: str
  charts: dict[str, bytes]
  alts: dict[str, str] = dataclasses.field(default_factory=dict)

  def render(self, charts: dict[str, bytes]) -> str:
    text = self.html
    for name in self.charts:
      text = text.replace(f'{{chart:{name}}}', embed(name, charts[name], self.alts.get(name, name)))
    return text


def _write(path: str, data: bytes) -> None:
  with FileSystems.create(path, mime_type='application/octet-stream') as f:
    f.write(data)


def write_report(out_dir: str, summary: RunSummary, profile: dict[str, Any], *,
                 training_statistics: Optional[dict[str, Any]], model: dict[str, Any],
                 sections: Sequence[Section] = ()) -> str:
  """Writes report.html and report-*.png under `out_dir`; returns the HTML path.

  Args:
    out_dir: the run's output directory, local or gs://.
    summary: the run's counts.
    profile: what `transforms.rows.data_profile.ProfileRun` produced for this run.
    training_statistics: the bundle's training profile; None for older bundles.
    model: the bundle's metadata (name, version, created, training metrics).
    sections: more parts of the page (the gate, a challenger's comparison), each with its charts.
  """
  drift = drift_rows(profile['input'], training_statistics)
  charts = {'outcome': outcome_chart(summary),
            'throughput': throughput_chart(profile['predictions']['per_second']),
            'predictions': predictions_chart(profile['predictions'])}
  if profile['predictions']['confidence']:
    charts['confidence'] = confidence_chart(profile['predictions']['confidence'])
  names = [r['feature'] for r in drift]
  charts['missing'] = rate_chart('Missing values by feature', names, [r['missing_rate'] for r in drift],
                                 [r['training_missing_rate'] for r in drift])
  strings = [r for r in drift if r['dtype'] == 'string']
  if strings:
    charts['oov'] = rate_chart('Unseen (out-of-vocabulary) categories', [r['feature'] for r in strings],
                               [r['oov_rate'] for r in strings], [r['training_oov_rate'] for r in strings])
  for section in sections:
    charts.update(section.charts)
  for name, png in charts.items():
    _write(FileSystems.join(out_dir, f'report-{name}.png'), png)
  page = _html(summary, profile, drift, charts, training_statistics, model)
  page = page.replace('</body>', ''.join(s.render(charts) for s in sections) + '</body>')
  path = FileSystems.join(out_dir, REPORT_FILE)
  _write(path, page.encode('utf-8'))
  return path


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border-bottom:1px solid #ddd;padding:.25em .8em;text-align:right}
td:first-child,th:first-child{text-align:left}.flag{color:#c0504d;font-weight:600}img{max-width:100%}
.ok{color:#4f8a2d}table.info td{text-align:left}"""


def _html(summary: RunSummary, profile: dict[str, Any], drift: list[dict[str, Any]], charts: dict[str, bytes],
          training: Optional[dict[str, Any]], model: dict[str, Any]) -> str:
  e = html.escape
  img = lambda name, alt: (f'<img id="chart-{name}" alt="{e(alt)}" '
                           f'src="data:image/png;base64,{base64.b64encode(charts[name]).decode("ascii")}">')
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
  metrics = ', '.join(f'{e(str(k))} {e(str(v))}' for k, v in (model.get('training_metrics') or {}).items())
  made = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
  return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Run {e(summary.run_id)}</title><style>{_STYLE}</style></head>
<body>
<h1>Run {e(summary.run_id)}</h1>
<p>{e(summary.state)} on {e(summary.runner)}, started {e(summary.started_at)}, {summary.wall_seconds:.1f}s,
{summary.rows_per_second:,.0f} rows/s. Report written {made}.</p>
<table class="info">
<tr><td>model</td><td>{e(str(model.get('name')))} v{e(str(model.get('version')))}
 (created {e(str(model.get('created', '?')))}; {metrics or 'no training metrics'})</td></tr>
<tr><td>input</td><td>{e(summary.input)} ({summary.files_read:,} files)</td></tr>
<tr><td>output</td><td>{e(summary.output)}</td></tr>
<tr><td>dead letters</td><td>{e(summary.dead_letter)}</td></tr>
</table>
<h2>Counts</h2>
<table><tr><td>rows read</td><td>{summary.rows_read:,}</td></tr>
<tr><td>rows predicted</td><td>{summary.rows_predicted:,}</td></tr>
<tr><td>rows rejected</td><td>{summary.rows_rejected:,}</td></tr>{reasons}
{skipped}<tr><td>read = predicted + rejected{' + skipped' if summary.rows_skipped else ''}</td><td>{check}</td></tr></table>
{img('outcome', 'rows predicted and rejected by reason')}
<h2>Throughput</h2>
{img('throughput', 'rows predicted per second over the run')}
<h2>Predictions</h2>
{img('predictions', 'distribution of predictions')}
{img('confidence', 'model confidence') if 'confidence' in charts else ''}
<h2>Input compared with training</h2>
<p>{verdict}</p>
<table><tr><th>feature</th><th>missing</th><th>missing in training</th><th>unseen share / mean</th>
<th>in training</th><th>drift</th></tr>{feature_rows}</table>
<p>Rows profiled: {profile['input']['rows']:,} in this run (before validation), {(training or {}).get('rows', 0):,} in
training. Flagged when missing values move more than {100 * MISSING_RATE_DRIFT:.0f} points, unseen categories more than
{100 * OOV_RATE_DRIFT:.0f} points, or a mean more than {MEAN_DRIFT_STDS} training standard deviations.</p>
{img('missing', 'missing values by feature, this run and training')}
{img('oov', 'unseen categories by feature, this run and training') if 'oov' in charts else ''}
<h2>Categories</h2>
{categories or '<p>No categorical features.</p>'}
</body></html>
"""
