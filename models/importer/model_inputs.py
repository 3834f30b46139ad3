"""What an imported model takes (its inputs.json), read from the model itself where it says.

A scikit-learn model fitted on a DataFrame (a whole Pipeline with its
ColumnTransformer) knows its columns (`feature_names_in_`); an ONNX graph names
and types each of its inputs (skl2onnx converts that Pipeline to one input per
column, strings included). Such a model takes a table and does its own
preprocessing. Any other model takes one matrix, in its own float type.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import pyarrow as pa

from models.bundle import SAVED_MODEL, BundleError
from models.handlers import load_predictor
from models.inputs import Column, InputContract, Tensor
from transforms.files.readers import infer_format, open_file, read_file
from transforms.rows.dead_letters import Rejected
from transforms.rows.validation import coerce_column

_ONNX_COLUMNS = {'tensor(string)': 'string', 'tensor(double)': 'float64', 'tensor(float)': 'float32'}
_ONNX_TENSORS = {'tensor(float)': 'float32', 'tensor(double)': 'float64', 'tensor(float16)': 'float16',
                 'tensor(int64)': 'int64', 'tensor(int32)': 'int32', 'tensor(uint8)': 'uint8', 'tensor(int8)': 'int8',
                 'tensor(bool)': 'bool', 'tensor(string)': 'string'}


def first_rows(pattern: Optional[str], file_format: Optional[str] = None) -> Optional[pa.RecordBatch]:
  """The first rows of the first file `pattern` matches, as read (None without a file)."""
  from apache_beam.io.filesystems import FileSystems
  if not pattern:
    return None
  matches = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
  for path in matches:
    fmt = file_format or infer_format(path)
    with open_file(path, fmt) as f:
      for item in read_file(f, path, fmt, batch_size=4096):
        if not isinstance(item, Rejected) and item.num_rows:
          return item
  return None


def _column_type(sample: Optional[pa.RecordBatch], name: str, where: str) -> str:
  """float64 when every value of the sample's column reads as a number, else string."""
  if sample is None or name not in sample.schema.names:
    raise BundleError(f'the model takes a column {name!r} ({where}); give --expected or --data with that column, '
                      'so the import can tell its type, or declare the columns with --inputs inputs.json, e.g. '
                      f'{{"shape": "table", "columns": [{{"name": "{name}", "dtype": "float64"}}, ...]}}')
  _, invalid, _ = coerce_column(sample.column(name), 'float')
  text = pa.types.is_string(sample.schema.field(name).type) or pa.types.is_large_string(sample.schema.field(name).type)
  return 'string' if invalid.any() or (text and sample.column(name).null_count == len(sample)) else 'float64'


def _onnx(model_bytes: bytes) -> Optional[InputContract]:
  import onnxruntime as ort
  graph_inputs = ort.InferenceSession(model_bytes, providers=['CPUExecutionProvider']).get_inputs()
  one = graph_inputs[0]
  if len(graph_inputs) == 1 and one.type in ('tensor(float)', 'tensor(double)', 'tensor(float16)') and (
      len(one.shape) == 2):
    return None  # one float matrix
  if all(len(i.shape) <= 2 and i.shape[-1] in (1, None) and i.type in _ONNX_COLUMNS for i in graph_inputs):
    return InputContract('table', columns=tuple(Column(i.name, _ONNX_COLUMNS[i.type]) for i in graph_inputs))
  return InputContract('tensors', tensors=tuple(
      Tensor(i.name, _ONNX_TENSORS.get(i.type, 'float32'),
             (None, *(d if isinstance(d, int) else None for d in i.shape[1:]))) for i in graph_inputs))


def _sklearn(model_bytes: bytes, options: dict[str, Any], sample: Optional[pa.RecordBatch]) -> Optional[InputContract]:
  from models.lean_imports import skops_io
  model = skops_io().loads(model_bytes, trusted=list(options.get('trusted_types', ())) or None)
  names = getattr(model, 'feature_names_in_', None)
  if names is None:
    return None
  where = f'{type(model).__name__} was fitted on a DataFrame'
  return InputContract('table', columns=tuple(Column(str(n), _column_type(sample, str(n), where)) for n in names))


def read_inputs(fmt: str, model: str, model_bytes: bytes, outputs, options: dict[str, Any],
                sample: Optional[pa.RecordBatch]) -> InputContract:
  """The model's input contract, from the model: a table of its named inputs, or a matrix of its float type."""
  named = _onnx(model_bytes) if fmt == 'onnx' else _sklearn(model_bytes, options, sample) if fmt == 'sklearn' else None
  if named is not None:
    return named
  if fmt == SAVED_MODEL:  # its signature is float32 as a rule; inputs.json declares anything else
    return InputContract('matrix')
  try:
    dtype = load_predictor(fmt, model, outputs, device='cpu', options=options).input_dtype
  except Exception:  # pylint: disable=broad-except  # the bundle's own checks say what is wrong with the model
    dtype = 'float32'
  return InputContract('matrix', dtype=dtype if dtype in ('float32', 'float64') else 'float32')


def parse_metrics(given: Sequence[str]) -> dict[str, float]:
  """`--metric auc=0.822` (repeatable) as {'auc': 0.822}."""
  metrics = {}
  for item in given:
    name, _, value = item.partition('=')
    try:
      metrics[name.strip()] = float(value)
    except ValueError:
      raise BundleError(f'--metric {item}: give NAME=NUMBER, e.g. --metric auc=0.822') from None
    if not name.strip():
      raise BundleError(f'--metric {item}: give NAME=NUMBER, e.g. --metric auc=0.822')
  return metrics
