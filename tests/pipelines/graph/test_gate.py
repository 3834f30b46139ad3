"""The publish gate: thresholds parsed and checked before publishing; a breach publishes nothing,
keeps the staged output, says which threshold broke by how much, and exits with its own status."""

import glob
import json
import os

import pyarrow.parquet as pq
import pytest

from models.examples.penguins import train
from pipelines import run as run_job
from pipelines.graph import gate
from pipelines.record import status
from transforms.files import publish


def test_parse__reads_conditions_and_names_every_bad_one():
  assert [str(t) for t in gate.parse('agreement>=0.97, psi<=0.1,rejected_rate<0.01', challenger=True)] == [
      'agreement>=0.97', 'psi<=0.1', 'rejected_rate<0.01']
  with pytest.raises(ValueError) as e:
    gate.parse('agreement>=0.97,accuracy>0.9,rejected_rate=0.1')
  text = str(e.value)
  assert "'agreement' compares two models: it needs --challenger" in text
  assert "'accuracy' is not a gate metric" in text
  assert "'rejected_rate=0.1' is not METRIC OP NUMBER" in text


def test_evaluate__says_which_threshold_broke_and_by_how_much():
  thresholds = gate.parse('rejected_rate<=0.01,feature_psi<=0.1,drifted_features<=0')
  verdict = gate.evaluate(thresholds, {'rejected_rate': 0.025, 'feature_psi': 0.05, 'drifted_features': None})
  assert not verdict['passed']
  assert verdict['breaches'] == [
      'rejected_rate is 0.025, breaking rejected_rate<=0.01 by 0.015',
      'drifted_features could not be measured (features the report flags as drifted from training), so '
      'drifted_features<=0 cannot be shown to hold']
  assert [c['held'] for c in verdict['checks']] == [False, True, False]
  assert gate.evaluate(thresholds[:2], {'rejected_rate': 0.01, 'feature_psi': 0.1})['passed']


def test_psi__zero_for_equal_distributions_and_grows_with_the_shift():
  a = {'x': 0.5, 'y': 0.5}
  assert gate.psi(a, a) == 0
  small, large = gate.psi(a, {'x': 0.55, 'y': 0.45}), gate.psi(a, {'x': 0.9, 'y': 0.1})
  assert 0 < small < 0.1 < large
  # (0.9-0.5)ln(0.9/0.5) + (0.1-0.5)ln(0.1/0.5)
  assert large == pytest.approx(0.4 * 0.5877866649 + 0.4 * 1.6094379124)


def _args(out, bundle, run_id, *extra):
  return [f'--input={train.EXAMPLE_DATA}', f'--model={bundle.path}', f'--output={out}', f'--run_id={run_id}', *extra]


@pytest.mark.slow
def test_breached_gate__publishes_nothing_keeps_the_staged_output_and_exits_4(tmp_path, penguin_bundle, capsys):
  out = tmp_path / 'out'
  # The example has 2 rejected rows of 344 (0.58%).
  code = run_job.main(_args(out, penguin_bundle, 'gated', '--gate=rejected_rate<=0.001,feature_psi<=0.5'))
  err = capsys.readouterr().err
  assert code == gate.GATE_EXIT_STATUS == 4
  assert 'broke its publish gate: rejected_rate is 0.005814, breaking rejected_rate<=0.001 by 0.004814' in err
  assert 'feature_psi' not in err.split('broke its publish gate')[1].split('Nothing was published')[0]
  assert publish.read_pointer(str(out), 'gated') is None  # nothing published
  [attempt] = publish.attempts(str(out), 'gated')
  folder = out / 'gated' / f'_{attempt}'  # hidden from readers that glob, as every unpublished attempt
  assert str(folder) in err
  staged = glob.glob(str(folder / 'predictions' / 'predictions-*.parquet'))
  assert staged and sum(pq.read_metadata(f).num_rows for f in staged) == 342
  verdict = json.loads((folder / gate.GATE_FILE).read_text())
  assert not verdict['passed'] and verdict['metrics']['feature_psi'] < 0.5
  page = (folder / 'report.html').read_text()
  assert 'FAILED the publish gate: rejected_rate is' in page and 'breaking rejected_rate&lt;=0.001' in page
  assert status.main([f'--output={out}', '--run_id=gated']) == 1
  assert 'FAILED: run gated broke its publish gate: rejected_rate is 0.005814' in capsys.readouterr().out

  # The same run id with a gate it meets publishes and replaces the kept attempt.
  assert run_job.main(_args(out, penguin_bundle, 'gated', '--gate=rejected_rate<=0.01,drifted_features<=0')) == 0
  printed = capsys.readouterr().out
  assert 'gate            passed: rejected_rate<=0.01 (0.005814), drifted_features<=0 (0)' in printed
  pointer = publish.read_pointer(str(out), 'gated')
  assert pointer['gate']['passed'] and publish.attempts(str(out), 'gated') == [pointer['attempt']]


@pytest.mark.slow
def test_gate_without_a_challenger__drift_against_training_breaks_it(tmp_path, penguin_bundle, capsys):
  from tests.pipelines.record.test_report import _drifted_copy
  out = tmp_path / 'out'
  code = run_job.main([f'--input={_drifted_copy(tmp_path)}', f'--model={penguin_bundle.path}', f'--output={out}',
                       '--run_id=drift', '--gate=feature_psi<=0.25,drifted_features<=0', '--report=false'])
  err = capsys.readouterr().err
  assert code == 4
  [attempt] = publish.attempts(str(out), 'drift')
  verdict = json.loads((out / 'drift' / f'_{attempt}' / gate.GATE_FILE).read_text())
  assert verdict['metrics']['drifted_features'] == 2  # island (unseen categories), sex (missing values)
  assert verdict['metrics']['feature_psi'] > 1  # a third of the islands unseen in training
  assert 'feature_psi is' in err and 'drifted_features is 2, breaking drifted_features<=0 by 2' in err
  assert not os.path.exists(out / 'drift' / f'_{attempt}' / 'report.html')  # --report=false: the gate alone


def test_gate_metric_of_two_models_without_a_challenger_is_a_flag_error(tmp_path, penguin_bundle, capsys):
  assert run_job.main(_args(tmp_path / 'out', penguin_bundle, 'x', '--gate=agreement>=0.9')) == 2
  assert "'agreement' compares two models: it needs --challenger" in capsys.readouterr().err
