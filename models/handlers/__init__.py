"""Model formats: one sibling module per framework (`tensorflow.py`, `onnx.py`, `pytorch.py`, `xgboost.py`,
`sklearn.py`), as Beam's `*_inference.py`, chosen by metadata.json's `format`.

Each format's module holds a predictor (the loaded model behind
`predict(batch) -> matrix`, where a batch is what the bundle's input contract
says: a matrix, a table or named tensors, `models.inputs`; with `input_width`,
`output_width` and `device`) and `require_gpu()`. Everything else, batching by rows, the shared model and
the row-by-row retry, is `models.handlers.base.MatrixModelHandler`'s, for every
format alike. A framework is imported only when a bundle of its format is
loaded, so each stays an optional extra (`pip install .[onnx]` and so on).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from typing import Any, Optional

import numpy as np
from apache_beam.io.filesystems import FileSystems

from models.handlers.base import MatrixModelHandler, NoGpuError
from models.inputs import MATRIX, InputContract
from transforms.text.entities import token_tags
from transforms.text.outputs import finish
from transforms.text.tokens import OFFSETS
from transforms.text.spec import TextSpec

from models.handlers.tensorflow import SavedModelHandler

SAVED_MODEL = 'saved_model'


@dataclasses.dataclass(frozen=True)
class Format:
  """A model format: where its model lies in a bundle, which module loads it, which extra installs it."""
  name: str
  label: str  # how messages name the model
  files: tuple[str, ...]  # the model's file names in a bundle, by how it was saved; the first is the default
  module: str
  extra: str  # pip install .[EXTRA]
  package: str  # the framework's import name


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format(SAVED_MODEL, 'SavedModel', ('saved_model',), 'models.handlers.tensorflow', 'tensorflow', 'tensorflow'),
    Format('onnx', 'ONNX model', ('model.onnx',), 'models.handlers.onnx', 'onnx', 'onnxruntime'),
    Format('torch', 'PyTorch model', ('model.pt2', 'model.torchscript.pt'), 'models.handlers.pytorch', 'torch',
           'torch'),
    Format('xgboost', 'XGBoost model', ('model.ubj', 'model.json'), 'models.handlers.xgboost', 'xgboost',
           'xgboost'),
    Format('sklearn', 'scikit-learn model', ('model.skops',), 'models.handlers.sklearn', 'sklearn', 'sklearn'),
)}


def get_format(name: str) -> Format:
  """The format named NAME; a ValueError naming the known ones otherwise."""
  if name not in FORMATS:
    raise ValueError(f'unknown model format {name!r}; known formats: {", ".join(FORMATS)}')
  return FORMATS[name]


def _module(fmt: Format):
  try:
    return importlib.import_module(fmt.module)
  except ImportError as e:
    raise ImportError(f'a {fmt.label} needs {fmt.package}, which is not installed here ({e}); '
                      f'install it with: pip install ".[{fmt.extra}]"') from e


def read_bytes(path: str) -> bytes:
  """A model file's bytes, local or gs:// (frameworks load from bytes, so any Beam file system works)."""
  with FileSystems.open(path) as f:
    return f.read()


def load_predictor(fmt: str, path: str, outputs, device: str = 'auto', options: Optional[dict[str, Any]] = None,
                   inputs: InputContract = MATRIX, threads: Optional[int] = None, text: Optional[TextSpec] = None):
  """Loads the model at `path` in format `fmt` as a predictor on `device` (auto, cpu or gpu), fed as `inputs`
  says, its own thread pool `threads` wide (None: the framework's default); a text model's output
  post-processed as its text.json says (`TextPredictor`)."""
  if fmt == SAVED_MODEL:
    from models.handlers.tensorflow import SavedModelPredictor
    return SavedModelPredictor(path, outputs.signature, outputs.output_key, device, inputs=inputs, threads=threads)
  predictor = _module(get_format(fmt)).Predictor(path, outputs, device=device, inputs=inputs, threads=threads,
                                                 **(options or {}))
  logging.info('loaded the %s %s on %s', get_format(fmt).label, path, predictor.device)
  return predictor if text is None else TextPredictor(predictor, text, outputs, get_format(fmt).label)


class TextPredictor:
  """A text model's predictor: the model's raw output for a call (logits, or last_hidden_state) made the
  answer outputs.json describes by text.json's softmax or pooling, given the call's attention mask; a token
  classifier's logits made each token's tag, probability and character span (`transforms.text.entities`).

  A wrapper rather than a step after RunInference: the mask is in the batch the model takes, and
  the row-by-row retry and the non-finite check then see the same rows the writer does.
  """

  def __init__(self, predictor, spec: TextSpec, outputs, label: str):
    self._predictor = predictor
    self._spec = spec
    self._outputs = outputs
    self._label = label

  # Widths the model check cannot read from a text model; it calls the model on two texts instead.
  input_width = output_width = None

  @property
  def device(self) -> str:
    return self._predictor.device

  def predict(self, features: dict[str, np.ndarray]) -> np.ndarray:
    features = dict(features)
    offsets = features.pop(OFFSETS, None)  # the tokens' spans, for a token classifier; no model input
    raw = self._predictor.model_output(features)
    mask = features[self._spec.name('attention_mask')]
    if self._outputs.kind == 'entities':  # a row of tags per text, made entities when the rows are written
      return token_tags(raw, mask, offsets, len(self._outputs.labels))
    return as_rows(finish(raw, mask, self._spec), self._outputs, self._label)


def require_gpu(fmt: str) -> None:
  """Raises NoGpuError, saying what to do, when format `fmt`'s framework sees no GPU here."""
  if fmt == SAVED_MODEL:
    from models.handlers.tensorflow import require_gpu as tf_require_gpu
    tf_require_gpu()
  else:
    _module(get_format(fmt)).require_gpu()


class BundleModelHandler(MatrixModelHandler):
  """A `MatrixModelHandler` for a model in any format of `FORMATS` but TensorFlow's.

  Holds only settings, so it pickles into the pipeline; the framework is
  imported where Beam loads the model (once per worker machine when shared).

  Args:
    model_uri: the model file, local or gs://.
    fmt: the format's name (metadata.json `format`).
    outputs: the bundle's outputs (a classifier's class count, a regressor's score).
    options: the format's load options from metadata.json (e.g. skops's trusted types).
    inputs: the bundle's input contract: what each batch holds.
    text: a text model's text.json: its calls batched by tokens, its output pooled or softmaxed.
    min_batch_rows, max_batch_rows, share_across_processes, device, threads, worker_processes: see
      `MatrixModelHandler`.
  """

  def __init__(self, model_uri: str, *, fmt: str, outputs, options: Optional[dict[str, Any]] = None,
               inputs: InputContract = MATRIX, text: Optional[TextSpec] = None, **settings: Any):
    if text is not None:
      settings['max_batch_tokens'] = text.tokens_per_batch
    super().__init__(model_uri, **settings)
    self._format = get_format(fmt)
    self._outputs = outputs
    self._options = dict(options or {})
    self._inputs = inputs
    self._text = text

  def load_model(self):
    try:
      return load_predictor(self._format.name, self._model_uri, self._outputs, self._device, self._options,
                            inputs=self._inputs, threads=self.threads(), text=self._text)
    except (NoGpuError, ImportError):
      raise  # already say what to fix
    except Exception as e:  # pylint: disable=broad-except  # frameworks raise many types for a corrupt model
      raise RuntimeError(f'cannot load the {self._format.label} {self._model_uri} on a worker: {e}') from e


def handler_for(bundle, **settings) -> MatrixModelHandler:
  """The handler for `bundle`'s format; `settings` are `MatrixModelHandler`'s."""
  if bundle.format == SAVED_MODEL:
    return SavedModelHandler(bundle.saved_model_path, signature=bundle.outputs.signature,
                             output_key=bundle.outputs.output_key, inputs=bundle.inputs, **settings)
  return BundleModelHandler(bundle.model_path, fmt=bundle.format, outputs=bundle.outputs,
                            options=bundle.load_options, inputs=bundle.inputs, text=bundle.text, **settings)


def as_rows(values: np.ndarray, outputs, label: str) -> np.ndarray:
  """A framework's answer as the (rows, outputs) float32 matrix the pipeline writes.

  A binary classifier that returns one probability per row (XGBoost's
  `binary:logistic`, a network with one sigmoid output) becomes the two
  columns `outputs.json` names: P(first class), P(second class).
  """
  values = np.asarray(values, dtype=np.float32)
  rows = values.shape[0] if values.ndim else 1
  values = values.reshape(rows, -1)
  if outputs.kind == 'classification' and outputs.width == 2 and values.shape[1] == 1:
    values = np.concatenate([1.0 - values, values], axis=1)
  if values.shape[1] != outputs.width:
    raise ValueError(f'the {label} returned {values.shape[1]} values per row; outputs.json describes '
                     f'{outputs.width}')
  return values

