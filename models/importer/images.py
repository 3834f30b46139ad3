"""The import of an image model: images.json in place of features.json, sample images read as a run reads them.

`--images images.json` says how each image becomes the model's tensor
(transforms/images/spec.py); the tensor inputs.json declares follows from it.
`--expected` holds one row per sample image: its URI or its bytes (in `uri`, or
`--image_column`) and the outputs the user's own code produced for it, under
the job's column names (models/importer/parity.py). Each image is decoded by the
job's own code (`transforms.images.prepare.load`, then `tensors.to_tensor` per
shape), so a bundle that agrees here agrees in a run; `models.importer.image_parity`
runs the proof and, when it fails, looks for the setting of images.json to blame.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from models.bundle import BundleError, Outputs, check_image_tensor, image_features
from models.importer import parity
from models.inputs import InputContract, InputError, Tensor
from transforms.images.errors import ImageError
from transforms.images.prepare import load
from transforms.images.spec import ImageSpec, ImageSpecError, json_shape
from transforms.images.tensors import shape_groups, to_tensor
from transforms.rows import dead_letters as dl

# Images per model call while proving: a few MB of float tensor at 224 × 224.
CALL_IMAGES = 32
Predict = Callable[[dict[str, np.ndarray]], np.ndarray]


def read_spec(path: str) -> ImageSpec:
  """`--images`: images.json, read and checked."""
  try:
    with FileSystems.open(path) as f:
      return ImageSpec.from_dict(json.loads(f.read().decode('utf-8')))
  except (OSError, ValueError) as e:  # ImageSpecError is a ValueError
    raise BundleError(f'--images {path}: {e}') from None


def tensor_of(spec: ImageSpec) -> Tensor:
  return Tensor(spec.tensor, spec.dtype, spec.tensor_shape())


def contract(spec: ImageSpec, inputs: Optional[dict[str, Any]] = None) -> InputContract:
  """The model's inputs.json: the one tensor images.json fills, or `inputs` (--inputs) checked against it."""
  if inputs is None:
    return InputContract('tensors', tensors=(tensor_of(spec),))
  try:
    found = InputContract.from_dict(inputs)
  except InputError as e:
    raise BundleError(f'--inputs: {e}') from None
  try:
    check_image_tensor(spec, found)
  except ImageSpecError as e:
    raise BundleError(f'--inputs: {e}') from None
  return found


def check_onnx_input(model_bytes: bytes, spec: ImageSpec) -> None:
  """Compares an ONNX graph's one input (name, fixed dimensions) with what images.json makes, before anything runs:
  a graph that is fed channels last when it takes them first is named here."""
  import onnxruntime as ort
  graph_inputs = ort.InferenceSession(model_bytes, providers=['CPUExecutionProvider']).get_inputs()
  if len(graph_inputs) != 1:
    raise BundleError(f'the ONNX model takes {len(graph_inputs)} inputs ({", ".join(i.name for i in graph_inputs)}); '
                      'an image model takes one tensor of images')
  one = graph_inputs[0]
  if one.name != spec.tensor:
    raise BundleError(f'the ONNX model\'s input is named {one.name!r}; images.json fills {spec.tensor!r}: set '
                      f'"tensor": "{one.name}" in images.json')
  dims = tuple(d if isinstance(d, int) else None for d in one.shape)
  made = spec.tensor_shape()
  if not _fits(dims, made):
    other = dataclasses.replace(spec, layout='NHWC' if spec.layout == 'NCHW' else 'NCHW')
    why = (f'layout: the model takes {other.layout}; set "layout": "{other.layout}" in images.json'
           if _fits(dims, other.tensor_shape()) else
           'check its "layout" (NCHW: channels first, as PyTorch; NHWC: channels last, as TensorFlow), "color" '
           '(RGB: 3 channels, L: 1) and "resize" "size" [height, width]')
    raise BundleError(f'the ONNX model takes {one.name!r} of shape {json_shape(dims)}; images.json makes '
                      f'{json_shape(made)} ({spec.layout}, {spec.color}, resize {spec.resize.policy}): {why}')


def _fits(model: Sequence[Optional[int]], made: Sequence[Optional[int]]) -> bool:
  return len(model) == len(made) and all(m is None or d is None or m == d for m, d in zip(model, made))


@dataclasses.dataclass(frozen=True)
class ExpectedImages:
  """The rows of `--expected` whose images decoded, keyed by URI, their decoded images and each row's image
  as given (its URI or bytes), so the diagnosis can decode it again another way."""
  rows: parity.ExpectedRows
  images: tuple[np.ndarray, ...]
  sources: tuple[Union[str, bytes], ...]

  def head(self, n: int) -> 'ExpectedImages':
    return ExpectedImages(self.rows.head(n), self.images[:n], self.sources[:n])


def _keep(rows: parity.ExpectedRows, mask: np.ndarray, rejected: Sequence[tuple[str, str]]) -> parity.ExpectedRows:
  cut = lambda a: None if a is None else a[mask]  # noqa: E731
  return dataclasses.replace(rows, valid=rows.valid.filter(pa.array(mask)), classes=cut(rows.classes),
                             scores=cut(rows.scores), labels=cut(rows.labels),
                             probabilities={i: a[mask] for i, a in rows.probabilities.items()},
                             rejected=rows.rejected + tuple(rejected))


def decode_all(sources: Sequence[Union[str, bytes]], spec: ImageSpec) -> list[Union[np.ndarray, ImageError]]:
  """Each image decoded and resized as the job's decode step does; an ImageError for one it would dead-letter."""
  decoded = []
  for source in sources:
    try:
      decoded.append(load(source, spec))
    except ImageError as e:
      decoded.append(e)
  return decoded


def read_expected(path: str, spec: ImageSpec, outputs: Outputs, *, column: str, file_format: Optional[str] = None,
                  label: Optional[str] = None) -> ExpectedImages:
  """`--expected` for an image model: validated as a run validates its rows, each image decoded as a run decodes
  it; a row whose image the job would dead-letter is rejected with its reason code, and so disagrees."""
  rows = parity.read_expected(path, image_features(column), outputs, file_format=file_format, label=label)
  if column not in rows.valid.schema.names:
    raise BundleError(f'--expected {path} has no column {column!r}, the image\'s URI or bytes (--image_column)')
  values = rows.valid.column(column)
  by_uri = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
  if by_uri:  # a row is known by its image's URI, as in a run's predictions
    rows = dataclasses.replace(rows, valid=rows.valid.set_column(
        rows.valid.schema.get_field_index(dl.KEY), dl.KEY, values.cast(pa.string())))
  sources = values.to_pylist()
  decoded = decode_all(sources, spec)
  ok = np.array([not isinstance(d, ImageError) for d in decoded], dtype=bool)
  keys = rows.keys
  rejected = [(keys[i], f'{d.code}: {d}') for i, d in enumerate(decoded) if isinstance(d, ImageError)]
  if not ok.all():
    rows = _keep(rows, ok, rejected)
  if not ok.any():
    raise BundleError(f'--expected {path}: no image could be decoded ({len(rejected)} rejected, first '
                      f'{rejected[0][0]}: {rejected[0][1]})')
  return ExpectedImages(rows, tuple(d for d in decoded if not isinstance(d, ImageError)),
                        tuple(s for s, good in zip(sources, ok) if good))


def predict_images(predict: Predict, images: Sequence[np.ndarray], spec: ImageSpec) -> np.ndarray:
  """The model's outputs for decoded images, one tensor per shape and call as in a run, in the images' order."""
  out: Optional[np.ndarray] = None
  for group in shape_groups(images):
    for start in range(0, len(group), CALL_IMAGES):
      part = group[start:start + CALL_IMAGES]
      tensor = to_tensor([images[i] for i in part], spec)
      scores = np.asarray(predict({spec.tensor: tensor}), np.float64)
      if out is None:
        out = np.empty((len(images), scores.shape[1]), np.float64)
      out[part] = scores
  return out if out is not None else np.empty((0, 0))
