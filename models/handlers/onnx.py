"""ONNX models through onnxruntime: the universal route (PyTorch, scikit-learn, XGBoost and TensorFlow export to it).

The graph takes one float matrix (rows × inputs), or, declared in inputs.json,
several named inputs: a table's columns, each a [rows, 1] tensor of the graph's
own type (skl2onnx's conversion of a whole Pipeline takes one per column, strings
included), or named tensors of any rank. Its output is the one
`outputs.json` names (`output_key`), the only output, or else the only float
tensor as wide as `outputs.json` describes: a scikit-learn classifier
converted with `skl2onnx` (options `zipmap=False`) returns `label` and
`probabilities`, and the probabilities are taken.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

import pyarrow as pa

from models.handlers.base import NO_GPU_HELP, NoGpuError, check_named_inputs
from models.handlers import as_rows, read_bytes
from models.inputs import MATRIX, InputContract, numpy_column

CUDA = 'CUDAExecutionProvider'
CPU = 'CPUExecutionProvider'
_FLOATS = {'tensor(float)': np.float32, 'tensor(double)': np.float64, 'tensor(float16)': np.float16}
_TYPES = {**_FLOATS, 'tensor(string)': np.dtype(object), 'tensor(int64)': np.int64, 'tensor(int32)': np.int32,
          'tensor(uint8)': np.uint8, 'tensor(int8)': np.int8, 'tensor(bool)': np.bool_}


def require_gpu() -> None:
  import onnxruntime as ort
  if CUDA not in ort.get_available_providers():
    raise NoGpuError(f'--device=gpu, but onnxruntime {ort.__version__} has no CUDA provider (it has '
                     f'{ort.get_available_providers()}): install onnxruntime-gpu instead of onnxruntime. '
                     f'{NO_GPU_HELP}')


def _width(shape) -> Optional[int]:
  return shape[-1] if len(shape) == 2 and isinstance(shape[-1], int) else None


class Predictor:
  """An onnxruntime session behind `predict`; `device` names the provider that runs it."""

  def __init__(self, path: str, outputs, device: str = 'auto', inputs: InputContract = MATRIX,
               threads: Optional[int] = None):
    import onnxruntime as ort
    if device == 'gpu':
      require_gpu()
    providers = [CPU] if device == 'cpu' or CUDA not in ort.get_available_providers() else [CUDA, CPU]
    options = ort.SessionOptions()
    # Between calls onnxruntime's threads spin waiting for work by default; in a Beam worker they
    # would spin against the reading, feature and writing threads on the same cores.
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    if threads:
      options.intra_op_num_threads = threads
      options.inter_op_num_threads = 1
    self._session = ort.InferenceSession(read_bytes(path), options, providers=providers)
    if device == 'gpu' and CUDA not in self._session.get_providers():
      # onnxruntime-gpu falls back to the CPU when CUDA cannot start (no driver, no GPU).
      raise NoGpuError(f'--device=gpu, but onnxruntime could not start its CUDA provider on this machine. '
                       f'{NO_GPU_HELP}')
    self._device = 'cuda' if CUDA in self._session.get_providers() else 'cpu'
    graph_inputs = self._session.get_inputs()
    check_named_inputs('ONNX model', path, {i.name: i.type for i in graph_inputs}, inputs)
    unusable = [f'{i.name} ({i.type})' for i in graph_inputs if i.type not in _TYPES]
    if unusable:
      raise ValueError(f'the ONNX model {path} takes {", ".join(unusable)}, a type this job cannot feed')
    if inputs.shape == 'matrix' and graph_inputs[0].type not in _FLOATS:
      raise ValueError(f'the ONNX model {path} takes {graph_inputs[0].name} ({graph_inputs[0].type}); a matrix of '
                       'features is float; declare a non-float input in inputs.json as a table column or a tensor')
    self._named = inputs.shape != 'matrix'
    self._input = graph_inputs[0].name
    self._dtype = _TYPES[graph_inputs[0].type]
    self._types = {i.name: np.dtype(_TYPES[i.type]) for i in graph_inputs}
    self._ranks = {i.name: len(i.shape) for i in graph_inputs}
    self._input_width = _width(graph_inputs[0].shape) if not self._named else None
    self._outputs = outputs
    self._output = self._pick_output(path, outputs)

  def _pick_output(self, path: str, outputs) -> str:
    found = self._session.get_outputs()
    names = [o.name for o in found]
    if outputs.output_key is not None:
      if outputs.output_key not in names:
        raise ValueError(f'the ONNX model {path} has no output {outputs.output_key!r}; it has {names}')
      return outputs.output_key
    if len(found) == 1:
      return found[0].name
    floats = [o for o in found if o.type in _FLOATS]
    fitting = [o.name for o in floats if _width(o.shape) in (None, outputs.width)]
    if len(fitting) != 1 and len(floats) == 1:  # one float output: its width is checked where it is used
      fitting = [floats[0].name]
    if len(fitting) != 1:
      raise ValueError(f'the ONNX model {path} returns {[(o.name, o.type) for o in found]}; name the one to use '
                       'as output_key in outputs.json (a scikit-learn classifier needs skl2onnx options '
                       '{"zipmap": False} for a probability matrix)')
    return fitting[0]

  @property
  def input_width(self) -> Optional[int]:
    return self._input_width

  @property
  def device(self) -> str:
    return self._device

  @property
  def input_dtype(self) -> str:
    return np.dtype(self._dtype).name

  @property
  def input_names(self) -> Optional[list[str]]:
    return list(self._types) if self._named else None

  def predict(self, features) -> np.ndarray:
    return as_rows(self.model_output(features), self._outputs, 'ONNX model')

  def model_output(self, features) -> np.ndarray:
    """The graph's output as it returns it, of any rank (a text encoder's [rows, tokens, dim])."""
    if isinstance(features, pa.RecordBatch):  # a table: one [rows, 1] tensor per column, in the graph's type
      feeds = {name: self._column(features.column(name), name) for name in self._types}
    elif isinstance(features, dict):
      feeds = {name: np.ascontiguousarray(features[name], dtype=self._types[name]) for name in self._types}
    else:
      feeds = {self._input: np.ascontiguousarray(features, dtype=self._dtype)}
    out, = self._session.run([self._output], feeds)
    return out

  def _column(self, values: pa.Array, name: str) -> np.ndarray:
    x = numpy_column(values, self._types[name])
    return x.reshape(-1, 1) if self._ranks[name] == 2 else x
