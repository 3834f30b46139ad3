"""What a model takes: the bundle's input contract (`inputs.json`), by name and type, in one of three shapes.

    {"shape": "matrix", "dtype": "float64"}
        one matrix, rows × the feature spec's outputs (features.json), in the
        model's own float type; the default (float32) when a bundle has no inputs.json.
    {"shape": "table", "columns": [{"name": "tenure", "dtype": "float64"},
                                   {"name": "contract", "dtype": "string"}]}
        the named columns as the input holds them, typed, nulls kept, for a model
        that does its own preprocessing: a pandas DataFrame for a scikit-learn
        Pipeline, one named [rows, 1] tensor per column for a multi-input ONNX graph
        (a SavedModel signature, a PyTorch model's named arguments alike).
    {"shape": "tensors", "tensors": [{"name": "image", "dtype": "uint8", "shape": [null, 32, 32, 3]}]}
        named tensors of any rank and type (images, token ids and their masks),
        the first dimension the rows.

Whatever the shape, one batch of model input (`ModelInput`) is a float matrix, an
Arrow RecordBatch of the table's columns, or a dict of named numpy arrays; the
handlers batch, slice and retry all three alike (`num_rows`, `take_rows`, `concat`).
An input that makes images or documents only has to produce `tensors` batches.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Union

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.features.spec import Feature, FeatureSpec

INPUTS = 'inputs.json'
SHAPES = ('matrix', 'table', 'tensors')
MATRIX_DTYPES = ('float32', 'float64')
# 'image': an image model's column of URIs or bytes (models.bundle.image_features), never a model input;
# 'text': a text model's column of texts, kept as read, blanks too (the text step rejects those itself).
COLUMN_DTYPES = ('float64', 'float32', 'string', 'image', 'text')
TENSOR_DTYPES = ('float16', 'float32', 'float64', 'int8', 'int16', 'int32', 'int64', 'uint8', 'bool', 'string')
EXAMPLES = {
    'matrix': '{"shape": "matrix", "dtype": "float64"}',
    'table': '{"shape": "table", "columns": [{"name": "tenure", "dtype": "float64"}, '
             '{"name": "contract", "dtype": "string"}]}',
    'tensors': '{"shape": "tensors", "tensors": [{"name": "image", "dtype": "uint8", "shape": [null, 32, 32, 3]}]}',
}

ModelInput = Union[np.ndarray, pa.RecordBatch, dict[str, np.ndarray]]


class InputError(ValueError):
  """inputs.json is malformed, or disagrees with the model."""


@dataclasses.dataclass(frozen=True)
class Column:
  """One column of a table input: its name in the input, its type for the model, whether it may be null."""
  name: str
  dtype: str = 'float64'
  nullable: bool = True

  def __post_init__(self):
    if self.dtype not in COLUMN_DTYPES:
      raise InputError(f'inputs.json: column {self.name!r} has dtype {self.dtype!r}; a table column is one of '
                       f'{", ".join(COLUMN_DTYPES)}')

  @property
  def arrow_type(self) -> pa.DataType:
    return pa.string() if self.dtype in ('string', 'image', 'text') else pa.from_numpy_dtype(np.dtype(self.dtype))


@dataclasses.dataclass(frozen=True)
class Tensor:
  """One named tensor: its element type and shape, the first dimension (the rows) null."""
  name: str
  dtype: str
  shape: tuple[Optional[int], ...]

  def __post_init__(self):
    object.__setattr__(self, 'shape', tuple(self.shape))
    if self.dtype not in TENSOR_DTYPES:
      raise InputError(f'inputs.json: tensor {self.name!r} has dtype {self.dtype!r}; one of {", ".join(TENSOR_DTYPES)}')
    if not self.shape or self.shape[0] is not None or any(
        d is not None and (not isinstance(d, int) or d < 1) for d in self.shape[1:]):
      raise InputError(f'inputs.json: tensor {self.name!r} has shape {list(self.shape)}; give a list whose first '
                       'dimension, the rows, is null and whose others are positive sizes or null, e.g. '
                       '[null, 32, 32, 3]')


class _Column(Feature):
  """A table column as the job's validation sees it: typed, no steps, null allowed unless the contract says not."""
  nullable: bool = True

  def __init__(self, column: Column):  # pylint: disable=super-init-not-called  # no steps to settle
    object.__setattr__(self, 'name', column.name)
    object.__setattr__(self, 'dtype', column.dtype if column.dtype in ('string', 'image', 'text') else 'float')
    object.__setattr__(self, 'steps', ())
    object.__setattr__(self, 'nullable', column.nullable)

  @property
  def required(self) -> bool:
    return not self.nullable


@dataclasses.dataclass(frozen=True)
class InputContract:
  """What the model takes (see the module docstring); the default is today's float32 matrix."""
  shape: str = 'matrix'
  dtype: str = 'float32'  # the matrix's
  columns: tuple[Column, ...] = ()
  tensors: tuple[Tensor, ...] = ()

  def __post_init__(self):
    object.__setattr__(self, 'columns', tuple(self.columns))
    object.__setattr__(self, 'tensors', tuple(self.tensors))
    if self.shape not in SHAPES:
      raise InputError(f'inputs.json: shape must be one of {", ".join(SHAPES)}, got {self.shape!r}; e.g. '
                       + ' or '.join(EXAMPLES.values()))
    if self.shape == 'matrix' and self.dtype not in MATRIX_DTYPES:
      raise InputError(f'inputs.json: a matrix\'s dtype is one of {", ".join(MATRIX_DTYPES)}, got {self.dtype!r}')
    named = {'matrix': (), 'table': self.columns, 'tensors': self.tensors}[self.shape]
    if self.shape != 'matrix' and not named:
      raise InputError(f'inputs.json: a {self.shape} input names its {self.shape if self.shape == "tensors" else "columns"}'
                       f', e.g. {EXAMPLES[self.shape]}')
    names = [n.name for n in named]
    if len(set(names)) != len(names):
      raise InputError(f'inputs.json: names must be distinct, got {names}')
    if (self.shape != 'table' and self.columns) or (self.shape != 'tensors' and self.tensors):
      raise InputError(f'inputs.json: a {self.shape} input takes no '
                       f'{"columns" if self.columns else "tensors"}; e.g. {EXAMPLES[self.shape]}')

  @property
  def names(self) -> list[str]:
    """The model's named inputs: a table's columns, the tensors; none for a matrix."""
    return [n.name for n in (self.columns if self.shape == 'table' else self.tensors)]

  def describe(self) -> str:
    if self.shape == 'matrix':
      return f'one {self.dtype} matrix'
    if self.shape == 'table':
      return 'a table of ' + ', '.join(f'{c.name} ({c.dtype}{"" if c.nullable else ", not null"})' for c in self.columns)
    return 'tensors ' + ', '.join(f'{t.name} ({t.dtype} {list(t.shape)})' for t in self.tensors)

  def feature_spec(self) -> FeatureSpec:
    """The columns the job reads and validates for a table or tensors input (no steps: the model preprocesses)."""
    columns = self.columns if self.shape == 'table' else [Column(t.name, 'float64', False) for t in self.tensors]
    return FeatureSpec(tuple(_Column(c) for c in columns))

  def prepare(self, spec: FeatureSpec, rows: pa.RecordBatch) -> ModelInput:
    """The model input for validated rows: the feature matrix in the model's dtype, or the table's columns."""
    if self.shape == 'matrix':
      return spec.transform(rows, dtype=np.dtype(self.dtype))
    if self.shape == 'table':
      return pa.RecordBatch.from_arrays([rows.column(c.name).cast(c.arrow_type) for c in self.columns],
                                        names=[c.name for c in self.columns])
    raise InputError(f'the model takes {self.describe()}, and no input of the job produces tensors yet; call the '
                     'model through models.handlers.handler_for(bundle) with batches of named arrays')

  def to_dict(self) -> dict[str, Any]:
    if self.shape == 'matrix':
      return {'shape': 'matrix', 'dtype': self.dtype}
    if self.shape == 'table':
      return {'shape': 'table', 'columns': [dataclasses.asdict(c) for c in self.columns]}
    return {'shape': 'tensors', 'tensors': [{**dataclasses.asdict(t), 'shape': list(t.shape)} for t in self.tensors]}

  @classmethod
  def from_dict(cls, data: Any) -> 'InputContract':
    if not isinstance(data, dict):
      raise InputError(f'inputs.json is a JSON object, e.g. {EXAMPLES["table"]}; got {data!r}')
    unknown = sorted(set(data) - {'shape', 'dtype', 'columns', 'tensors'})
    if unknown:
      raise InputError(f'inputs.json: no key {", ".join(map(repr, unknown))} (it takes shape, and dtype, columns or '
                       f'tensors by shape); e.g. {EXAMPLES["table"]}')
    try:
      return cls(shape=data.get('shape', 'matrix'), dtype=data.get('dtype', 'float32'),
                 columns=tuple(Column(**c) for c in data.get('columns', ())),
                 tensors=tuple(Tensor(**t) for t in data.get('tensors', ())))
    except TypeError as e:
      raise InputError(f'inputs.json: {e}; a column is {{"name", "dtype", "nullable"}}, a tensor '
                       '{"name", "dtype", "shape"}') from None


MATRIX = InputContract()


@dataclasses.dataclass
class ApplyModelInputs(beam.PTransform):
  """Pairs each validated batch with what the model takes for it: `(batch, model input)`.

  For a matrix, the feature spec's steps in the model's float type; for a table, the columns as the
  contract types them. Refused at construction for tensors, which no input of the job makes yet.
  """

  spec: FeatureSpec
  inputs: InputContract = MATRIX

  def __post_init__(self):
    super().__init__()
    if not self.spec.is_fitted:
      raise ValueError('ApplyModelInputs needs a fitted feature spec')
    if self.inputs.shape == 'tensors':
      self.inputs.prepare(self.spec, pa.record_batch({}))  # raises, saying so

  def expand(self, batches: beam.PCollection[pa.RecordBatch]) -> beam.PCollection:
    kind = np.ndarray if self.inputs.shape == 'matrix' else pa.RecordBatch
    return batches | 'Transform' >> beam.Map(
        lambda batch, spec, inputs: (batch, inputs.prepare(spec, batch)), spec=self.spec,
        inputs=self.inputs).with_output_types(beam.typehints.Tuple[pa.RecordBatch, kind])


def num_rows(batch: ModelInput) -> int:
  """Rows in one batch of model input of any shape."""
  if isinstance(batch, dict):
    return len(next(iter(batch.values())))
  return batch.num_rows if isinstance(batch, pa.RecordBatch) else batch.shape[0]


def input_bytes(batch: ModelInput) -> int:
  if isinstance(batch, dict):
    return sum(a.nbytes for a in batch.values())
  return batch.nbytes


def take_rows(batch: ModelInput, start: int, end: int) -> ModelInput:
  """Rows start..end of a batch, without copying."""
  if isinstance(batch, dict):
    return {name: a[start:end] for name, a in batch.items()}
  return batch.slice(start, end - start) if isinstance(batch, pa.RecordBatch) else batch[start:end]


def concat(batches: Sequence[ModelInput]) -> ModelInput:
  """One batch of the rows of several (one is returned as it is)."""
  if len(batches) == 1:
    return batches[0]
  first = batches[0]
  if isinstance(first, dict):
    return {name: np.concatenate([b[name] for b in batches]) for name in first}
  if isinstance(first, pa.RecordBatch):
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
  return np.concatenate(batches)


def numpy_column(values: pa.Array, dtype: np.dtype) -> np.ndarray:
  """An Arrow column as a numpy [rows] array of `dtype`: NaN for a missing number, '' for missing text
  (a graph's string tensor holds no null)."""
  if dtype == np.dtype(object) or pa.types.is_string(values.type):
    return pc.fill_null(values, '').to_numpy(zero_copy_only=False).astype(object, copy=False)
  return values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
