"""TensorFlow SavedModels through `tf.saved_model.load`, as a `MatrixModelHandler`.

Beam's `TFModelHandlerNumpy` loads through `keras.models.load_model`, which
Keras 3 refuses for SavedModels, and batches one example per row.
`SavedModelHandler` loads a SavedModel with `tf.saved_model.load` and calls its
serving signature on whole feature matrices, or, declared in inputs.json, on
several named inputs (a table's columns, named tensors) by the signature's names; batching, the shared model and
the row-by-row retry are `models.handlers.base.MatrixModelHandler`'s.
TensorFlow is imported only when a model loads.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import numpy as np

import pyarrow as pa

from models.handlers.base import NO_GPU_HELP, MatrixModelHandler, NoGpuError, check_named_inputs
from models.inputs import MATRIX, InputContract, numpy_column

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
               device: str = 'auto', inputs: InputContract = MATRIX, threads: Optional[int] = None):
    import tensorflow as tf
    self._tf = tf
    if threads:
      try:  # only before TensorFlow's runtime starts: the first model a process loads sets it
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
      except RuntimeError:
        pass
    self._device = device
    if device == 'gpu':
      require_gpu()
    with _device_scope(tf, device):
      self._model = tf.saved_model.load(path)
    if signature not in self._model.signatures:
      raise ValueError(f'SavedModel {path} has no signature {signature!r}; '
                       f'it has {sorted(self._model.signatures)}')
    self._fn = self._model.signatures[signature]
    specs = self._fn.structured_input_signature[1]
    check_named_inputs('SavedModel', f'{path} (signature {signature!r})',
                       {n: f'{s.dtype.name} {s.shape}' for n, s in specs.items()}, inputs)
    self._specs = specs
    self._named = inputs.shape != 'matrix'
    (self._input_name, spec), *_ = specs.items()
    self._input_width = spec.shape[-1] if spec.shape.rank == 2 and not self._named else None
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
  def input_dtype(self) -> str:
    dtype = self._specs[self._input_name].dtype
    return dtype.name if dtype.is_floating else 'float32'

  @property
  def output_width(self) -> Optional[int]:
    return self._output_width

  def _tensor(self, name: str, values):
    spec = self._specs[name]
    if isinstance(values, pa.Array):  # a table's column: [rows] or [rows, 1], as the signature takes it
      values = numpy_column(values, np.dtype(object) if spec.dtype == self._tf.string else np.dtype(np.float64))
      values = values.reshape(-1, 1) if spec.shape.rank == 2 else values
    return self._tf.constant(values, dtype=spec.dtype)

  def predict(self, features) -> np.ndarray:
    """Returns the model output for a batch (a matrix, a table, named tensors) as (rows, outputs)."""
    if isinstance(features, pa.RecordBatch):
      feeds = {n: self._tensor(n, features.column(n)) for n in self._specs}
    elif isinstance(features, dict):
      feeds = {n: self._tensor(n, features[n]) for n in self._specs}
    else:
      feeds = {self._input_name: self._tf.constant(features, dtype=self._specs[self._input_name].dtype)}
    with _device_scope(self._tf, self._device):
      result = self._fn(**feeds)
    out = result[self._output_key].numpy()
    # An explicit width: reshape(rows, -1) cannot size a 0-row result.
    return out.reshape(len(out), int(np.prod(out.shape[1:])))


class SavedModelHandler(MatrixModelHandler):
  """Runs a SavedModel's signature over feature matrices of many rows each.

  Args:
    model_uri: the SavedModel directory, local or gs://.
    signature: the signature to call.
    output_key: which output of the signature to return; None when it has one.
    inputs: the bundle's input contract: what each batch holds.
    min_batch_rows, max_batch_rows, share_across_processes, device, threads, worker_processes: see
      `MatrixModelHandler`; 'gpu' fails where TensorFlow sees no GPU.
  """

  def __init__(self, model_uri: str, *, signature: str = 'serving_default', output_key: Optional[str] = None,
               inputs: InputContract = MATRIX, **settings):
    super().__init__(model_uri, **settings)
    self._signature = signature
    self._output_key = output_key
    self._inputs = inputs

  def load_model(self) -> SavedModelPredictor:
    try:
      return SavedModelPredictor(self._model_uri, self._signature, self._output_key, self._device,
                                 inputs=self._inputs, threads=self.threads())
    except NoGpuError:
      raise  # already says what to fix
    except Exception as e:  # TF raises many types for a corrupt or changed model; say which model.
      raise RuntimeError(f'cannot load the SavedModel {self._model_uri} on a worker: {e}') from e
