"""Small models of each framework beside TensorFlow, trained here and imported as bundles as a user would.

The model-format tests (tests/models/handlers/test_frameworks.py) and the
benchmarks (benchmarks/frameworks.py, and benchmarks/torch_model.py for the GPU
row) need the same thing: an ONNX, PyTorch, XGBoost or scikit-learn model,
saved the way its framework saves it, then turned into a bundle by the import
command (`models.importer.command`). One implementation serves them all; what
differs between them (model sizes, seeds, learning rates, the ONNX opset) is a
parameter each caller gives, never a default one picks for the other.

Every framework is imported inside the function that uses it: a caller needs
only the frameworks it trains.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Optional, Sequence

import numpy as np

# The file ending each framework's model takes, which is how the import command tells the format.
EXTENSIONS = {'onnx': '.onnx', 'torch': '.pt2', 'xgboost': '.ubj', 'sklearn': '.skops'}
# A forest's trees are a type skops loads only when named (models/handlers/sklearn.py).
TRUSTED = {'sklearn': ['sklearn.tree._tree.Tree']}


def train_onnx(estimator: Any, x: np.ndarray, y: np.ndarray, path: str, *,
               target_opset: Optional[int] = None) -> str:
  """Fits a scikit-learn classifier and saves its ONNX export at `path`; returns `path`.

  The export gives the probabilities as a plain matrix (no zipmap), as the job
  reads them; `target_opset` None is skl2onnx's newest.
  """
  from skl2onnx import to_onnx
  model = estimator.fit(x, y)
  onx = to_onnx(model, x[:1], options={id(model): {'zipmap': False}}, target_opset=target_opset)
  with open(path, 'wb') as f:
    f.write(onx.SerializeToString())
  return path


def mlp(width_in: int, width_out: int, *, hidden: int, layers: int, seed: int):
  """A seeded PyTorch MLP in eval mode: `layers` ReLU layers of `hidden` units, then softmax over `width_out`."""
  import torch
  torch.manual_seed(seed)
  widths = [width_in] + [hidden] * layers
  blocks: list = []
  for a, b in zip(widths, widths[1:]):
    blocks += [torch.nn.Linear(a, b), torch.nn.ReLU()]
  blocks += [torch.nn.Linear(widths[-1], width_out), torch.nn.Softmax(dim=1)]
  return torch.nn.Sequential(*blocks).eval()


def export_torch(module: Any, example: Any, path: str) -> str:
  """Saves `module` with `torch.export`, any number of rows, traced on the tensor `example`; returns `path`."""
  import torch
  program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim('rows')},))
  torch.export.save(program, path)
  return path


def train_torch(x: np.ndarray, y: np.ndarray, path: str, *, classes: int, hidden: int, lr: float, epochs: int,
                seed: int) -> str:
  """One hidden layer of `hidden` ReLU units and softmax, trained full-batch with Adam; exported at `path`."""
  import torch
  net = mlp(x.shape[1], classes, hidden=hidden, layers=1, seed=seed).train()
  optimizer = torch.optim.Adam(net.parameters(), lr=lr)
  xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
  for _ in range(epochs):
    optimizer.zero_grad()
    torch.nn.functional.nll_loss(torch.log(net(xt) + 1e-9), yt).backward()
    optimizer.step()
  return export_torch(net.eval(), xt[:4], path)


def train_xgboost(params: dict[str, Any], rounds: int, x: np.ndarray, y: np.ndarray, path: str) -> str:
  """An XGBoost booster of `params`, `rounds` rounds, saved at `path` (.ubj); returns `path`."""
  import xgboost
  xgboost.train(params, xgboost.DMatrix(x, label=y), num_boost_round=rounds).save_model(path)
  return path


def train_sklearn(estimator: Any, x: np.ndarray, y: np.ndarray, path: str) -> str:
  """Fits a scikit-learn estimator and saves it with skops at `path` (.skops); returns `path`."""
  import skops.io
  skops.io.dump(estimator.fit(x, y), path)
  return path


# The columns of the churn example: numbers and categories, each with missing values.
CHURN_NUMBERS = ('tenure', 'charges')
CHURN_CATEGORIES = ('contract', 'payment')


def churn_table(rows: int, *, seed: int, unseen: float = 0.0):
  """Customers with an `id`, numbers and categories (about 10% missing in each) and a `churned` label.

  `unseen` is the share of contracts given a value training never saw ('three_year'), which a one-hot
  encoder with handle_unknown='ignore' encodes as all zeros.
  """
  import pyarrow as pa
  rng = np.random.default_rng(seed)
  tenure = rng.gamma(2.0, 12.0, rows)
  charges = rng.normal(70.0, 25.0, rows)
  contract = rng.choice(np.array(['month', 'one_year', 'two_year'], dtype=object), rows, p=[0.5, 0.3, 0.2])
  payment = rng.choice(np.array(['card', 'check', 'transfer'], dtype=object), rows)
  logit = 1.2 * (contract == 'month') - 0.04 * tenure + 0.01 * (charges - 70) + 0.5 * (payment == 'check')
  churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
  contract[rng.random(rows) < unseen] = 'three_year'
  missing = lambda: rng.random(rows) < 0.1  # noqa: E731
  return pa.table({
      'id': [f'c{seed}-{i}' for i in range(rows)],
      'tenure': pa.array(tenure, mask=missing()), 'charges': pa.array(charges, mask=missing()),
      'contract': pa.array(contract, pa.string(), mask=missing()),
      'payment': pa.array(payment, pa.string(), mask=missing()), 'churned': churned})


def churn_pipeline(max_iter: int = 50):
  """The model a data scientist has: imputation and scaling for numbers, an ignore-unknown one-hot for
  categories, and a HistGradientBoostingClassifier, all in one scikit-learn Pipeline on a DataFrame."""
  from sklearn.compose import ColumnTransformer
  from sklearn.ensemble import HistGradientBoostingClassifier
  from sklearn.impute import SimpleImputer
  from sklearn.pipeline import Pipeline
  from sklearn.preprocessing import OneHotEncoder, StandardScaler
  numbers = Pipeline([('impute', SimpleImputer(strategy='median')), ('scale', StandardScaler())])
  return Pipeline([
      ('prepare', ColumnTransformer([('num', numbers, list(CHURN_NUMBERS)),
                                     ('cat', OneHotEncoder(handle_unknown='ignore'), list(CHURN_CATEGORIES))])),
      ('model', HistGradientBoostingClassifier(max_iter=max_iter, random_state=0))])


def churn_frame(table):
  """The feature columns of a churn table as the user's pandas code reads them (nulls as pandas has them)."""
  return table.select([*CHURN_NUMBERS, *CHURN_CATEGORIES]).to_pandas()


def import_bundle(model: str, features: Optional[dict[str, Any]], outputs: dict[str, Any], output: str, *,
                  name: str, version: str, data: Optional[str] = None, expected: Optional[str] = None,
                  trusted_types: Sequence[str] = (), flags: Sequence[str] = ()) -> int:
  """Imports `model` as a bundle at `output` the way a user does, through `python -m models.importer`.

  `features` and `outputs` are the contents of features.json (None: no --features, for a model that
  takes a table) and outputs.json; `data` and `expected` are the command's --data and --expected
  files; `flags` any others. Returns the command's exit status (0: the bundle is written and checked).
  """
  from models.importer.command import main
  with tempfile.TemporaryDirectory() as directory:
    features_path, outputs_path = os.path.join(directory, 'features.json'), os.path.join(directory, 'outputs.json')
    if features is not None:
      with open(features_path, 'w', encoding='utf-8') as f:
        json.dump(features, f)
    with open(outputs_path, 'w', encoding='utf-8') as f:
      json.dump(outputs, f)
    argv = [f'--model={model}', f'--outputs={outputs_path}', f'--name={name}', f'--version={version}',
            f'--output={output}', *flags]
    if features is not None:
      argv.append(f'--features={features_path}')
    if data:
      argv.append(f'--data={data}')
    if expected:
      argv.append(f'--expected={expected}')
    if trusted_types:
      argv.append(f'--trusted_types={",".join(trusted_types)}')
    return main(argv)


def import_penguin_model(model: str, spec: Any, output: str, *, name: str, version: str,
                         trusted_types: Sequence[str] = ()) -> str:
  """Imports a model of the penguin example's fitted features (`spec`) and its classes as a bundle at `output`.

  Raises RuntimeError where the import fails (it prints why); returns `output`.
  """
  from models.bundle import Outputs
  from models.examples.penguins import train
  code = import_bundle(model, spec.to_dict(), Outputs('classification', train.CLASSES).to_dict(), output, name=name,
                       version=version, trusted_types=trusted_types)
  if code != 0:
    raise RuntimeError(f'importing {model} as a bundle failed (exit {code}); the import printed why')
  return output
