"""XGBoost boosters in XGBoost's own JSON or UBJSON model format (`booster.save_model('model.ubj')`).

Called with `inplace_predict` on the feature matrix (no DMatrix copy). A
classifier needs an objective that returns probabilities (`multi:softprob`,
`binary:logistic`); a regressor returns its score.
"""

from __future__ import annotations

import json
import warnings
from typing import Optional

import numpy as np

from models.handlers.base import NO_GPU_HELP, NoGpuError
from models.handlers import as_rows, read_bytes

PROBABILITY_OBJECTIVES = ('multi:softprob', 'binary:logistic', 'reg:logistic')


def _uses_cuda(booster) -> bool:
  """Whether the booster really runs on CUDA: XGBoost falls back to the CPU, with a warning, when no GPU is visible."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    booster.set_param({'device': 'cuda'})
    booster.inplace_predict(np.zeros((1, booster.num_features()), np.float32), validate_features=False)
  return json.loads(booster.save_config())['learner']['generic_param']['device'].startswith('cuda')


def require_gpu() -> None:
  import xgboost
  if not xgboost.build_info().get('USE_CUDA'):
    raise NoGpuError(f'--device=gpu, but XGBoost {xgboost.__version__} is built without CUDA. {NO_GPU_HELP}')
  probe = xgboost.train({}, xgboost.DMatrix(np.zeros((2, 1), np.float32), label=[0.0, 1.0]), 1)
  if not _uses_cuda(probe):
    raise NoGpuError(f'--device=gpu, but XGBoost {xgboost.__version__} sees no GPU on this machine. {NO_GPU_HELP}')


class Predictor:
  """An XGBoost booster on the CPU or a CUDA device behind `predict`."""

  def __init__(self, path: str, outputs, device: str = 'auto', inputs=None, threads: Optional[int] = None):
    import xgboost
    del inputs  # always one float32 matrix (models.bundle.FORMAT_SHAPES)
    self._booster = xgboost.Booster()
    self._booster.load_model(bytearray(read_bytes(path)))
    if threads:
      self._booster.set_param({'nthread': threads})
    config = json.loads(self._booster.save_config())['learner']
    objective = config['objective']['name']
    if outputs.kind == 'classification' and objective not in PROBABILITY_OBJECTIVES:
      raise ValueError(f'the XGBoost model {path} has objective {objective}, which does not return class '
                       f'probabilities; train it with one of {", ".join(PROBABILITY_OBJECTIVES)}')
    if device == 'gpu':
      require_gpu()
    on_gpu = device != 'cpu' and xgboost.build_info().get('USE_CUDA') and _uses_cuda(self._booster)
    self._booster.set_param({'device': 'cuda' if on_gpu else 'cpu'})
    self._device = 'cuda' if on_gpu else 'cpu'
    self._outputs = outputs

  @property
  def input_width(self) -> Optional[int]:
    return self._booster.num_features() or None

  @property
  def input_dtype(self) -> str:
    return 'float32'  # XGBoost bins and compares in float32

  @property
  def device(self) -> str:
    return self._device

  def predict(self, features: np.ndarray) -> np.ndarray:
    if np.isinf(features).any():
      # XGBoost's DMatrix refuses infinity; inplace_predict would read it as an ordinary large value.
      raise ValueError('Input data contains `inf` or a value too large (a feature overflowed float32)')
    out = self._booster.inplace_predict(np.ascontiguousarray(features, dtype=np.float32), validate_features=False)
    return as_rows(out, self._outputs, 'XGBoost model')
