"""PyTorch models saved without their training code: `torch.export` programs (`.pt2`) or TorchScript.

Both load from the file alone. A pickled module (`torch.save(model)`) needs
the class that defined it and runs code on load, so it is refused with how to
export it instead. The model takes one float matrix (rows × inputs), with a
dynamic first dimension, or, declared in inputs.json, named inputs: tensors of
any rank and type (`forward(self, image, mask)`, or one dict of them,
`forward(self, inputs)`), or a table's numeric columns as [rows, 1] tensors. It
returns a tensor with a row per input row (probabilities for a classifier, as a
SavedModel would).
"""

from __future__ import annotations

import io
import zipfile
from typing import Optional

import numpy as np

import pyarrow as pa

from models.handlers.base import NO_GPU_HELP, NoGpuError, check_named_inputs
from models.handlers import as_rows, read_bytes
from models.inputs import MATRIX, InputContract, numpy_column

EXPORT_HELP = ('export the model without its code: torch.export.save(torch.export.export(model, (example,), '
               'dynamic_shapes=({0: torch.export.Dim("rows")},)), "model.pt2"), or '
               'torch.jit.save(torch.jit.script(model), "model.pt")')


def require_gpu() -> None:
  import torch
  if not torch.cuda.is_available():
    cuda = f'built with CUDA {torch.version.cuda}' if torch.version.cuda else 'a CPU-only build'
    raise NoGpuError(f'--device=gpu, but PyTorch {torch.__version__} ({cuda}) sees no CUDA device on this '
                     f'machine. {NO_GPU_HELP}')


def kind_of(data: bytes) -> str:
  """'export' (a torch.export program) or 'torchscript'; a ValueError saying how to export anything else."""
  if not zipfile.is_zipfile(io.BytesIO(data)):
    raise ValueError(f'not a torch.export program or TorchScript archive (a legacy pickle?): {EXPORT_HELP}')
  names = zipfile.ZipFile(io.BytesIO(data)).namelist()
  if any('/code/' in n for n in names) and any(n.endswith('constants.pkl') for n in names):
    return 'torchscript'
  if any(n.endswith('/archive_format') for n in names) and any('/models/' in n for n in names):
    return 'export'
  raise ValueError(f'a pickled module (torch.save(model)) needs its training code and runs code when loaded; '
                   f'{EXPORT_HELP}')


class Predictor:
  """A torch.export program or TorchScript module on one torch device behind `predict`."""

  def __init__(self, path: str, outputs, device: str = 'auto', inputs: InputContract = MATRIX,
               threads: Optional[int] = None):
    import torch
    if device == 'gpu':
      require_gpu()
    if threads:
      torch.set_num_threads(threads)  # the process's intra-op pool, where the model loads
    self._torch = torch
    self._device = torch.device('cuda' if device != 'cpu' and torch.cuda.is_available() else 'cpu')
    data = read_bytes(path)
    self._input_width = None
    if kind_of(data) == 'export':
      program = torch.export.load(io.BytesIO(data))
      self._input_width = _input_width(program)
      self._as_dict, names = _export_arguments(program)
      self._model = program.module().to(self._device)
      parameter = next(iter(program.state_dict.values()), None)
    else:
      self._model = torch.jit.load(io.BytesIO(data), map_location=self._device).eval()
      arguments = self._model.forward.schema.arguments[1:]  # after self
      self._as_dict = len(arguments) == 1 and str(arguments[0].type).startswith('Dict')
      names = [] if self._as_dict else [a.name for a in arguments]
      parameter = next(iter(self._model.parameters()), None)
    # A model of float64 weights takes float64; else float32, as today.
    self._dtype = torch.float64 if parameter is not None and parameter.dtype == torch.float64 else torch.float32
    self._names = names or list(inputs.names)
    if inputs.shape != 'matrix' and not self._as_dict and len(names) == 1 and len(inputs.names) == 1:
      self._names = list(inputs.names)  # one tensor: fed as the model's one argument, whatever its name
    elif names:
      check_named_inputs('PyTorch model', path, {n: 'tensor' for n in names}, inputs)
    self._inputs = inputs
    self._outputs = outputs

  @property
  def input_width(self) -> Optional[int]:
    return self._input_width

  @property
  def device(self) -> str:
    return str(self._device)

  @property
  def input_dtype(self) -> str:
    return 'float64' if self._dtype == self._torch.float64 else 'float32'

  @property
  def input_names(self) -> Optional[list[str]]:
    return self._names if self._inputs.shape != 'matrix' else None

  def _tensor(self, values):
    torch = self._torch
    if isinstance(values, pa.Array):  # a table's column: [rows, 1]
      values = numpy_column(values, np.dtype(np.float64)).reshape(-1, 1)
    x = torch.from_numpy(np.ascontiguousarray(values))
    return (x.to(self._dtype) if x.is_floating_point() else x).to(self._device)

  def predict(self, features) -> np.ndarray:
    return as_rows(self.model_output(features), self._outputs, 'PyTorch model')

  def model_output(self, features) -> np.ndarray:
    """The model's output as it returns it, of any rank (a text encoder's [rows, tokens, dim]); of a
    Hugging Face model's output object, its first tensor (logits, or last_hidden_state)."""
    torch = self._torch
    with torch.inference_mode():
      if isinstance(features, (dict, pa.RecordBatch)):
        named = {n: self._tensor(features[n] if isinstance(features, dict) else features.column(n))
                 for n in self._inputs.names}
        out = self._model(named) if self._as_dict else self._model(*[named[n] for n in self._names])
      else:
        x = torch.from_numpy(np.ascontiguousarray(features)).to(self._dtype).to(self._device)
        out = self._model(x)
      if isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
      if not isinstance(out, torch.Tensor):
        raise ValueError(f'the PyTorch model returned {type(out).__name__}; expected one tensor')
      return out.float().cpu().numpy()


def _export_arguments(program) -> tuple[bool, list[str]]:
  """Whether a torch.export program takes one dict of tensors, and the names of its tensor arguments."""
  args = program.call_spec.in_spec.child(0)
  if args.num_children == 1 and args.child(0).type is dict:
    return True, [str(k) for k in args.child(0).context]
  return False, list(program.graph_signature.user_inputs)


def _input_width(program) -> Optional[int]:
  """The matrix width a torch.export program was exported for, from its one user input's example."""
  user_inputs = list(program.graph_signature.user_inputs)
  for node in program.graph.nodes:
    if node.op == 'placeholder' and node.name in user_inputs and len(user_inputs) == 1:
      shape = getattr(node.meta.get('val'), 'shape', None)
      if shape is not None and len(shape) == 2 and isinstance(shape[-1], int):
        return int(shape[-1])
  return None
