"""scikit-learn estimators saved with skops, which loads only the types on an allow-list and runs no code.

A pickle (`pickle`, `joblib`, `cloudpickle`) runs whatever code it holds when
loaded, so it is refused, with how to convert it once where it is trusted.
skops trusts scikit-learn's, NumPy's and SciPy's own types; any other type
in the file must be listed in `trusted_types` (the import's
`--trusted_types`), which the bundle keeps in metadata.json.
"""

from __future__ import annotations

import io
import zipfile
from typing import Optional, Sequence

import numpy as np

from models.handlers.base import NoGpuError
from models.handlers import as_rows, read_bytes
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

  def __init__(self, path: str, outputs, device: str = 'auto', trusted_types: Sequence[str] = ()):
    if device == 'gpu':
      require_gpu()
    data = read_bytes(path)
    check_not_pickle(data, path)
    refused = untrusted_types(data, trusted_types)
    if refused:
      raise ValueError(f'{path} holds types skops does not trust: {refused}; if you trust them, import the model '
                       'again with --trusted_types ' + ','.join(refused))
    self._model = skops_io().loads(data, trusted=list(trusted_types) or None)
    if outputs.kind == 'classification' and not hasattr(self._model, 'predict_proba'):
      raise ValueError(f'the scikit-learn model {path} ({type(self._model).__name__}) has no predict_proba; '
                       'a classifier must return class probabilities')
    self._predict = self._model.predict_proba if outputs.kind == 'classification' else self._model.predict
    self._outputs = outputs

  @property
  def input_width(self) -> Optional[int]:
    return getattr(self._model, 'n_features_in_', None)

  @property
  def device(self) -> str:
    return 'cpu'

  def predict(self, features: np.ndarray) -> np.ndarray:
    return as_rows(self._predict(features), self._outputs, 'scikit-learn model')
