"""Challenger scoring: a second bundle scores the same rows in the same job; the comparison matches
what the two bundles predict when run alone, shows in the report, and feeds the gate."""

import glob
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
import pyarrow.parquet as pq
import pytest

from models.challenger import specs_agree
from models.examples.penguins import train
from pipelines import run as run_job
from transforms.files import publish
from tests.pipelines.record.test_report import _browser, _png_size, _rendered_images

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def challengers(tmp_path_factory):
  """Two real challengers: one barely trained on the same split (same feature spec, so features are
  shared), one trained on another split (its feature statistics differ)."""
  base = tmp_path_factory.mktemp('challengers')
  return {'same_spec': train.train(str(base / 'weak'), version='2', epochs=2, seed=7),
          'other_spec': train.train(str(base / 'other'), version='3', epochs=30, seed=11)}


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
  comparison = json.loads((folder / 'comparison.json').read_text())
  assert comparison['agreement'] < 0.999  # two epochs of training cannot match the champion
  assert code == 4 and publish.read_pointer(str(out), 'rollout') is None
  shortfall = 0.999 - comparison['agreement']
  assert f'agreement is {comparison["agreement"]:.4g}, breaking agreement>=0.999 by {shortfall:.4g}' in err
  page = (folder / 'report.html').read_text()
  assert 'id="challenger"' in page and 'id="gate"' in page
  charts = ('flips', 'quantiles', 'segments')
  for name in charts:
    assert _png_size(folder / f'report-{name}.png')[0] > 100
  if not _browser():
    pytest.skip('no Chromium here: the report was written and checked, but not rendered')
  images = _rendered_images(str(folder / 'report.html'), tmp_path)
  for name in charts:
    width, height = _png_size(folder / f'report-{name}.png')
    assert images[f'chart-{name}'] == f'{width}x{height}', f'chart {name} did not load in the browser'


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
