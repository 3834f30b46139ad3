"""TensorFlow SavedModels through `tf.saved_model.load`, as a `MatrixModelHandler`.

Beam's `TFModelHandlerNumpy` loads through `keras.models.load_model`, which
Keras 3 refuses for SavedModels, and batches one example per row.
`SavedModelHandler` loads a SavedModel with `tf.saved_model.load` and calls its
serving signature on whole feature matrices; batching, the shared model and
the row-by-row retry are `models.handlers.base.MatrixModelHandler`'s.
TensorFlow is imported only when a model loads.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import numpy as np

from models.handlers.base import NO_GPU_HELP, MatrixModelHandler, NoGpuError

def require_gpu() -> None:
  """Raises NoGpuError, saying what to do, when TensorFlow sees no GPU here.

  Runs where the model loads, so a GPU job on a worker without a GPU fails at
  start-up with this message instead of silently predicting on the CPU.
  """
  import tensorflow as tf
  if not tf.config.list_physical_devices('GPU'):
    cuda = 'with' if tf.test.is_built_with_cuda() else 'without'
    raise NoGpuError(f'--device=gpu, but TensorFlow {tf.__version__} (built {cuda} CUDA) sees no GPU on '
                       f'this machine. {NO_GPU_HELP}')


# TensorFlow device scopes per --device value; `auto` lets TensorFlow place ops.
_DEVICE_SCOPES = {'cpu': '/CPU:0', 'gpu': '/GPU:0'}


def _device_scope(tf, device: str):
  scope = _DEVICE_SCOPES.get(device)
  return tf.device(scope) if scope else contextlib.nullcontext()


class SavedModelPredictor:
  """A loaded SavedModel behind one `predict` method.

  When the model is shared across processes, callers hold a proxy that
  forwards method calls only, so everything goes through methods.
  """

  def __init__(self, path: str, signature: str = 'serving_default', output_key: Optional[str] = None,
               device: str = 'auto'):
    import tensorflow as tf
    self._tf = tf
    self._device = device
    if device == 'gpu':
      require_gpu()
    with _device_scope(tf, device):
      self._model = tf.saved_model.load(path)
    if signature not in self._model.signatures:
      raise ValueError(f'SavedModel {path} has no signature {signature!r}; '
                       f'it has {sorted(self._model.signatures)}')
    self._fn = self._model.signatures[signature]
    inputs = self._fn.structured_input_signature[1]
    if len(inputs) != 1:
      raise ValueError(f'signature {signature!r} of {path} takes {sorted(inputs)}; '
                       'expected one float32 matrix of features')
    (self._input_name, spec), = inputs.items()
    self._input_width = spec.shape[-1] if spec.shape.rank == 2 else None
    outputs = self._fn.structured_outputs
    if output_key is None:
      if len(outputs) != 1:
        raise ValueError(f'signature {signature!r} of {path} returns {sorted(outputs)}; '
                         'name the one to use as output_key in outputs.json')
      output_key = next(iter(outputs))
    if output_key not in outputs:
      raise ValueError(f'signature {signature!r} of {path} has no output {output_key!r}; it has {sorted(outputs)}')
    self._output_key = output_key
    shape = outputs[output_key].shape
    self._output_width = (shape[-1] if shape.rank == 2 else 1) if shape.rank is not None else None

  @property
  def input_width(self) -> Optional[int]:
    return self._input_width

  @property
  def device(self) -> str:
    """Where the model runs: TensorFlow's device for --device, or `auto` (TensorFlow places it)."""
    return _DEVICE_SCOPES.get(self._device, 'auto')

  @property
  def output_width(self) -> Optional[int]:
    return self._output_width

  def predict(self, features: np.ndarray) -> np.ndarray:
    """Returns the model output for a (rows, features) float32 matrix as (rows, outputs)."""
    with _device_scope(self._tf, self._device):
      result = self._fn(**{self._input_name: self._tf.constant(features, dtype=self._tf.float32)})
    out = result[self._output_key].numpy()
    # An explicit width: reshape(rows, -1) cannot size a 0-row result.
    return out.reshape(len(out), int(np.prod(out.shape[1:])))


class SavedModelHandler(MatrixModelHandler):
  """Runs a SavedModel's signature over feature matrices of many rows each.

  Args:
    model_uri: the SavedModel directory, local or gs://.
    signature: the signature to call.
    output_key: which output of the signature to return; None when it has one.
    min_batch_rows, max_batch_rows, share_across_processes, device: see
      `MatrixModelHandler`; 'gpu' fails where TensorFlow sees no GPU.
  """

  def __init__(self, model_uri: str, *, signature: str = 'serving_default', output_key: Optional[str] = None,
               min_batch_rows: int = 1, max_batch_rows: int = 8192, share_across_processes: bool = True,
               device: str = 'auto'):
    super().__init__(model_uri, min_batch_rows=min_batch_rows, max_batch_rows=max_batch_rows,
                     share_across_processes=share_across_processes, device=device)
    self._signature = signature
    self._output_key = output_key

  def load_model(self) -> SavedModelPredictor:
    try:
      return SavedModelPredictor(self._model_uri, self._signature, self._output_key, self._device)
    except NoGpuError:
      raise  # already says what to fix
    except Exception as e:  # TF raises many types for a corrupt or changed model; say which model.
      raise RuntimeError(f'cannot load the SavedModel {self._model_uri} on a worker: {e}') from e
