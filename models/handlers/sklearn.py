"""scikit-learn estimators saved with skops, which loads only the types on an allow-list and runs no code.

A model fitted on a DataFrame (a whole Pipeline, a ColumnTransformer that picks
columns by name) takes a table (inputs.json): each batch is handed over as a
pandas DataFrame with the columns it was fitted on, nulls as pandas reads them.
A model fitted on a matrix takes the feature matrix in the float type the
bundle records (float64 by default: scikit-learn computes in float64).

A pickle (`pickle`, `joblib`, `cloudpickle`) runs whatever code it holds when
loaded, so it is refused, with how to convert it once where it is trusted.
skops trusts scikit-learn's, NumPy's and SciPy's own types; any other type
in the file must be listed in `trusted_types` (the import's `--trust`), which
the bundle keeps in metadata.json. OpenMP's threads (HistGradientBoosting,
k-means) are limited where the model loads (`threads`).
"""

from __future__ import annotations

import io
import zipfile
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

from models.handlers.base import NoGpuError, check_named_inputs
from models.handlers import as_rows, read_bytes
from models.inputs import MATRIX, InputContract
from models.lean_imports import skops_io

PICKLE_HELP = ('a pickle runs code when it is loaded, so it is not accepted; convert it once, where you trust it: '
               'python -c "import joblib, skops.io; skops.io.dump(joblib.load(\'model.pkl\'), \'model.skops\')"')


def require_gpu() -> None:
  raise NoGpuError('--device=gpu, but scikit-learn predicts on the CPU only; pass --device=cpu (or auto), or '
                   'convert the model to ONNX (skl2onnx) and run it with onnxruntime-gpu')


def check_not_pickle(data: bytes, path: str) -> None:
  """Raises ValueError, saying how to convert, unless `data` is a skops archive (a zip file)."""
  if not zipfile.is_zipfile(io.BytesIO(data)):
    raise ValueError(f'{path} is not a skops file; {PICKLE_HELP}')


def untrusted_types(data: bytes, trusted: Sequence[str] = ()) -> list[str]:
  """The types in a skops file that skops does not trust by default and `trusted` does not list."""
  return [t for t in skops_io().get_untrusted_types(data=data) if t not in set(trusted)]


class Predictor:
  """A skops-loaded estimator behind `predict`: `predict_proba` for a classifier, `predict` for a regressor."""

  def __init__(self, path: str, outputs, device: str = 'auto', trusted_types: Sequence[str] = (),
               inputs: InputContract = MATRIX, threads: Optional[int] = None):
    if device == 'gpu':
      require_gpu()
    if threads:
      from threadpoolctl import threadpool_limits
      # For the whole process the model is in: OpenMP's pool is global, and set per call it costs each call.
      self._limits = threadpool_limits(limits=threads)
    data = read_bytes(path)
    check_not_pickle(data, path)
    refused = untrusted_types(data, trusted_types)
    if refused:
      raise ValueError(f'{path} holds types skops does not trust: {refused}; if you trust them, import the model '
                       'again with --trust ' + ' '.join(refused))
    self._model = skops_io().loads(data, trusted=list(trusted_types) or None)
    names = getattr(self._model, 'feature_names_in_', None)
    self._columns = [str(n) for n in names] if names is not None else None
    if self._columns is not None or inputs.shape != 'matrix':
      fitted = {n: 'a DataFrame column' for n in self._columns or ()}
      if self._columns is None:
        raise ValueError(f'the scikit-learn model {path} ({type(self._model).__name__}) was fitted on a matrix, not '
                         'a DataFrame; it takes a matrix: drop inputs.json\'s table, or fit the model on a DataFrame')
      check_named_inputs('scikit-learn model', path, fitted, inputs)
    if outputs.kind == 'classification' and not hasattr(self._model, 'predict_proba'):
      raise ValueError(f'the scikit-learn model {path} ({type(self._model).__name__}) has no predict_proba; '
                       'a classifier must return class probabilities')
    self._predict = self._model.predict_proba if outputs.kind == 'classification' else self._model.predict
    self._outputs = outputs

  @property
  def input_width(self) -> Optional[int]:
    return getattr(self._model, 'n_features_in_', None)

  @property
  def input_dtype(self) -> str:
    """scikit-learn computes in float64 (a forest casts to float32 itself, as it did when fitted)."""
    return 'float64'

  @property
  def input_names(self) -> Optional[list[str]]:
    """The DataFrame columns the model was fitted on, in order; None for a matrix model."""
    return self._columns

  @property
  def device(self) -> str:
    return 'cpu'

  def predict(self, features) -> np.ndarray:
    if isinstance(features, pa.RecordBatch):  # a table: the columns, in the order the model was fitted on
      features = features.to_pandas()[self._columns]
    return as_rows(self._predict(features), self._outputs, 'scikit-learn model')
