"""The import proves how category text is read: its `--expected` rows go through the run's own steps.

A churn classifier trained by the user's own code (scikit-learn on its own
one-hot of the contract), imported as a bundle with `--expected` rows whose
contract is sometimes padded with spaces or capitalised, as a spreadsheet
export leaves it. The bundle must agree with the user's model on those rows:
where their code used the text as it was, a padded value is unknown to both;
where it trimmed and lowered it, features.json says so and the import proves it.
"""

import json

import numpy as np
import pytest

from testing.frameworks import import_bundle, train_sklearn

CONTRACTS = ['month_to_month', 'one_year', 'two_year']
CLASSES = ['no', 'yes']
TENURE = (30.0, 20.0)  # the user's fitted mean and standard deviation


def _encode(rows, normalise):
  """The user's own preprocessing: tenure z-scored, then the contract one-hot with a last 'other' column."""
  contract = np.zeros((len(rows), len(CONTRACTS) + 1))
  for i, row in enumerate(rows):
    value = normalise(row['contract'])
    contract[i, CONTRACTS.index(value) if value in CONTRACTS else len(CONTRACTS)] = 1.0
  tenure = (np.array([r['tenure'] for r in rows]) - TENURE[0]) / TENURE[1]
  return np.column_stack([tenure, contract]).astype(np.float32)


def _features(**vocabulary) -> dict:
  return {'features': [
      {'name': 'tenure', 'dtype': 'float', 'steps': [{'kind': 'z_score', 'mean': TENURE[0], 'std': TENURE[1]}]},
      {'name': 'contract', 'dtype': 'string',
       'steps': [{'kind': 'vocabulary', 'vocabulary': CONTRACTS, **vocabulary}, {'kind': 'one_hot'}]}]}


def _import(tmp_path, normalise, features, name):
  """Trains the user's model with `normalise` as their text cleaning, writes --expected, imports; the exit status."""
  from sklearn.linear_model import LogisticRegression
  rng = np.random.default_rng(3)
  train = [{'tenure': float(rng.uniform(0, 72)), 'contract': str(rng.choice(CONTRACTS))} for _ in range(600)]
  # Month-to-month customers churn; a contract 'other' than the three never appears in training.
  y = np.array([int(r['contract'] == 'month_to_month' or r['tenure'] < 6) for r in train])
  estimator = LogisticRegression(C=100.0, max_iter=2000)
  model = train_sklearn(estimator, _encode(train, normalise), y, str(tmp_path / f'{name}.skops'))  # fits it
  padded = [' one_year ', 'one_year ', 'Month_to_month', ' two_year', 'one_year', 'month_to_month']
  sample = [{'tenure': float(t), 'contract': padded[i % len(padded)]} for i, t in enumerate(range(2, 60, 2))]
  probabilities = estimator.predict_proba(_encode(sample, normalise))
  expected = tmp_path / f'{name}-expected.jsonl'
  expected.write_text(''.join(json.dumps({**row, **{f'probability_{c}': float(p[k]) for k, c in enumerate(CLASSES)}})
                              + '\n' for row, p in zip(sample, probabilities)))
  return import_bundle(model, features, {'kind': 'classification', 'classes': CLASSES}, str(tmp_path / name),
                       name='churn', version='1', expected=str(expected))


@pytest.mark.slow
def test_import__a_model_that_used_the_text_as_it_was_agrees_on_padded_values(tmp_path):
  pytest.importorskip('sklearn')
  assert _import(tmp_path, lambda v: v, _features(), 'as-read') == 0


@pytest.mark.slow
def test_import__trimming_the_users_code_did_is_declared_and_proved(tmp_path, capsys):
  pytest.importorskip('sklearn')
  cleaned = lambda v: v.strip().lower()  # noqa: E731  (the user's own cleaning)
  assert _import(tmp_path, cleaned, _features(), 'undeclared') != 0  # not declared: the import sees it
  assert 'does not reproduce your model' in capsys.readouterr().err
  assert _import(tmp_path, cleaned, _features(trim=True, case='lower'), 'declared') == 0
