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


def import_bundle(model: str, features: dict[str, Any], outputs: dict[str, Any], output: str, *, name: str,
                  version: str, data: Optional[str] = None, expected: Optional[str] = None,
                  trusted_types: Sequence[str] = ()) -> int:
  """Imports `model` as a bundle at `output` the way a user does, through `python -m models.importer`.

  `features` and `outputs` are the contents of features.json and outputs.json;
  `data` and `expected` are the command's --data and --expected files. Returns
  the command's exit status (0: the bundle is written and checked).
  """
  from models.importer.command import main
  with tempfile.TemporaryDirectory() as directory:
    features_path, outputs_path = os.path.join(directory, 'features.json'), os.path.join(directory, 'outputs.json')
    with open(features_path, 'w', encoding='utf-8') as f:
      json.dump(features, f)
    with open(outputs_path, 'w', encoding='utf-8') as f:
      json.dump(outputs, f)
    argv = [f'--model={model}', f'--features={features_path}', f'--outputs={outputs_path}', f'--name={name}',
            f'--version={version}', f'--output={output}']
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
