"""The run report: drift against the bundle's training statistics, and a page that renders in a browser."""

import html.parser
import json
import os
import re
import shutil
import struct
import subprocess
import sys

import pytest

from models.bundle import ModelBundle
from models.examples.penguins import train
from pipelines import run as run_job
from pipelines.record.report import drift_rows, write_report
from pipelines.record.summary import RunSummary

CHARTS = ('outcome', 'throughput', 'predictions', 'confidence', 'missing', 'oov')


def _browser():
  return shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')


class _Charts(html.parser.HTMLParser):

  def __init__(self):
    super().__init__()
    self.charts = {}

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == 'svg' and attrs.get('id', '').startswith('chart-'):
      self.charts[attrs['id']] = attrs.get('data-drawn') or f'{attrs["width"]}x{attrs["height"]}'


class _Images(html.parser.HTMLParser):

  def __init__(self):
    super().__init__()
    self.images = {}

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == 'img':
      self.images[attrs.get('id')] = attrs.get('data-natural')


def _png_size(path) -> tuple[int, int]:
  with open(path, 'rb') as f:
    header = f.read(24)
  assert header[:8] == b'\x89PNG\r\n\x1a\n', f'{path} is not a PNG'
  return struct.unpack('>II', header[16:24])


def _rendered_images(report: str, tmp_path) -> dict[str, str]:
  """Opens a page in headless Chromium; returns each image's natural size after load (the estimate's PNG chart)."""
  probe = ("<script>window.addEventListener('load', () => { for (const img of document.images) "
           "img.setAttribute('data-natural', img.naturalWidth + 'x' + img.naturalHeight); });</script>")
  parser = _Images()
  parser.feed(_dump_dom(report, probe, tmp_path))
  return parser.images


def chart_sizes(page: str) -> dict[str, str]:
  """Each inline chart of a report page, by id: its declared size (or, after a browser ran the probe, the size
  it was drawn at and how many shapes it holds)."""
  parser = _Charts()
  parser.feed(page)
  return parser.charts


def _rendered_charts(report: str, tmp_path) -> dict[str, str]:
  """Opens the report in headless Chromium; returns each chart's drawn size and how many shapes it drew."""
  probe = ("<script>window.addEventListener('load', () => { for (const svg of document.querySelectorAll('svg')) {"
           "const box = svg.getBBox(); svg.setAttribute('data-drawn', Math.round(box.width) + 'x' + "
           "Math.round(box.height) + ':' + svg.querySelectorAll('rect,polyline').length); } });</script>")
  return chart_sizes(_dump_dom(report, probe, tmp_path))


def _dump_dom(report: str, probe: str, tmp_path) -> str:
  """The page's DOM after headless Chromium loaded it with `probe` (a script) added."""
  page = tmp_path / 'probe.html'
  with open(report, encoding='utf-8') as f:
    text = f.read()
  page.write_text(text.replace('</body>', probe + '</body>'), encoding='utf-8')
  dom = subprocess.run(
      [_browser(), '--headless', '--no-sandbox', '--disable-gpu', f'--user-data-dir={tmp_path / "profile"}',
       '--virtual-time-budget=10000', '--dump-dom', page.as_uri()],
      capture_output=True, text=True, timeout=120, check=True).stdout
  return dom


def _drifted_copy(tmp_path) -> str:
  """The example data with a third of the islands renamed (unseen) and most sexes blanked."""
  lines = open(train.EXAMPLE_DATA, encoding='utf-8').read().splitlines()
  header, rows = lines[0].split(','), [line.split(',') for line in lines[1:]]
  island, sex = header.index('island'), header.index('sex')
  for i, row in enumerate(rows):
    if i % 3 == 0:
      row[island] = 'Atlantis'
    if i % 4:
      row[sex] = ''
  path = tmp_path / 'drifted.csv'
  path.write_text('\n'.join(','.join(r) for r in [header] + rows) + '\n', encoding='utf-8')
  return str(path)


@pytest.mark.slow
def test_report__renders_in_headless_chromium_and_flags_drift(tmp_path, penguin_bundle, capsys):
  code = run_job.main([f'--input={_drifted_copy(tmp_path)}', f'--model={penguin_bundle.path}',
                       f'--output={tmp_path / "out"}', '--run_id=drift'])
  attempt = json.loads((tmp_path / 'out' / 'drift' / '_run_summary.json').read_text())['attempt']
  out_dir = tmp_path / 'out' / 'drift' / f'_{attempt}'
  printed = capsys.readouterr().out
  assert code == 0
  assert '\r' not in printed, 'no progress line when stdout is not a terminal'
  assert f'report          {out_dir / "report.html"}' in printed
  page = (out_dir / 'report.html').read_text(encoding='utf-8')
  assert set(chart_sizes(page)) == {f'chart-{name}' for name in CHARTS}
  assert [f for f in os.listdir(out_dir) if f.startswith('report')] == ['report.html'], 'one self-contained page'
  assert 'penguin-species v1' in page and 'Run drift' in page
  assert 'island (unseen categories)' in page and 'sex (missing values changed)' in page
  assert 'bill_length_mm (' not in page  # measurements did not drift

  if not _browser():
    pytest.skip('no Chromium on this machine (./launch.sh test installs the Debian package `chromium` as root); '
                'the report was written and checked, but not rendered')
  drawn = _rendered_charts(str(out_dir / 'report.html'), tmp_path)
  assert set(drawn) == {f'chart-{name}' for name in CHARTS}
  for name in CHARTS:
    size, shapes = drawn[f'chart-{name}'].split(':')
    width, height = map(int, size.split('x'))
    assert width > 200 and height > 80 and int(shapes) >= 3, f'chart {name} was not drawn: {drawn[f"chart-{name}"]}'


def _summary(**overrides) -> RunSummary:
  values = dict(run_id='r', model={'name': 'm', 'version': '2', 'path': 'p'}, input='in', output='out',
                dead_letter='out', runner='DirectRunner', state='DONE', started_at='2026-01-01T00:00:00+00:00',
                wall_seconds=2.0, rows_read=10, rows_predicted=9, rows_rejected=1,
                rejected_by_reason={'missing_value': 1}, files_read=1)
  return RunSummary(**{**values, **overrides})


def _profile(mean: float):
  return {'input': {'rows': 10, 'features': {
              'size': {'dtype': 'float', 'missing_rate': 0.1, 'mean': mean, 'std': 1.0}}},
          'predictions': {'classes': [], 'scores': [[1.5, 4], [2.5, 5]], 'confidence': [],
                          'per_second': [[100, 4], [101, 5]]}}


def test_drift_rows__flags_a_mean_that_moved_more_than_half_a_training_std():
  training = {'rows': 100, 'features': {'size': {'dtype': 'float', 'missing_rate': 0.08, 'mean': 10.0, 'std': 2.0}}}
  assert drift_rows(_profile(10.9)['input'], training)[0]['flags'] == []
  assert drift_rows(_profile(11.2)['input'], training)[0]['flags'] == ['mean moved 0.6 training std']


def test_write_report__a_bundle_without_training_statistics_still_gets_a_report(tmp_path):
  path = write_report(str(tmp_path), _summary(), _profile(3.0), training_statistics=None,
                      model={'name': 'm', 'version': '2'})
  page = open(path, encoding='utf-8').read()
  assert 'holds no training statistics' in page
  assert set(chart_sizes(page)) == {'chart-outcome', 'chart-throughput', 'chart-predictions', 'chart-missing'}
  assert os.listdir(tmp_path) == ['report.html']


def test_old_bundles_without_statistics_still_load(tmp_path, penguin_bundle):
  old = tmp_path / 'old'
  shutil.copytree(penguin_bundle.path, old)
  data = json.loads((old / 'metadata.json').read_text())
  del data['training_statistics']
  (old / 'metadata.json').write_text(json.dumps(data))
  assert ModelBundle.load(str(old)).training_statistics is None
  assert penguin_bundle.training_statistics['features']['island']['oov_rate'] == 0.0


def test_write_report__training_metrics_sit_beside_the_run_numbers(tmp_path):
  model = {'name': 'churn', 'version': '3', 'training_metrics': {'auc': 0.822, 'holdout_rows': 5000}}
  page = open(write_report(str(tmp_path), _summary(), _profile(3.0), training_statistics=None, model=model),
              encoding='utf-8').read()
  table = page[page.index('<table class="info" id="model-numbers">'):]
  table = table[:table.index('</table>')]
  rows = re.findall(r'<tr>(.*?)</tr>', table)
  assert re.findall(r'<td>(.*?)</td>', rows[1]) == ['auc', '0.822', 'rows predicted', '9']
  assert re.findall(r'<td>(.*?)</td>', rows[2]) == ['holdout_rows', '5,000', 'rows rejected', '1 (10.0%)']
  page = open(write_report(str(tmp_path), _summary(), _profile(3.0), training_statistics=None,
                           model={'name': 'churn', 'version': '3', 'training_metrics': {}}), encoding='utf-8').read()
  assert 'no training metrics' in page and '--metric NAME=VALUE' in page


def test_write_report__a_passed_gate_opens_the_page_with_each_margin(tmp_path):
  from pipelines.graph import gate
  from pipelines.record.report_sections import report_sections
  verdict = gate.evaluate(gate.parse('rejected_rate<=0.2'), {'rejected_rate': 0.1})
  page = open(write_report(str(tmp_path), _summary(), _profile(3.0), training_statistics=None,
                           model={'name': 'm', 'version': '2'}, sections=report_sections(None, verdict)),
              encoding='utf-8').read()
  first = re.search(r'<body>\s*<h1>[^<]*</h1>\s*<p[^>]*>(.*?)</p>', page, flags=re.S).group(1)
  assert first == ('PASSED the publish gate: rejected_rate is 0.1, within rejected_rate&lt;=0.2 by 0.1. '
                   'The run was published.')
  assert '<title>PASSED: run r</title>' in page


def test_write_report__draws_without_a_plotting_library_in_milliseconds(tmp_path, penguin_bundle):
  """The report step imports no plotting library and draws the example's page (six charts) in well under the
  0.7 s matplotlib took."""
  script = f"""
import json, sys, time
from pipelines.record.report import write_report
from tests.pipelines.record.test_report import _summary
profile = json.load(open({str(tmp_path / 'profile.json')!r}))
bundle = json.load(open({os.path.join(penguin_bundle.path, 'metadata.json')!r}))
start = time.perf_counter()
write_report({str(tmp_path)!r}, _summary(rejected_by_reason={{'missing_value': 1}}), profile,
             training_statistics=bundle['training_statistics'], model=bundle)
print(time.perf_counter() - start, 'matplotlib' in sys.modules)
"""
  profile = {'input': penguin_bundle.training_statistics,
             'predictions': {'classes': [['Adelie', 150], ['Chinstrap', 69], ['Gentoo', 123]], 'scores': [],
                             'confidence': [[v / 100, 3] for v in range(40, 100)], 'per_second': [[100, 342]]}}
  (tmp_path / 'profile.json').write_text(json.dumps(profile))
  out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, check=True,
                       env={**os.environ, 'PYTHONPATH': os.getcwd()}).stdout.split()
  assert out[1] == 'False', 'the report imported matplotlib'
  assert float(out[0]) < 0.2
  assert set(chart_sizes((tmp_path / 'report.html').read_text())) == {f'chart-{name}' for name in CHARTS}


def test_write_report__an_embedding_says_what_it_returns_and_draws_no_class_or_score_chart(tmp_path):
  profile = _profile(3.0)
  profile['predictions'].update(classes=[], scores=[], confidence=[])  # what the profile holds for an embedding
  page = open(write_report(str(tmp_path), _summary(), profile, training_statistics=None,
                           model={'name': 'm', 'version': '2'}, outputs='embedding, 768 dimensions'),
              encoding='utf-8').read()
  assert '<tr><td>outputs</td><td>embedding, 768 dimensions</td></tr>' in page
  assert 'The model returns embedding, 768 dimensions: no class or score distribution to draw.' in page
  assert 'chart-predictions' not in chart_sizes(page) and 'chart-confidence' not in chart_sizes(page)
