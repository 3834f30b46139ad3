"""The GPU row's model: a heavier PyTorch MLP, exported and imported as a bundle as a user would.

The GPU machine has PyTorch and no TensorFlow, so this row cannot run the
example SavedModel. It serves an MLP from the example's features to its three
classes instead, saved with `torch.export` and turned into a bundle by the
import command's code (`models.import_model`), so `python -m pipelines.run`
serves it exactly as it serves any user's PyTorch model. Weights are random
with a fixed seed: the row measures throughput, not accuracy. Nothing here
imports TensorFlow.
"""

from __future__ import annotations

import json
import os
import tempfile

from models.bundle import Outputs
from models.penguins import train

HIDDEN = 2048
LAYERS = 4
SEED = 0


def flops_per_row(width_in: int, width_out: int, *, hidden: int = HIDDEN, layers: int = LAYERS) -> int:
  """Multiply-adds of the linear layers, counted as 2 FLOPs each (activations ignored)."""
  widths = [width_in] + [hidden] * layers + [width_out]
  return sum(2 * a * b for a, b in zip(widths, widths[1:]))


def mlp(width_in: int, width_out: int, *, hidden: int = HIDDEN, layers: int = LAYERS):
  """The seeded MLP: `layers` ReLU layers of `hidden` units, then softmax over `width_out` classes."""
  import torch
  torch.manual_seed(SEED)
  widths = [width_in] + [hidden] * layers
  blocks: list = []
  for a, b in zip(widths, widths[1:]):
    blocks += [torch.nn.Linear(a, b), torch.nn.ReLU()]
  blocks += [torch.nn.Linear(widths[-1], width_out), torch.nn.Softmax(dim=1)]
  return torch.nn.Sequential(*blocks).eval()


def make_bundle(output: str, *, hidden: int = HIDDEN, layers: int = LAYERS) -> str:
  """The MLP as a bundle at `output` (made once): exported with `torch.export`, imported like any model.

  The features are the example's, fitted exactly as its training fits them.
  """
  import torch

  from models.import_model import import_model
  if os.path.exists(os.path.join(output, 'metadata.json')):
    return output
  spec = train.fit_features()
  outputs = Outputs('classification', train.CLASSES)
  net = mlp(len(spec.output_names), outputs.width, hidden=hidden, layers=layers)
  example = torch.zeros((4, len(spec.output_names)), dtype=torch.float32)
  with tempfile.TemporaryDirectory() as directory:
    model = os.path.join(directory, 'model.pt2')
    torch.export.save(torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim('rows')},)), model)
    features, outputs_json = os.path.join(directory, 'features.json'), os.path.join(directory, 'outputs.json')
    with open(features, 'w', encoding='utf-8') as f:
      json.dump(spec.to_dict(), f)
    with open(outputs_json, 'w', encoding='utf-8') as f:
      json.dump(outputs.to_dict(), f)
    import_model(model=model, features=features, outputs=outputs_json, name='penguin-species-torch-mlp',
                 version=f'{layers}x{hidden}-seed{SEED}', output=output)
  return output
