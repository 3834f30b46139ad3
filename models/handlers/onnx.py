"""ONNX models through onnxruntime: the universal route (PyTorch, scikit-learn, XGBoost and TensorFlow export to it).

The graph must take one float matrix (rows × inputs). Its output is the one
`outputs.json` names (`output_key`), the only output, or else the only float
tensor as wide as `outputs.json` describes: a scikit-learn classifier
converted with `skl2onnx` (options `zipmap=False`) returns `label` and
`probabilities`, and the probabilities are taken.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from models.handlers.base import NO_GPU_HELP, NoGpuError
from models.handlers import as_rows, read_bytes

CUDA = 'CUDAExecutionProvider'
CPU = 'CPUExecutionProvider'
_FLOATS = {'tensor(float)': np.float32, 'tensor(double)': np.float64, 'tensor(float16)': np.float16}


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

  def __init__(self, path: str, outputs, device: str = 'auto'):
    import onnxruntime as ort
    if device == 'gpu':
      require_gpu()
    providers = [CPU] if device == 'cpu' or CUDA not in ort.get_available_providers() else [CUDA, CPU]
    options = ort.SessionOptions()
    # Between calls onnxruntime's threads spin waiting for work by default; in a Beam worker they
    # would spin against the reading, feature and writing threads on the same cores.
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    self._session = ort.InferenceSession(read_bytes(path), options, providers=providers)
    if device == 'gpu' and CUDA not in self._session.get_providers():
      # onnxruntime-gpu falls back to the CPU when CUDA cannot start (no driver, no GPU).
      raise NoGpuError(f'--device=gpu, but onnxruntime could not start its CUDA provider on this machine. '
                       f'{NO_GPU_HELP}')
    self._device = 'cuda' if CUDA in self._session.get_providers() else 'cpu'
    inputs = self._session.get_inputs()
    if len(inputs) != 1 or inputs[0].type not in _FLOATS:
      raise ValueError(f'the ONNX model {path} takes {[(i.name, i.type) for i in inputs]}; expected one '
                       'float matrix of features')
    self._input = inputs[0].name
    self._dtype = _FLOATS[inputs[0].type]
    self._input_width = _width(inputs[0].shape)
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

  def predict(self, features: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(features, dtype=self._dtype)
    out, = self._session.run([self._output], {self._input: x})
    return as_rows(out, self._outputs, 'ONNX model')
