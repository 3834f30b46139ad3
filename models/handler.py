"""Beam `ModelHandler`s that take whole feature matrices: the shared part, and TensorFlow's.

Beam's `TFModelHandlerNumpy` loads through `keras.models.load_model`, which
Keras 3 refuses for SavedModels, and batches one example per row. Our handlers
treat each element as a matrix of many rows, so `RunInference` batches by rows,
not elements. `MatrixModelHandler` holds what every model format shares (row
batching, one model copy shared across processes, the row-by-row retry, the
check for non-finite outputs); `SavedModelHandler` loads a TensorFlow
SavedModel with `tf.saved_model.load` and calls its serving signature. The
other formats live in `models/handlers/`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterable, Optional, Protocol, Sequence

import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult

NO_GPU_HELP = (
    'On Dataflow, give the workers a GPU: --dataflow_service_options='
    '"worker_accelerator=type:GPU_TYPE;count:1;install-nvidia-driver", a machine type that takes '
    'that GPU, and the project image as --sdk_container_image (./launch.sh dataflow does all three). '
    'Elsewhere, run on a machine with an NVIDIA driver or pass --device=auto or --device=cpu.')


class NoGpuError(RuntimeError):
  """GPU inference was asked for where the model's framework sees no GPU."""


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


@dataclasses.dataclass(frozen=True)
class RowFailures:
  """Model output for a matrix the model failed on in part.

  `outputs` has a row per input row (NaN where the model failed); `errors`
  maps each failed row's index in the matrix to what the model raised.
  """
  outputs: np.ndarray
  errors: dict[int, str]


def error_text(error) -> str:
  """`Type: message` of a failure, without stack frames (which name machine paths).

  Beam's exception handling passes `(type, repr, formatted traceback lines)`,
  whose last line holds the message; TensorFlow messages also list frames.
  """
  if isinstance(error, BaseException):
    name, text = type(error).__name__, str(error)
  else:
    exc_type, exc_repr, lines = error
    name = getattr(exc_type, '__name__', str(exc_type))
    text = lines[-1].split(': ', 1)[-1] if lines else exc_repr
  kept = [line.strip() for line in text.splitlines() if line.strip() and not line[:1].isspace()]
  return f'{name}: {" ".join(kept)}'[:500]


class Predictor(Protocol):
  """What every format's loaded model offers: one call per feature matrix.

  When the model is shared across processes, callers hold a proxy that
  forwards method calls only; `predict` is the only call made per batch.
  """

  def predict(self, features: np.ndarray) -> np.ndarray:
    """(rows, features) float32 in, (rows, outputs) out."""


def predict_row_by_row(model: Predictor, features: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
  """Predicts one row at a time, so one poisonous row is rejected alone."""
  rows: list[Optional[np.ndarray]] = []
  errors: dict[int, str] = {}
  for i in range(features.shape[0]):
    try:
      rows.append(model.predict(features[i:i + 1])[0])
    except Exception as e:  # pylint: disable=broad-except
      rows.append(None)
      errors[i] = error_text(e)
  width = next((r.shape[0] for r in rows if r is not None), 1)
  outputs = np.full((features.shape[0], width), np.nan, dtype=np.float32)
  for i, row in enumerate(rows):
    if row is not None:
      outputs[i] = row
  return outputs, errors


def _non_finite_rows(outputs: np.ndarray, errors: dict[int, str]) -> dict[int, str]:
  """Rows whose outputs are NaN or infinite and did not already fail: a model's silent failure.

  A network fed an overflowing feature answers NaN instead of raising; writing
  that as a prediction (argmax of NaN is class 0) would hide it.
  """
  finite = np.isfinite(outputs).all(axis=1) if outputs.size else np.ones(len(outputs), dtype=bool)
  if finite.all():
    return {}
  return {int(i): f'ValueError: the model returned non-finite values {outputs[i].tolist()} for this row'
          for i in np.flatnonzero(~finite) if int(i) not in errors}


def num_rows(element: Any) -> int:
  """Rows in a feature matrix, or in a keyed `(key, matrix)` element."""
  matrix = element[1] if isinstance(element, tuple) else element
  return matrix.shape[0]


class MatrixModelHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
  """What every model format shares: feature matrices of many rows in, a row of outputs per row out.

  A subclass only says how to load its model (`load_model`, returning an
  object with `predict(matrix) -> matrix`); batching by rows, one model copy
  per machine, the row-by-row retry and the non-finite check are here.

  Args:
    model_uri: the model file or directory, local or gs://.
    min_batch_rows, max_batch_rows: bounds on rows per model call. Elements
      are whole matrices, so `RunInference` packs them up to these row counts.
    share_across_processes: load one copy per worker machine, shared by all
      its SDK processes (one copy per GPU), instead of one per process.
    device: 'gpu' fails at load when the framework sees no GPU, 'cpu' keeps
      the model off any GPU, 'auto' uses a GPU when there is one.
  """

  def __init__(self, model_uri: str, *, min_batch_rows: int = 1, max_batch_rows: int = 8192,
               share_across_processes: bool = True, device: str = 'auto'):
    super().__init__(min_batch_size=min_batch_rows, max_batch_size=max_batch_rows, element_size_fn=num_rows)
    self._model_uri = model_uri
    self._share_across_processes = share_across_processes
    self._device = device

  @property
  def model_uri(self) -> str:
    return self._model_uri

  def run_inference(self, batch: Sequence[np.ndarray], model: Predictor,
                    inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
    """Runs the model once over all matrices in `batch` and splits the result back.

    A batch the model fails on is retried row by row, here rather than in a
    second RunInference step: joining a retry branch back to the main one
    needs a Flatten, which the DirectRunner materialises (every prediction
    held in memory and pickled once more). Rows the model answers with NaN
    or infinity fail alone, like rows it raises on.

    Args:
      batch: feature matrices, one per element.
      model: the loaded predictor (or its cross-process proxy).
      inference_args: unused; the models take only the features.

    Returns:
      One `PredictionResult` per matrix, whose `inference` has a row per input
      row, or is a `RowFailures` when the model failed on some of its rows.
    """
    del inference_args
    if not batch:  # Beam's BatchElements can emit one; see KeyedRowsHandler
      return []
    features = batch[0] if len(batch) == 1 else np.concatenate(batch)
    try:
      outputs, errors = model.predict(features), {}
    except Exception:  # pylint: disable=broad-except  # frameworks raise many types; each row is retried below.
      outputs, errors = predict_row_by_row(model, features)
    errors.update(_non_finite_rows(outputs, errors))
    results, start = [], 0
    for matrix in batch:
      end = start + matrix.shape[0]
      failed = {i - start: e for i, e in errors.items() if start <= i < end}
      inference = RowFailures(outputs[start:end], failed) if failed else outputs[start:end]
      results.append(PredictionResult(matrix, inference, self._model_uri))
      start = end
    return results

  def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
    # The default pickles the whole batch just to measure it.
    return sum(m.nbytes for m in batch)

  def get_metrics_namespace(self) -> str:
    return 'batch_inference'

  def share_model_across_processes(self) -> bool:
    return self._share_across_processes


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


class KeyedRowsHandler(KeyedModelHandler):
  """A `KeyedModelHandler` that accepts the empty batches Beam's batching emits.

  `BatchElements` (Beam 2.77) flushes its current batch before adding an
  element that would overflow the target size, even when that batch is empty,
  so an element holding more rows than the target arrives after an empty
  batch. `KeyedModelHandler` cannot unzip an empty batch and fails it.
  Keys are measured by their Arrow size rather than pickled.
  """

  def run_inference(self, batch, model, inference_args=None):
    return super().run_inference(batch, model, inference_args) if batch else []

  def get_num_bytes(self, batch) -> int:
    # The base class pickles the keys to measure them; ours are whole RecordBatches.
    return sum(getattr(key, 'nbytes', 0) for key, _ in batch) + self._unkeyed.get_num_bytes(
        [example for _, example in batch])
