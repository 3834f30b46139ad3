"""Challenger scoring: a second bundle scores the same rows in the same job; the comparison matches
what the two bundles predict when run alone, shows in the report, and feeds the gate."""

import glob
import html
import json
import math
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
import pyarrow.parquet as pq
import pytest

from models.challenger import specs_agree
from models.examples.penguins import train
from pipelines import run as run_job
from testing import frameworks
from transforms.files import publish
from tests.pipelines.record.test_report import _browser, _rendered_charts, chart_sizes

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def challengers(tmp_path_factory):
  """Two real challengers: one barely trained on the same split (same feature spec, so features are
  shared), one trained on another split (its feature statistics differ)."""
  base = tmp_path_factory.mktemp('challengers')
  return {'same_spec': train.train(str(base / 'weak'), version='2', epochs=2, seed=7),
          'other_spec': train.train(str(base / 'other'), version='3', epochs=30, seed=11)}


def _text(page: str) -> str:
  """A page's words, tags removed and spaces collapsed."""
  return html.unescape(' '.join(re.sub(r'<style.*?</style>|<svg.*?</svg>|<[^>]+>', ' ', page, flags=re.S).split()))


def _published(out, run_id) -> tuple[dict, pa.Table]:
  pointer = publish.read_pointer(str(out), run_id)
  files = sorted(glob.glob(f'{pointer["output"]}/predictions-*.parquet'))
  return pointer, pa.concat_tables([pq.read_table(f) for f in files]).sort_by('row_id')


def _alone(tmp_path, bundle, run_id) -> pa.Table:
  out = tmp_path / 'alone'
  assert run_job.main([f'--input={train.EXAMPLE_DATA}', f'--model={bundle.path}', f'--output={out}',
                       f'--run_id={run_id}', '--report=false']) == 0
  return _published(out, run_id)[1]


@pytest.mark.parametrize('which', ['same_spec', 'other_spec'])
def test_challenger__comparison_equals_the_two_models_run_alone(tmp_path, penguin_bundle, challengers, which,
                                                                 capsys):
  challenger = challengers[which]
  assert specs_agree(penguin_bundle.features, challenger.features) == (which == 'same_spec')
  out = tmp_path / 'out'
  assert run_job.main([f'--input={train.EXAMPLE_DATA}', f'--model={penguin_bundle.path}', f'--output={out}',
                       '--run_id=both', f'--challenger={challenger.path}', '--segment_column=island']) == 0
  assert f'challenger      penguin-species v{challenger.version}: agreement' in capsys.readouterr().out
  pointer, both = _published(out, 'both')
  champion, alone = _alone(tmp_path, penguin_bundle, 'champion'), _alone(tmp_path, challenger, 'challenger')
  # Only the champion's predictions are published, exactly as without a challenger.
  assert both.column('row_id').equals(champion.column('row_id'))
  assert both.column('predicted_class').equals(champion.column('predicted_class'))
  assert set(both.column('model_version').to_pylist()) == {'1'}

  comparison = json.loads(open(f'{publish.attempt_folder(str(out), "both", pointer["attempt"])}/comparison.json').read())
  a, b = champion.column('predicted_class').to_numpy(zero_copy_only=False), \
      alone.column('predicted_class').to_numpy(zero_copy_only=False)
  assert comparison['rows'] == comparison['scored_by_both'] == 342
  assert comparison['agreement'] == pytest.approx(float(np.mean(a == b)))
  for x in set(a):
    for y in set(b):
      assert comparison['flips'].get(x, {}).get(y, 0) == int(np.sum((a == x) & (b == y)))
  assert pointer['challenger']['agreement'] == comparison['agreement']
  # Score quantiles: the probability of each model's predicted class, at 3 significant digits.
  median = next(q for q in comparison['quantiles'] if q['q'] == 0.5)
  for model, table in (('champion', champion), ('challenger', alone)):
    assert median[model] == pytest.approx(
        float(np.quantile(table.column('predicted_probability').to_numpy(), 0.5, method='inverted_cdf')), rel=5e-3)
  # Per segment (island): rows and agreement by the input's island of each predicted row.
  islands = pa.csv.read_csv(train.EXAMPLE_DATA).select(['island'])
  segments = {s['segment']: s for s in comparison['segments']}
  row_island = dict(zip([f'{train.EXAMPLE_DATA}:{i + 2}' for i in range(islands.num_rows)],
                        islands.column('island').to_pylist()))
  keys = champion.column('row_id').to_pylist()
  for island, segment in segments.items():
    mask = np.array([row_island[k] == island for k in keys])
    assert segment['rows'] == int(mask.sum())
    assert segment['agreement'] == pytest.approx(float(np.mean(a[mask] == b[mask])))
  assert sum(s['rows'] for s in segments.values()) == 342


def test_challenger__report_shows_the_comparison_and_the_gate_holds_the_run_back(tmp_path, penguin_bundle,
                                                                                 challengers, capsys):
  out = tmp_path / 'out'
  code = run_job.main([f'--input={train.EXAMPLE_DATA}', f'--model={penguin_bundle.path}', f'--output={out}',
                       '--run_id=rollout', f'--challenger={challengers["same_spec"].path}',
                       '--segment_column=island', '--gate=agreement>=0.999,rejected_rate<=0.01'])
  err = capsys.readouterr().err
  [attempt] = publish.attempts(str(out), 'rollout')
  folder = out / 'rollout' / f'_{attempt}'
  page = (folder / 'report.html').read_text()
  body = _text(page[page.index('<body>'):])
  shortfall = 0.999 - json.loads((folder / 'comparison.json').read_text())['agreement']
  # The verdict opens the page: which threshold broke and by how much; a held-back run is never DONE.
  assert body.startswith('Run rollout FAILED the publish gate: agreement is ')
  assert f'breaking agreement>=0.999 by {shortfall:.4g}' in body[:300]
  assert 'DONE' not in page
  assert 'champion penguin-species v1' in body and 'challenger penguin-species v2' in body
  comparison = json.loads((folder / 'comparison.json').read_text())
  assert comparison['agreement'] < 0.999  # two epochs of training cannot match the champion
  assert code == 4 and publish.read_pointer(str(out), 'rollout') is None
  shortfall = 0.999 - comparison['agreement']
  assert f'agreement is {comparison["agreement"]:.4g}, breaking agreement>=0.999 by {shortfall:.4g}' in err
  page = (folder / 'report.html').read_text()
  assert 'id="challenger"' in page and 'id="gate"' in page
  charts = ('flips', 'quantiles', 'segments', 'scores-0', 'scores-1', 'scores-2')
  assert {f'chart-{name}' for name in charts} <= set(chart_sizes(page))
  if not _browser():
    pytest.skip('no Chromium here: the report was written and checked, but not rendered')
  drawn = _rendered_charts(str(folder / 'report.html'), tmp_path)
  for name in charts:
    size, shapes = drawn[f'chart-{name}'].split(':')
    assert int(size.split('x')[0]) > 200 and int(shapes) >= 3, f'chart {name} was not drawn: {drawn[f"chart-{name}"]}'


def test_challenger_with_other_outputs_is_refused_before_the_run(tmp_path, penguin_bundle, capsys):
  other = tmp_path / 'other_classes'
  shutil.copytree(penguin_bundle.path, other)
  (other / 'outputs.json').write_text(json.dumps({'kind': 'classification', 'classes': ['a', 'b', 'c']}))
  assert run_job.main([f'--input={train.EXAMPLE_DATA}', f'--model={penguin_bundle.path}',
                       f'--output={tmp_path / "out"}', f'--challenger={other}']) == 2
  assert 'only models of the same outputs can be compared' in capsys.readouterr().err


def test_challenger__one_shared_copy_of_both_models_across_processes(tmp_path, penguin_bundle, challengers):
  """Two SDK processes share one loaded pair of models (Beam's shared model), as on a Dataflow VM."""
  out = tmp_path / 'out'
  summary = run_job.run([f'--input={train.EXAMPLE_DATA}', f'--model={penguin_bundle.path}', f'--output={out}',
                         '--run_id=shared', f'--challenger={challengers["other_spec"].path}', '--report=false',
                         '--direct_num_workers=2', '--direct_running_mode=multi_processing',
                         '--share_model_across_processes=true'])
  assert summary.rows_predicted == 342 and summary.challenger['agreement'] is not None
  comparison = json.loads(open(f'{publish.attempt_folder(str(out), "shared", summary.attempt)}/comparison.json').read())
  assert comparison['rows'] == comparison['scored_by_both'] == 342


RISK_CLASSES = ['light', 'heavy']


@pytest.fixture(scope='module')
def risk_models(tmp_path_factory):
  """Two real scikit-learn models of one risk (a penguin among the heaviest 30%), imported as bundles as a user does.

  The challenger never sees body mass nor flipper length: it predicts the same share of heavy penguins, but ranks
  the heaviest ones differently. Returns both bundles' paths and each model's probability of each class, by row
  of the example data (NaN where the job rejects the row)."""
  from sklearn.linear_model import LogisticRegression
  base = tmp_path_factory.mktemp('risk')
  spec = train.fit_features()
  data = pa.csv.read_csv(train.EXAMPLE_DATA, convert_options=pa.csv.ConvertOptions(strings_can_be_null=True))
  x = spec.transform(pa.RecordBatch.from_pylist(data.to_pylist()))
  complete = ~np.isnan(x).any(axis=1)
  mass = np.array(data.column('body_mass_g').to_pylist(), dtype=float)
  y = (np.nan_to_num(mass) > np.nanpercentile(mass, 70)).astype(int)
  blind = x.copy()
  blind[:, [spec.output_names.index('body_mass_g'), spec.output_names.index('flipper_length_mm')]] = 0.0
  paths, probabilities = {}, {}
  for role, version, features in (('champion', '1', x), ('challenger', '2', blind)):
    model = frameworks.train_sklearn(LogisticRegression(max_iter=1000), features[complete], y[complete],
                                     str(base / f'{role}.skops'))
    paths[role] = str(base / role)
    assert frameworks.import_bundle(model, spec.to_dict(), {'kind': 'classification', 'classes': RISK_CLASSES},
                                    paths[role], name=f'heavy-{role}', version=version) == 0
    import skops.io
    fitted = skops.io.load(model, trusted=skops.io.get_untrusted_types(file=model))
    p = np.full((len(x), 2), np.nan)
    p[complete] = fitted.predict_proba(x[complete].astype(np.float32)).astype(np.float32)  # as the job reads them
    probabilities[role] = p
  return paths, probabilities, complete


def _reference_psi(expected: np.ndarray, actual: np.ndarray, edges: list[float]) -> float:
  """PSI as numpy computes it: shares of each bin between the edges (an edge opens the bin above it), empty bins
  counted as 1e-4."""
  e, a = (np.maximum(np.bincount(np.searchsorted(edges, v, side='right'), minlength=len(edges) + 1) / len(v), 1e-4)
          for v in (expected, actual))
  return float(np.sum((a - e) * np.log(a / e)))


def test_challenger__reordering_the_riskiest_shows_in_the_top_overlap_though_class_shares_hold(tmp_path, risk_models):
  paths, probabilities, complete = risk_models
  out = tmp_path / 'out'
  code = run_job.main([f'--input={train.EXAMPLE_DATA}', f'--model={paths["champion"]}', f'--output={out}',
                       '--run_id=risk', f'--challenger={paths["challenger"]}', '--gate=top5_overlap>=0.8'])
  [attempt] = publish.attempts(str(out), 'risk')
  folder = out / 'risk' / f'_{attempt}'
  comparison = json.loads((folder / 'comparison.json').read_text())
  champion, challenger = probabilities['champion'][complete], probabilities['challenger'][complete]
  n = int(complete.sum())
  assert comparison['scored_by_both'] == n == 342
  assert comparison['champion'] == {'name': 'heavy-champion', 'version': '1'}
  assert comparison['challenger'] == {'name': 'heavy-challenger', 'version': '2'}
  # The class shares barely move, so the old metrics saw nothing...
  shares = [float(np.mean(p.argmax(axis=1) == 1)) for p in (champion, challenger)]
  assert abs(shares[0] - shares[1]) < 0.02 and comparison['psi'] < 0.01
  # ...but the challenger's top 5% of heavy penguins is mostly another set of penguins.
  scores = {s['score']: s for s in comparison['scores']}
  assert set(scores) == set(RISK_CLASSES)
  heavy = scores['heavy']
  for top in heavy['top']:  # each model's top k keys (ties at the k-th score kept in), as numpy finds them
    k = math.ceil(top['share'] * n)
    kth = [float(np.sort(p[:, 1])[::-1][k - 1]) for p in (champion, challenger)]
    ours, theirs = champion[:, 1] >= kth[0], challenger[:, 1] >= kth[1]
    assert (top['keys'], top['champion_keys'], top['challenger_keys']) == (k, ours.sum(), theirs.sum())
    assert (top['champion_threshold'], top['challenger_threshold']) == pytest.approx(kth, abs=1e-7)
    assert top['shared'] == (ours & theirs).sum(), top
  assert heavy['top'][1]['overlap'] < 0.5 and comparison['top5_overlap'] <= heavy['top'][1]['overlap']
  # Each class's probability shift, and PSI of the scores against numpy over the recorded champion deciles.
  for i, cls in enumerate(RISK_CLASSES):
    shift = challenger[:, i] - champion[:, i]
    assert scores[cls]['mean_shift'] == pytest.approx(float(shift.mean()), abs=1e-6)
    assert scores[cls]['mean_abs_shift'] == pytest.approx(float(np.abs(shift).mean()), rel=1e-5)
    assert scores[cls]['moved_rows'] == pytest.approx(float(np.mean(np.abs(shift) >= 0.1)))
    assert scores[cls]['shift_quantiles']['0.5'] == pytest.approx(
        float(np.quantile(shift, 0.5, method='inverted_cdf')), abs=0.01)
    edges = scores[cls]['psi_edges']
    assert edges == pytest.approx(np.quantile(champion[:, i], np.arange(0.1, 0.91, 0.1), method='inverted_cdf'),
                                  abs=0.01)
    assert scores[cls]['psi'] == pytest.approx(_reference_psi(champion[:, i], challenger[:, i], edges), rel=1e-9)
  assert comparison['score_psi'] == max(s['psi'] for s in comparison['scores'])
  # The gate holds the run back, and the report says so first, naming both models with their versions.
  assert code == 4 and publish.read_pointer(str(out), 'risk') is None
  page = (folder / 'report.html').read_text()
  body = _text(page[page.index('<body>'):])
  overlap = heavy['top'][1]['overlap']
  assert body.startswith(f'Run risk FAILED the publish gate: top5_overlap is {comparison["top5_overlap"]:.4g}, '
                         f'breaking top5_overlap>=0.8 by {0.8 - comparison["top5_overlap"]:.4g}')
  assert 'DONE' not in page
  assert 'champion heavy-champion v1' in body and 'challenger heavy-challenger v2' in body
  assert f'heavy {heavy["champion_mean"]:.4g} {heavy["challenger_mean"]:.4g}' in body
  assert f'{overlap:.1%}' in body


def test_check_comparable__an_embedding_bundle_is_refused_saying_why(penguin_bundle):
  import dataclasses
  from models.bundle import Outputs
  from models.challenger import check_comparable
  embedding = dataclasses.replace(penguin_bundle, path='/models/embed', outputs=Outputs('embedding', dimension=8))
  for champion, challenger in ((penguin_bundle, embedding), (embedding, embedding)):
    with pytest.raises(ValueError, match=r'--challenger .*an embedding model \(embedding, 8 dimensions\) has no class '
                                         r'or score to compare row by row'):
      check_comparable(champion, challenger)
  check_comparable(penguin_bundle, penguin_bundle)  # two classifiers of the same classes compare
