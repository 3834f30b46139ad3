"""What every model format's Beam `ModelHandler` shares: whole batches of model input per element.

Beam's own handlers batch one example per row. Ours treat each element as a
batch of many rows (a feature matrix, a table's columns or named tensors, as the
bundle's input contract says: `models.inputs`), so `RunInference` batches by rows,
not elements.
`MatrixModelHandler` holds what every format shares (row batching, one model
copy shared across processes, the row-by-row retry, the check for non-finite
outputs); each framework's sibling module (`tensorflow.py`, `onnx.py`, ...)
only loads its model and predicts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Iterable, Optional, Protocol, Sequence

import numpy as np
from models.lean_imports import KeyedModelHandler, ModelHandler, PredictionResult

from models.inputs import InputContract, ModelInput, concat, input_bytes, take_rows
from models.inputs import num_rows as input_rows

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
  """What every format's loaded model offers: one call per batch of model input.

  When the model is shared across processes, callers hold a proxy that
  forwards method calls only; `predict` is the only call made per batch.
  """

  def predict(self, features: ModelInput) -> np.ndarray:
    """A batch of `rows` rows in (a matrix, a table, named tensors), (rows, outputs) out."""


def available_cores() -> int:
  """The cores this process may run on (its CPU affinity, which a container's cpuset limits too)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def model_threads(requested: Optional[int], processes: Optional[int] = None, *, spare_core: bool = True) -> int:
  """Threads for the model's own pool: `--model_threads`, or the cores each worker process owns.

  A framework's pool sized to the whole machine (OpenMP's and onnxruntime's default) fights the
  other worker processes, and the job's reading and writing, for the same cores: one 65,536-row
  HistGradientBoosting call took 1,063 ms with OpenMP's default threads and 178 ms with one.
  `processes` is how many worker processes share the machine's cores; None means one per core,
  as on Dataflow. A process that owns several cores keeps one for the job's own reading, features
  and writing, which run beside the model: on 2 shared cores the churn Pipeline's run went from
  1.13× its raw loop with two threads to 1.42× with one (docs/performance.md).
  An image or text model (`spare_core` False) takes every core its process owns: its convolutions or
  attention dwarf the job's own work, and the decoding or tokenising beside it runs on threads outside
  the GIL that wait while the model computes; on 2 cores a ResNet-18 over JPEGs went from 0.69× a
  DataLoader loop with one thread to 0.92× with two (docs/performance.md, Images).
  """
  if requested:
    return requested
  owned = available_cores() // (processes or available_cores())
  return max(1, owned - 1 if owned > 1 and spare_core else owned)


# A model's input types, as frameworks name them, and the table column type that feeds each.
_COLUMN_TYPES = {'string': 'string', 'double': 'float64', 'float64': 'float64', 'float': 'float32',
                 'float32': 'float32'}


def check_named_inputs(label: str, path: str, model_inputs: dict[str, str], inputs: InputContract) -> None:
  """Raises ValueError, saying what to write in inputs.json, unless it names exactly the model's inputs.

  `model_inputs` maps each input the model takes by name to its type as the framework says it
  (e.g. `tensor(string)`). A model with one input takes a matrix or, by name, one tensor or column.
  """
  def example() -> str:
    columns = [{'name': n, 'dtype': next((v for k, v in _COLUMN_TYPES.items() if k in t.lower()), 'float64')}
               for n, t in model_inputs.items()]
    return json.dumps({'shape': 'table', 'columns': columns})

  described = ', '.join(f'{n} ({t})' for n, t in model_inputs.items())
  if inputs.shape == 'matrix':
    if len(model_inputs) > 1:
      raise ValueError(f'the {label} {path} takes {len(model_inputs)} named inputs ({described}), not one matrix; '
                       f'declare them in inputs.json, e.g. {example()}')
    return
  kind = 'column' if inputs.shape == 'table' else 'tensor'
  missing = [n for n in model_inputs if n not in inputs.names]
  if missing:
    raise ValueError(f'the {label} {path} takes {", ".join(f"{n} ({model_inputs[n]})" for n in missing)}, which '
                     f'inputs.json declares no {kind} for (it declares {", ".join(inputs.names)}); name each input '
                     f'of the model, e.g. {example()}')
  extra = [n for n in inputs.names if n not in model_inputs]
  if extra:
    raise ValueError(f'inputs.json declares {", ".join(extra)}, which the {label} {path} does not take (it takes '
                     f'{described}); remove {"them" if len(extra) > 1 else "it"}')


def predict_row_by_row(model: Predictor, features: ModelInput) -> tuple[np.ndarray, dict[int, str]]:
  """Predicts one row at a time, so one poisonous row is rejected alone."""
  rows: list[Optional[np.ndarray]] = []
  errors: dict[int, str] = {}
  n = input_rows(features)
  for i in range(n):
    try:
      rows.append(model.predict(take_rows(features, i, i + 1))[0])
    except Exception as e:  # pylint: disable=broad-except
      rows.append(None)
      errors[i] = error_text(e)
  width = next((r.shape[0] for r in rows if r is not None), 1)
  outputs = np.full((n, width), np.nan, dtype=np.float32)
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
  return {int(i): f'ValueError: the model returned non-finite values {_shown(outputs[i])} for this row'
          for i in np.flatnonzero(~finite) if int(i) not in errors}


def same_shape(batch: Sequence[ModelInput]) -> list[list[int]]:
  """Indices of the elements whose tensors stack, grouped (one group unless named tensors differ past
  their rows: images of different sizes); empty for no elements, which Beam's BatchElements can emit."""
  groups: dict[Any, list[int]] = {}
  for i, element in enumerate(batch):
    shape = tuple((n, a.shape[1:], a.dtype.str) for n, a in element.items()) if isinstance(element, dict) else ()
    groups.setdefault(shape, []).append(i)
  return list(groups.values())


def _shown(values: np.ndarray, most: int = 8) -> str:
  """A row of outputs for a dead letter's reason: all of a few scores; of an embedding's hundreds, where the
  non-finite ones are and the first few."""
  if len(values) <= most:
    return str(values.tolist())
  bad = np.flatnonzero(~np.isfinite(values))
  return (f'at {len(bad)} of {len(values)} positions ({", ".join(map(str, bad[:most].tolist()))}'
          f'{", ..." if len(bad) > most else ""}), first values {values[:most].tolist()} ...')


def num_rows(element: Any) -> int:
  """Rows in a batch of model input, or in a keyed `(key, batch)` element."""
  return input_rows(element[1] if isinstance(element, tuple) else element)


def padded_tokens(element: Any) -> int:
  """What a batch of token tensors costs the model, rows × tokens (its first tensor's first two
  dimensions), of a batch or a keyed `(key, batch)` element."""
  tensors = element[1] if isinstance(element, tuple) else element
  shape = next(iter(tensors.values())).shape
  return int(shape[0] * (shape[1] if len(shape) > 1 else 1))


class MatrixModelHandler(ModelHandler[ModelInput, PredictionResult, Any]):
  """What every model format shares: batches of many rows in, a row of outputs per row out.

  A batch is a feature matrix, a table's columns or named tensors (`models.inputs`).
  A subclass only says how to load its model (`load_model`, returning an
  object with `predict(batch) -> matrix`); batching by rows, one model copy
  per machine, the row-by-row retry and the non-finite check are here.

  Args:
    model_uri: the model file or directory, local or gs://.
    min_batch_rows, max_batch_rows: bounds on rows per model call. Elements
      are whole batches, so `RunInference` packs them up to these row counts.
    share_across_processes: load one copy per worker machine, shared by all
      its SDK processes (one copy per GPU), instead of one per process.
    device: 'gpu' fails at load when the framework sees no GPU, 'cpu' keeps
      the model off any GPU, 'auto' uses a GPU when there is one.
    threads: the model's own thread pool (`model_threads`); None sizes it to the
      cores each of `worker_processes` owns.
    worker_processes: worker processes sharing a machine's cores; None: one per core.
    spare_core: keep one of a process's cores from the model for the job's own work (`model_threads`).
    max_batch_tokens: for a text model, batch by padded tokens (rows × tokens) instead of rows, at most
      this many per model call: elements of the same length are packed only while they fit.
  """

  def __init__(self, model_uri: str, *, min_batch_rows: int = 1, max_batch_rows: int = 8192,
               share_across_processes: bool = True, device: str = 'auto', threads: Optional[int] = None,
               worker_processes: Optional[int] = None, spare_core: bool = True,
               max_batch_tokens: Optional[int] = None):
    if max_batch_tokens is None:
      super().__init__(min_batch_size=min_batch_rows, max_batch_size=max_batch_rows, element_size_fn=num_rows)
    else:  # each element is already a model call's worth of tokens (transforms.text.tokens)
      super().__init__(min_batch_size=1, max_batch_size=max_batch_tokens, element_size_fn=padded_tokens)
    self._model_uri = model_uri
    self._share_across_processes = share_across_processes
    self._device = device
    self._threads = threads
    self._worker_processes = worker_processes
    self._spare_core = spare_core

  def threads(self) -> int:
    """The model's threads where it loads (on the worker: its cores are what count)."""
    threads = model_threads(self._threads, self._worker_processes, spare_core=self._spare_core)
    logging.info('the model runs %d thread(s) (%s)', threads,
                 '--model_threads' if self._threads else f'{available_cores()} cores, '
                 f'{self._worker_processes or "one per core"} worker process(es)',
                 extra={'on_console': False})  # the manifest records it; the console keeps to the run's story
    return threads

  @property
  def model_uri(self) -> str:
    return self._model_uri

  def run_inference(self, batch: Sequence[ModelInput], model: Predictor,
                    inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
    """Runs the model once over all matrices in `batch` and splits the result back.

    A batch the model fails on is retried row by row, here rather than in a
    second RunInference step: joining a retry branch back to the main one
    needs a Flatten, which the DirectRunner materialises (every prediction
    held in memory and pickled once more). Rows the model answers with NaN
    or infinity fail alone, like rows it raises on.

    Args:
      batch: batches of model input, one per element.
      model: the loaded predictor (or its cross-process proxy).
      inference_args: unused; the models take only the features.

    Returns:
      One `PredictionResult` per matrix, whose `inference` has a row per input
      row, or is a `RowFailures` when the model failed on some of its rows.
    """
    del inference_args
    results = [None] * len(batch)
    for group in same_shape(batch):  # images of different sizes never share a model call
      for i, result in zip(group, self._predict_together([batch[i] for i in group], model)):
        results[i] = result
    return results

  def _predict_together(self, batch: Sequence[ModelInput], model: Predictor) -> list[PredictionResult]:
    """One model call over elements that stack (the row-by-row retry when it fails), split back."""
    features = concat(batch)
    try:
      outputs, errors = model.predict(features), {}
    except Exception:  # pylint: disable=broad-except  # frameworks raise many types; each row is retried below.
      outputs, errors = predict_row_by_row(model, features)
    errors.update(_non_finite_rows(outputs, errors))
    results, start = [], 0
    for matrix in batch:
      end = start + input_rows(matrix)
      failed = {i - start: e for i, e in errors.items() if start <= i < end}
      inference = RowFailures(outputs[start:end], failed) if failed else outputs[start:end]
      results.append(PredictionResult(matrix, inference, self._model_uri))
      start = end
    return results

  def get_num_bytes(self, batch: Sequence[ModelInput]) -> int:
    # The default pickles the whole batch just to measure it.
    return sum(input_bytes(m) for m in batch)

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
