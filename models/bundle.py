"""The model bundle: everything a run needs to predict, in one directory (local or gs://).

    BUNDLE/
      saved_model/      a TensorFlow SavedModel (the default format). Or, by
                        metadata.json's `format`, model.onnx (onnx), model.pt2 /
                        model.torchscript.pt (torch), model.ubj / model.json
                        (xgboost) or model.skops (sklearn) (models/handlers/)
      inputs.json       what the model takes (models/inputs.py): one matrix of the
                        feature spec's outputs (the default, float32, when absent), a
                        table of named columns, or named tensors
      features.json     for a matrix: the fitted feature spec (columns, types, fill
                        values, statistics, vocabularies, feature order); a model that
                        takes a table does its own preprocessing and has none
      images.json       for an image model: how each image becomes its tensor (decode,
                        DICOM window, resize, normalise, layout: transforms/images/spec.py)
      text.json         for a text model: its tokenizer file (tokenizer.json, beside it),
                        length, batching by tokens and output pooling or softmax
                        (transforms/text/spec.py)
      outputs.json      what the model returns: class names (and how many of the
                        best to list), a score, a catalogue to rank, or an
                        embedding's dimension
      metadata.json     name, version, created, format (default saved_model),
                        model_file, training metrics, and (optional) training
                        statistics that run reports compare against

Serving reads the artifacts that training wrote, so features match by construction.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from typing import Any, Optional

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from models import text_bundle
from models.inputs import INPUTS, MATRIX, Column, InputContract, InputError, _Column
from transforms.features.spec import FeatureSpec
from transforms.images.spec import IMAGES, ImageSpec, ImageSpecError, json_shape
from transforms.text.spec import TEXT, TextSpec, TextSpecError

# The column of an image model's input that names each image, unless --image_column says otherwise:
# what a glob of image files gives, and what BigQuery object tables call it.
IMAGE_COLUMN = 'uri'
TEXT_COLUMN = text_bundle.TEXT_COLUMN

SAVED_MODEL = 'saved_model'
FEATURES = 'features.json'
OUTPUTS = 'outputs.json'
METADATA = 'metadata.json'
OUTPUT_KINDS = ('classification', 'regression', 'ranking', 'embedding', 'entities')
# A token classifier's tags: outside any entity, or the beginning or inside of one of a type (BIO).
BIO_TAG = re.compile(r'O|[BI]-.+')

# Rows per batch, read and per model call, unless --read_batch_size and --max_batch_rows say otherwise.
# A SavedModel's was measured with benchmarks/sweep.py (1M rows, example model, DirectRunner, 2 shared
# cores, medians of 3 rounds), pipeline seconds: 4096 rows 3.4, 8192 3.6, 16384 2.3, 32768 3.1, 65536
# 4.6; peak RSS 809 MB at 4096 up to 923 MB at 65536: past 16384, TensorFlow's time and memory grow.
SAVED_MODEL_BATCH_ROWS = 16384
# The other formats' light models run a call on 65536 rows in less CPU per row than on 16384 (each
# call has a fixed cost in onnxruntime, XGBoost and scikit-learn's forests), and the job's per-batch
# steps run a quarter as often: benchmarks/frameworks.py, docs/performance.md, "Model formats against their own frameworks".
FRAMEWORK_BATCH_ROWS = 65536


def batch_rows(*formats: str) -> int:
  """Rows per batch, read and per model call, for models of these formats (a champion and its
  challenger take the same batches: the smaller size). One number for both, so RunInference hands
  each element read to the model as it is instead of concatenating several."""
  return min(SAVED_MODEL_BATCH_ROWS if fmt == SAVED_MODEL else FRAMEWORK_BATCH_ROWS for fmt in formats)


class BundleError(ValueError):
  """A bundle is missing a part or its parts disagree."""


@dataclasses.dataclass(frozen=True)
class Outputs:
  """What the model's output tensor means.

  A classifier returns one probability per class, in `classes` order (and,
  with `top_k`, each row also lists its K most probable classes); a regressor
  (or a binary scorer) returns a single `score` column; a ranker (a
  recommender) returns one score per item of its catalogue, in `items` order,
  and the job keeps the K best (`--top_k`); an embedding model returns
  `dimension` floats per row, written as one fixed-length list column; a token classifier (a text model)
  returns one of its BIO `labels` per token, and each row lists the entities its tags spell
  (`transforms.text.entities`).
  """
  kind: str  # 'classification' | 'regression' | 'ranking' | 'embedding' | 'entities'
  classes: tuple[str, ...] = ()
  items: tuple[str, ...] = ()
  signature: str = 'serving_default'
  output_key: Optional[str] = None
  dimension: Optional[int] = None  # an embedding's length
  top_k: Optional[int] = None  # a classifier's most probable classes listed per row
  labels: tuple[str, ...] = ()  # a token classifier's BIO tags, in the order of its logits

  def __post_init__(self):
    # Class labels are text wherever they are written (predicted_class): [0, 1], scikit-learn's own
    # classes_, becomes ("0", "1").
    object.__setattr__(self, 'classes', tuple(str(c) for c in self.classes))
    object.__setattr__(self, 'items', tuple(str(i) for i in self.items))
    object.__setattr__(self, 'labels', tuple(str(t) for t in self.labels))
    if self.kind not in OUTPUT_KINDS:
      raise BundleError(f"{OUTPUTS}: kind must be one of {', '.join(OUTPUT_KINDS)}, got {self.kind!r}")
    if self.kind == 'ranking' and (len(self.items) < 1 or len(set(self.items)) != len(self.items)):
      raise BundleError(f'{OUTPUTS}: a ranking needs its catalogue as "items", distinct ids in the order of the '
                        f'model\'s scores; got {len(self.items)} items, {len(set(self.items))} distinct')
    if self.kind == 'classification' and len(set(self.classes)) != len(self.classes) or (
        self.kind == 'classification' and len(self.classes) < 2):
      raise BundleError(f'{OUTPUTS}: a classifier needs two or more distinct class names, got {list(self.classes)}')
    if (self.kind == 'embedding') != (self.dimension is not None) or self.dimension is not None and (
        not _positive_int(self.dimension)):
      raise BundleError(f'{OUTPUTS}: "dimension" is how many floats an embedding model returns per row, a positive '
                        f'whole number given for kind "embedding" only; got kind {self.kind!r}, dimension '
                        f'{self.dimension!r}, e.g. {{"kind": "embedding", "dimension": 768}}')
    if (self.kind == 'entities') != bool(self.labels) or self.labels and (
        len(set(self.labels)) != len(self.labels) or len(self.labels) < 2
        or not all(BIO_TAG.fullmatch(t) for t in self.labels)):
      raise BundleError(f'{OUTPUTS}: "labels" are a token classifier\'s BIO tags in the order of its logits, two or '
                        f'more distinct ones, each "O" or B-TYPE / I-TYPE, given for kind "entities" only; got kind '
                        f'{self.kind!r}, labels {list(self.labels)}, e.g. {{"kind": "entities", "labels": ["O", '
                        f'"B-ORG", "I-ORG", "B-PER", "I-PER"]}}')
    if self.top_k is not None and (self.kind != 'classification' or not _positive_int(self.top_k)
                                   or not 2 <= self.top_k <= len(self.classes)):
      raise BundleError(f'{OUTPUTS}: "top_k" lists each row\'s K most probable classes, for a classifier only, '
                        f'with 2 <= K <= its {len(self.classes)} classes; got kind {self.kind!r}, top_k '
                        f'{self.top_k!r}')

  @property
  def width(self) -> int:
    """Number of values the model returns per row."""
    if self.kind == 'ranking':
      return len(self.items)
    if self.kind == 'embedding':
      return int(self.dimension)
    if self.kind == 'entities':  # per token
      return len(self.labels)
    return len(self.classes) if self.kind == 'classification' else 1

  def describe(self) -> str:
    """What the model returns, in a few words, for reports and logs."""
    if self.kind == 'embedding':
      return f'embedding, {self.dimension} dimensions'
    if self.kind == 'entities':
      return f'entities, {len(self.labels)} token tags'
    if self.kind == 'ranking':
      return f'ranking of {len(self.items)} items'
    if self.kind == 'classification':
      return f'classification, {len(self.classes)} classes' + (f', top {self.top_k} listed' if self.top_k else '')
    return 'regression, one score'

  def to_dict(self) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
            if v is not None and not (k in ('items', 'labels') and not v)}


def _positive_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclasses.dataclass(frozen=True)
class ModelBundle:
  """A loaded, validated bundle. `path` is where the SavedModel lives."""
  path: str
  features: FeatureSpec
  outputs: Outputs
  metadata: dict[str, Any]
  inputs: InputContract = MATRIX
  images: Optional[ImageSpec] = None  # images.json: the model takes images, decoded by the job
  text: Optional[TextSpec] = None  # text.json: the model takes token ids, tokenised by the job

  def with_image_column(self, column: str) -> 'ModelBundle':
    """The bundle reading its images from `column`: their URIs, or their bytes."""
    return dataclasses.replace(self, features=image_features(column))

  @property
  def image_column(self) -> Optional[str]:
    return self.features.columns[0] if self.images is not None else None

  def with_text_column(self, column: str) -> 'ModelBundle':
    """The bundle reading its texts from `column`."""
    return dataclasses.replace(self, features=text_bundle.text_features(column))

  @property
  def text_column(self) -> Optional[str]:
    return self.features.columns[0] if self.text is not None else None

  @property
  def tokenizer_path(self) -> Optional[str]:
    return FileSystems.join(self.path, self.text.tokenizer) if self.text is not None else None

  def model_input(self, rows: pa.RecordBatch):
    """What the model takes for validated rows, as its contract says (`models.inputs.InputContract.prepare`)."""
    return self.inputs.prepare(self.features, rows)

  @property
  def name(self) -> str:
    return str(self.metadata['name'])

  @property
  def version(self) -> str:
    return str(self.metadata['version'])

  @property
  def registry_resource(self) -> Optional[str]:
    """projects/P/locations/L/models/M@VERSION_ID when the bundle came from the Vertex AI Model Registry."""
    return (self.metadata.get('registry') or {}).get('resource')

  @property
  def training_statistics(self) -> Optional[dict[str, Any]]:
    """The training data's profile (`transforms.rows.data_profile.InputProfileFn`); None in older bundles."""
    return self.metadata.get('training_statistics')

  @property
  def saved_model_path(self) -> str:
    return FileSystems.join(self.path, SAVED_MODEL)

  @property
  def format(self) -> str:
    """The model's format (`models.handlers.FORMATS`); bundles without one hold a SavedModel."""
    return str(self.metadata.get('format', SAVED_MODEL))

  @property
  def model_path(self) -> str:
    """The model file (or the SavedModel directory) in the bundle."""
    from models.handlers import get_format
    return FileSystems.join(self.path, self.metadata.get('model_file') or get_format(self.format).files[0])

  def model_bytes(self) -> int:
    """The model file's size: about what a copy of the model costs each process that loads one.

    One metadata call (a gs:// file too); a SavedModel is a directory, and has no single size here.
    """
    if self.format == SAVED_MODEL:
      raise ValueError(f'{self.saved_model_path} is a SavedModel directory; model_bytes sizes one model file')
    try:  # not FileSystems.match: it would read [, * or ? in the path as a pattern
      return FileSystems.get_filesystem(self.model_path).size(self.model_path)
    except Exception as e:  # pylint: disable=broad-except  # each filesystem raises its own errors
      raise BundleError(f'cannot read the size of the model file {self.model_path}: {e}') from None

  @property
  def load_options(self) -> dict[str, Any]:
    """What the format's loader needs beyond the file, e.g. the types skops may load."""
    return dict(self.metadata.get('load_options') or {})

  @classmethod
  def load(cls, path: str) -> 'ModelBundle':
    """Reads and validates a bundle; raises `BundleError` naming what is wrong."""
    from models.handlers import get_format
    path = path.rstrip('/')
    fmt = bundle_format(path)
    try:
      model_part = f'{SAVED_MODEL}/saved_model.pb' if fmt == SAVED_MODEL else get_format(fmt).files[0]
    except ValueError as e:
      raise BundleError(f'{path}/{METADATA}: {e}') from None
    if fmt != SAVED_MODEL and FileSystems.exists(FileSystems.join(path, METADATA)):
      model_part = _read_json(path, METADATA).get('model_file') or model_part
    inputs = load_inputs(path, fmt)
    has_features = FileSystems.exists(FileSystems.join(path, FEATURES))
    if inputs.shape != 'matrix' and has_features:
      raise BundleError(f'{path}: {INPUTS} says the model takes {inputs.describe()}, which it preprocesses itself; '
                        f'{FEATURES} steps are for a model that takes one matrix: remove {FEATURES}')
    needed = (FEATURES, OUTPUTS, METADATA, model_part) if inputs.shape == 'matrix' else (OUTPUTS, METADATA, model_part)
    missing = [part for part in needed if not FileSystems.exists(FileSystems.join(path, part))]
    if missing:
      raise BundleError(f'model bundle {path} is missing {", ".join(missing)}; a bundle holds '
                        f'{SAVED_MODEL}/, {FEATURES}, {OUTPUTS} and {METADATA} (or, as metadata.json\'s format '
                        f'says, another model file in place of saved_model/; with a table in {INPUTS}, no '
                        f'{FEATURES})')
    try:
      images, text = load_images(path, inputs), text_bundle.load_text(path, inputs, fmt)
    except TextSpecError as e:
      raise BundleError(str(e)) from None
    if images is not None and text is not None:
      raise BundleError(f'{path}: a bundle holds {IMAGES} or {TEXT}, not both: the model takes images or texts')
    if images is not None:
      features = image_features(IMAGE_COLUMN)
    elif text is not None:
      features = text_bundle.text_features(TEXT_COLUMN)
    elif inputs.shape != 'matrix':
      features = inputs.feature_spec()
    else:
      try:
        features = FeatureSpec.from_dict(_read_json(path, FEATURES))
      except (ValueError, KeyError, TypeError) as e:
        raise BundleError(f'{path}/{FEATURES}: {e}') from None
    if not features.is_fitted:
      unfitted = [f.name for f in features.features if not f.is_fitted]
      raise BundleError(f'{path}/{FEATURES}: features {unfitted} have no fitted statistics: '
                        + '; '.join(features.missing()))
    try:
      outputs = Outputs(**_read_json(path, OUTPUTS))
      if text is not None:
        text.check_outputs(outputs.kind)
    except TypeError as e:
      raise BundleError(f'{path}/{OUTPUTS}: {e}') from None
    except TextSpecError as e:
      raise BundleError(f'{path}/{e}') from None
    metadata = _read_json(path, METADATA)
    if not isinstance(metadata, dict):
      raise BundleError(f'{path}/{METADATA}: expected a JSON object with name and version, got {metadata!r}')
    absent = [k for k in ('name', 'version') if k not in metadata]
    if absent:
      raise BundleError(f'{path}/{METADATA}: missing {absent}')
    return cls(path, features, outputs, metadata, inputs, images, text)

  def check_signature(self) -> None:
    """Loads the model and checks what it takes and returns against the input contract and outputs.

    Costs a model load, so preflight calls it once on the launcher, not per worker.
    A model that does not say its widths (TorchScript, some ONNX graphs) is
    called on two rows of zeros instead (a matrix, or tensors of known shape);
    a model that takes named inputs has them matched by name when it loads.
    """
    from models.handlers import get_format, load_predictor  # frameworks are heavy imports; only here.
    label = get_format(self.format).label
    try:
      predictor = load_predictor(self.format, self.saved_model_path if self.format == SAVED_MODEL else self.model_path,
                                 self.outputs, options=self.load_options, inputs=self.inputs, text=self.text)
    except Exception as e:  # frameworks raise many types for a corrupt or foreign model.
      raise BundleError(f'{self.model_path}: cannot load the {label}: {e}') from None
    width_in, width_out = predictor.input_width, getattr(predictor, 'output_width', None)
    expected_in = len(self.features.output_names)
    if self.inputs.shape == 'matrix' and width_in not in (None, expected_in):
      raise BundleError(f'{self.path}: the {label} takes {width_in} inputs but {FEATURES} produces '
                        f'{expected_in} ({", ".join(self.features.output_names)})')
    if width_out not in (None, self.outputs.width):
      raise BundleError(f'{self.path}: the {label} returns {width_out} values per row but {OUTPUTS} '
                        f'describes {self.outputs.width}')
    sample = zeros_input(self.inputs, expected_in) if self.text is None else text_bundle.text_sample(
        self.tokenizer_path, self.text, offsets=self.outputs.kind == 'entities')
    if self.format != SAVED_MODEL and sample is not None:
      try:
        scores = predictor.predict(sample)
      except Exception as e:  # pylint: disable=broad-except
        what = 'two short texts, tokenised,' if self.text is not None else 'rows of zeros'
        raise BundleError(f'{self.path}: the {label} fails on 2 {what} of {self.inputs.describe()}'
                          + (f' × {expected_in} features (the width {FEATURES} produces)'
                             if self.inputs.shape == 'matrix' else '') + f': {e}') from None
      if self.outputs.kind != 'entities' and scores.shape != (2, self.outputs.width):  # a tagger's: TextPredictor's
        raise BundleError(f'{self.path}: the {label} returns {scores.shape[1:]} per row but {OUTPUTS} '
                          f'describes {self.outputs.width}')


def zeros_input(inputs: InputContract, width: int):
  """Two rows of zeros the model must take: a matrix, or tensors whose shape is known; None for a table
  (zeros are no valid category; the import's sample rows try it instead)."""
  import numpy as np
  if inputs.shape == 'matrix':
    return np.zeros((2, width), inputs.dtype)
  if inputs.shape == 'tensors' and all(d is not None for t in inputs.tensors for d in t.shape[1:]):
    return {t.name: np.zeros((2, *t.shape[1:]), object if t.dtype == 'string' else t.dtype) for t in inputs.tensors}
  return None


# The input shapes each format's handler can feed its model (models/handlers/).
FORMAT_SHAPES = {'xgboost': ('matrix',), 'sklearn': ('matrix', 'table')}


def load_inputs(path: str, fmt: str) -> InputContract:
  """The bundle's input contract: inputs.json, or one float32 matrix when it has none (older bundles)."""
  if not FileSystems.exists(FileSystems.join(path, INPUTS)):
    return MATRIX
  try:
    inputs = InputContract.from_dict(_read_json(path, INPUTS))
  except InputError as e:
    raise BundleError(f'{path}/{e}') from None
  allowed = FORMAT_SHAPES.get(fmt)
  if allowed and inputs.shape not in allowed:
    raise BundleError(f'{path}/{INPUTS}: a {fmt} model takes {" or ".join(allowed)} input, not {inputs.shape}')
  return inputs


def load_images(path: str, inputs: InputContract) -> Optional[ImageSpec]:
  """The bundle's images.json, checked against the tensor it fills; None for a model that takes no images."""
  if not FileSystems.exists(FileSystems.join(path, IMAGES)):
    return None
  try:
    spec = ImageSpec.from_dict(_read_json(path, IMAGES))
    check_image_tensor(spec, inputs)
  except ImageSpecError as e:
    raise BundleError(f'{path}/{e}') from None
  return spec


def check_image_tensor(spec: ImageSpec, inputs: InputContract) -> None:
  """Raises ImageSpecError unless inputs.json declares the one tensor images.json fills, of its shape and dtype."""
  if inputs.shape != 'tensors':
    raise ImageSpecError(f'{IMAGES} fills a tensor, but inputs.json says the model takes {inputs.describe()}; '
                         f'declare it, e.g. {{"shape": "tensors", "tensors": [{{"name": "{spec.tensor}", '
                         f'"dtype": "{spec.dtype}", "shape": {json_shape(spec.tensor_shape())}}}]}}')
  tensor = next((t for t in inputs.tensors if t.name == spec.tensor), None)
  if tensor is None or len(inputs.tensors) != 1:
    raise ImageSpecError(f'{IMAGES} fills the tensor {spec.tensor!r}; inputs.json declares '
                         f'{", ".join(inputs.names)}: an image model takes that one tensor')
  produced = spec.tensor_shape()
  if len(tensor.shape) != 4 or any(d is not None and d != p for d, p in zip(tensor.shape, produced)):
    raise ImageSpecError(f'{IMAGES} makes {spec.tensor!r} {json_shape(produced)} ({spec.layout}, {spec.color}, '
                         f'resize {spec.resize.policy}); inputs.json declares {json_shape(tensor.shape)}')
  if tensor.dtype != spec.dtype:
    raise ImageSpecError(f'{IMAGES} makes {spec.tensor!r} of dtype {spec.dtype}; inputs.json declares '
                         f'{tensor.dtype}')


def image_features(column: str) -> FeatureSpec:
  """What the job validates of an image model's rows: the column holding each image (a URI or the bytes),
  required."""
  return FeatureSpec((_Column(Column(column, 'image', nullable=False)),))


def bundle_format(path: str) -> str:
  """The format a bundle's metadata.json names, without loading the rest; `saved_model` when it cannot be read
  (preflight then says what is wrong with the bundle)."""
  try:
    metadata = _read_json(path.rstrip('/'), METADATA)
    return str(metadata.get('format', SAVED_MODEL)) if isinstance(metadata, dict) else SAVED_MODEL
  except Exception:  # pylint: disable=broad-except  # missing, unreadable or not JSON: preflight reports it
    return SAVED_MODEL


def _read_json(path: str, name: str) -> dict[str, Any]:
  with FileSystems.open(FileSystems.join(path, name)) as f:
    try:
      return json.loads(f.read().decode('utf-8'))
    except ValueError as e:
      raise BundleError(f'{path}/{name} is not valid JSON: {e}') from None


def _write_json(path: str, name: str, data: dict[str, Any]) -> None:
  with FileSystems.create(FileSystems.join(path, name)) as f:
    f.write(json.dumps(data, indent=2, sort_keys=False).encode('utf-8'))


def write_bundle(path: str, *, features: Optional[FeatureSpec], outputs: Outputs, name: str, version: str,
                 training_metrics: Optional[dict[str, Any]] = None,
                 training_statistics: Optional[dict[str, Any]] = None, inputs: Optional[InputContract] = None,
                 images: Optional[ImageSpec] = None, text: Optional[TextSpec] = None, **extra: Any) -> ModelBundle:
  """Writes the JSON parts of a bundle beside a SavedModel already exported to `path/saved_model`.

  `training_statistics` is the profile of the training data (missing rates,
  category frequencies, means) that run reports compare each run against.
  `inputs` None writes no inputs.json (the default float32 matrix); `features`
  is None for a model that takes a table or tensors; `images` is an image model's images.json, `text` a
  text model's text.json (its tokenizer file already beside it).
  """
  metadata = {'name': name, 'version': version,
              'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
              'training_metrics': training_metrics or {}, **extra}
  if training_statistics is not None:
    metadata['training_statistics'] = training_statistics
  if inputs is not None:
    _write_json(path, INPUTS, inputs.to_dict())
  if images is not None:
    _write_json(path, IMAGES, images.to_dict())
  if text is not None:
    _write_json(path, TEXT, text.to_dict())
  if features is not None and (inputs is None or inputs.shape == 'matrix'):
    _write_json(path, FEATURES, features.to_dict())
  _write_json(path, OUTPUTS, outputs.to_dict())
  _write_json(path, METADATA, metadata)
  return ModelBundle.load(path)
