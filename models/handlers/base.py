"""What every model format's Beam `ModelHandler` shares: whole feature matrices per element.

Beam's own handlers batch one example per row. Ours treat each element as a
matrix of many rows, so `RunInference` batches by rows, not elements.
`MatrixModelHandler` holds what every format shares (row batching, one model
copy shared across processes, the row-by-row retry, the check for non-finite
outputs); each framework's sibling module (`tensorflow.py`, `onnx.py`, ...)
only loads its model and predicts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Optional, Protocol, Sequence

import numpy as np
from models.lean_imports import KeyedModelHandler, ModelHandler, PredictionResult

NO_GPU_HELP = (
    'On Dataflow, give the workers a GPU: --dataflow_service_options='
    '"worker_accelerator=type:GPU_TYPE;count:1;install-nvidia-driver", a machine type that takes '
    'that GPU, and the project image as --sdk_container_image (./launch.sh dataflow does all three). '
    'Elsewhere, run on a machine with an NVIDIA driver or pass --device=auto or --device=cpu.')


class NoGpuError(RuntimeError):
  """GPU inference was asked for where the model's framework sees no GPU."""


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
