"""The shared framework trainers' import: a failed import is an exit status (or an error), never a bundle."""

import pytest

from testing import frameworks


def test_import_bundle__a_missing_model_exits_2_and_writes_nothing(tmp_path):
  features = {'features': [{'name': 'x', 'dtype': 'float', 'steps': [{'kind': 'z_score', 'mean': 0.0, 'std': 1.0}]}]}
  output = tmp_path / 'bundle'
  code = frameworks.import_bundle(str(tmp_path / 'missing.onnx'), features,
                                  {'kind': 'classification', 'classes': ['a', 'b']}, str(output), name='m', version='1')
  assert code == 2
  assert not output.exists()


def test_import_penguin_model__raises_where_the_import_fails(tmp_path):
  from models.examples.penguins import train
  with pytest.raises(RuntimeError, match='exit 2'):
    frameworks.import_penguin_model(str(tmp_path / 'missing.skops'), train.fit_features(), str(tmp_path / 'bundle'),
                                    name='m', version='1')
  assert not (tmp_path / 'bundle').exists()


def test_mlp__the_same_seed_builds_the_same_weights():
  torch = pytest.importorskip('torch')
  a, b = (frameworks.mlp(3, 2, hidden=4, layers=2, seed=0) for _ in range(2))
  assert [type(m).__name__ for m in a] == ['Linear', 'ReLU', 'Linear', 'ReLU', 'Linear', 'Softmax'] and not a.training
  assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
