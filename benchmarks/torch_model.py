"""The GPU row's model: a heavier PyTorch MLP, exported and imported as a bundle as a user would.

The GPU machine has PyTorch and no TensorFlow, so this row cannot run the
example SavedModel. It serves an MLP from the example's features to its three
classes instead, saved with `torch.export` and turned into a bundle by the
import command's code (`models.importer.command`), so `python -m pipelines.run`
serves it exactly as it serves any user's PyTorch model. Weights are random
with a fixed seed: the row measures throughput, not accuracy. Nothing here
imports TensorFlow.
"""

from __future__ import annotations

import os
import tempfile

from models.examples.penguins import train
from testing import frameworks

HIDDEN = 2048
LAYERS = 4
SEED = 0


def flops_per_row(width_in: int, width_out: int, *, hidden: int = HIDDEN, layers: int = LAYERS) -> int:
  """Multiply-adds of the linear layers, counted as 2 FLOPs each (activations ignored)."""
  widths = [width_in] + [hidden] * layers + [width_out]
  return sum(2 * a * b for a, b in zip(widths, widths[1:]))


def make_bundle(output: str, *, hidden: int = HIDDEN, layers: int = LAYERS) -> str:
  """The seeded MLP (`layers` ReLU layers of `hidden` units, softmax over the classes) as a bundle at `output`
  (made once): exported with `torch.export`, imported like any model.

  The features are the example's, fitted exactly as its training fits them.
  """
  import torch
  if os.path.exists(os.path.join(output, 'metadata.json')):
    return output
  spec = train.fit_features()
  width_in = len(spec.output_names)
  net = frameworks.mlp(width_in, len(train.CLASSES), hidden=hidden, layers=layers, seed=SEED)
  example = torch.zeros((4, width_in), dtype=torch.float32)
  with tempfile.TemporaryDirectory() as directory:
    model = frameworks.export_torch(net, example, os.path.join(directory, 'model.pt2'))
    return frameworks.import_penguin_model(model, spec, output, name='penguin-species-torch-mlp',
                                           version=f'{layers}x{hidden}-seed{SEED}')
