"""The GPU row's model: a heavier PyTorch MLP served through our pipeline's handler contract.

The GPU machine has PyTorch and no TensorFlow, so this row cannot run the
example SavedModel. It serves an MLP from the example's features to its three
classes instead, behind a `SavedModelHandler` subclass: batching by rows,
sharing one copy across processes and the row-by-row retry stay ours; only
the model call changes. Weights are random with a fixed seed: the row
measures throughput, not accuracy. Nothing here imports TensorFlow.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from models.bundle import ModelBundle, Outputs
from models.handler import SavedModelHandler
from models.penguins import train

HIDDEN = 2048
LAYERS = 4
SEED = 0


def bench_bundle() -> ModelBundle:
  """The example's features, fitted exactly as training fits them, with the example's classes.

  Built in memory (the JSON parts of a bundle, no SavedModel): the machine
  that runs this needs neither TensorFlow nor a trained bundle.
  """
  metadata = {'name': 'penguin-species-torch-mlp', 'version': f'random-init-seed{SEED}'}
  return ModelBundle('', train.fit_features(), Outputs('classification', train.CLASSES), metadata)


def flops_per_row(width_in: int, width_out: int, *, hidden: int = HIDDEN, layers: int = LAYERS) -> int:
  """Multiply-adds of the linear layers, counted as 2 FLOPs each (activations ignored)."""
  widths = [width_in] + [hidden] * layers + [width_out]
  return sum(2 * a * b for a, b in zip(widths, widths[1:]))


class TorchPredictor:
  """An MLP on one torch device behind the `predict(matrix) -> matrix` method our handler calls.

  fp32 weights; on CUDA, matmuls may use TF32 tensor cores (what PyTorch
  inference on an H100 would normally allow).
  """

  def __init__(self, width_in: int, width_out: int, *, device: str = 'cuda', hidden: int = HIDDEN,
               layers: int = LAYERS):
    import torch
    if device.startswith('cuda') and not torch.cuda.is_available():
      raise RuntimeError(f'--device {device}: PyTorch {torch.__version__} sees no CUDA device on this machine')
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(SEED)
    widths = [width_in] + [hidden] * layers
    blocks: list = []
    for a, b in zip(widths, widths[1:]):
      blocks += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    blocks += [torch.nn.Linear(widths[-1], width_out), torch.nn.Softmax(dim=1)]
    self._torch = torch
    self._device = torch.device(device)
    self._model = torch.nn.Sequential(*blocks).to(self._device).eval()

  def predict(self, features: np.ndarray) -> np.ndarray:
    """Class probabilities for a (rows, features) float32 matrix, as a (rows, classes) array."""
    torch = self._torch
    with torch.inference_mode():
      x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(self._device)
      return self._model(x).cpu().numpy()


class TorchHandler(SavedModelHandler):
  """Our handler with the model load swapped for a `TorchPredictor`.

  Holds only settings, so it pickles into the pipeline; the model is built
  where Beam loads it (once per worker machine when shared across processes).
  """

  def __init__(self, width_in: int, width_out: int, *, device: str, min_batch_rows: int = 1,
               max_batch_rows: int = 8192, share_across_processes: bool = False, hidden: int = HIDDEN,
               layers: int = LAYERS):
    super().__init__(f'torch-mlp-{layers}x{hidden}:{device}', min_batch_rows=min_batch_rows,
                     max_batch_rows=max_batch_rows, share_across_processes=share_across_processes)
    self._shape = (width_in, width_out, hidden, layers)
    self._torch_device = device

  def load_model(self) -> TorchPredictor:
    width_in, width_out, hidden, layers = self._shape
    return TorchPredictor(width_in, width_out, device=self._torch_device, hidden=hidden, layers=layers)


def handler_for(bundle: ModelBundle, *, device: str, max_batch_rows: int, share_across_processes: bool,
                hidden: int = HIDDEN, layers: int = LAYERS, min_batch_rows: Optional[int] = None) -> TorchHandler:
  """A handler whose model fits the bundle's features and outputs."""
  return TorchHandler(len(bundle.features.output_names), bundle.outputs.width, device=device,
                      min_batch_rows=min_batch_rows or 1, max_batch_rows=max_batch_rows,
                      share_across_processes=share_across_processes, hidden=hidden, layers=layers)
