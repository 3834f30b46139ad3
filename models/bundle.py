"""The model bundle: everything a run needs to predict, in one directory (local or gs://).

    BUNDLE/
      saved_model/      a TensorFlow SavedModel (the default format); its signature
                        takes one float32 matrix whose columns are the feature spec's
                        outputs. Or, by metadata.json's `format`, model.onnx (onnx),
                        model.pt2 / model.torchscript.pt (torch), model.ubj /
                        model.json (xgboost) or model.skops (sklearn), taking the same
                        matrix (models/handlers/)
      features.json     the fitted feature spec (columns, types, fill values,
                        statistics, vocabularies, feature order)
      outputs.json      what the model returns: class names, or a score
      metadata.json     name, version, created, format (default saved_model),
                        model_file, training metrics, and (optional) training
                        statistics that run reports compare against

Serving reads the artifacts that training wrote, so features match by construction.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any, Optional

from apache_beam.io.filesystems import FileSystems

from transforms.features.spec import FeatureSpec

SAVED_MODEL = 'saved_model'
FEATURES = 'features.json'
OUTPUTS = 'outputs.json'
METADATA = 'metadata.json'
OUTPUT_KINDS = ('classification', 'regression', 'ranking')

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

  A classifier returns one probability per class, in `classes` order; a
  regressor (or a binary scorer) returns a single `score` column; a ranker
  (a recommender) returns one score per item of its catalogue, in `items`
  order, and the job keeps the K best (`--top_k`).
  """
  kind: str  # 'classification' | 'regression' | 'ranking'
  classes: tuple[str, ...] = ()
  items: tuple[str, ...] = ()
  signature: str = 'serving_default'
  output_key: Optional[str] = None

  def __post_init__(self):
    object.__setattr__(self, 'classes', tuple(self.classes))
    object.__setattr__(self, 'items', tuple(str(i) for i in self.items))
    if self.kind not in OUTPUT_KINDS:
      raise BundleError(f"{OUTPUTS}: kind must be one of {', '.join(OUTPUT_KINDS)}, got {self.kind!r}")
    if self.kind == 'ranking' and (len(self.items) < 1 or len(set(self.items)) != len(self.items)):
      raise BundleError(f'{OUTPUTS}: a ranking needs its catalogue as "items", distinct ids in the order of the '
                        f'model\'s scores; got {len(self.items)} items, {len(set(self.items))} distinct')
    if self.kind == 'classification' and len(set(self.classes)) != len(self.classes) or (
        self.kind == 'classification' and len(self.classes) < 2):
      raise BundleError(f'{OUTPUTS}: a classifier needs two or more distinct class names, got {list(self.classes)}')

  @property
  def width(self) -> int:
    """Number of values the model returns per row."""
    if self.kind == 'ranking':
      return len(self.items)
    return len(self.classes) if self.kind == 'classification' else 1

  def to_dict(self) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
            if v is not None and not (k == 'items' and not v)}


@dataclasses.dataclass(frozen=True)
class ModelBundle:
  """A loaded, validated bundle. `path` is where the SavedModel lives."""
  path: str
  features: FeatureSpec
  outputs: Outputs
  metadata: dict[str, Any]

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
    missing = [part for part in (FEATURES, OUTPUTS, METADATA, model_part)
               if not FileSystems.exists(FileSystems.join(path, part))]
    if missing:
      raise BundleError(f'model bundle {path} is missing {", ".join(missing)}; a bundle holds '
                        f'{SAVED_MODEL}/, {FEATURES}, {OUTPUTS} and {METADATA} (or, as metadata.json\'s format '
                        'says, another model file in place of saved_model/)')
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
    except TypeError as e:
      raise BundleError(f'{path}/{OUTPUTS}: {e}') from None
    metadata = _read_json(path, METADATA)
    if not isinstance(metadata, dict):
      raise BundleError(f'{path}/{METADATA}: expected a JSON object with name and version, got {metadata!r}')
    absent = [k for k in ('name', 'version') if k not in metadata]
    if absent:
      raise BundleError(f'{path}/{METADATA}: missing {absent}')
    return cls(path, features, outputs, metadata)

  def check_signature(self) -> None:
    """Loads the model and checks what it takes and returns against the spec and outputs.

    Costs a model load, so preflight calls it once on the launcher, not per worker.
    A model that does not say its widths (TorchScript, some ONNX graphs) is
    called on two rows of zeros instead.
    """
    from models.handlers import get_format, load_predictor  # frameworks are heavy imports; only here.
    label = get_format(self.format).label
    try:
      predictor = load_predictor(self.format, self.saved_model_path if self.format == SAVED_MODEL else self.model_path,
                                 self.outputs, options=self.load_options)
    except Exception as e:  # frameworks raise many types for a corrupt or foreign model.
      raise BundleError(f'{self.model_path}: cannot load the {label}: {e}') from None
    width_in, width_out = predictor.input_width, getattr(predictor, 'output_width', None)
    expected_in = len(self.features.output_names)
    if width_in not in (None, expected_in):
      raise BundleError(f'{self.path}: the {label} takes {width_in} inputs but {FEATURES} produces '
                        f'{expected_in} ({", ".join(self.features.output_names)})')
    if width_out not in (None, self.outputs.width):
      raise BundleError(f'{self.path}: the {label} returns {width_out} values per row but {OUTPUTS} '
                        f'describes {self.outputs.width}')
    if self.format != SAVED_MODEL:
      import numpy as np
      try:
        scores = predictor.predict(np.zeros((2, expected_in), np.float32))
      except Exception as e:  # pylint: disable=broad-except
        raise BundleError(f'{self.path}: the {label} fails on a matrix of 2 rows × {expected_in} features '
                          f'(the width {FEATURES} produces): {e}') from None
      if scores.shape != (2, self.outputs.width):
        raise BundleError(f'{self.path}: the {label} returns {scores.shape[1:]} per row but {OUTPUTS} '
                          f'describes {self.outputs.width}')


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


def write_bundle(path: str, *, features: FeatureSpec, outputs: Outputs, name: str, version: str,
                 training_metrics: Optional[dict[str, Any]] = None,
                 training_statistics: Optional[dict[str, Any]] = None, **extra: Any) -> ModelBundle:
  """Writes the JSON parts of a bundle beside a SavedModel already exported to `path/saved_model`.

  `training_statistics` is the profile of the training data (missing rates,
  category frequencies, means) that run reports compare each run against.
  """
  metadata = {'name': name, 'version': version,
              'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
              'training_metrics': training_metrics or {}, **extra}
  if training_statistics is not None:
    metadata['training_statistics'] = training_statistics
  _write_json(path, FEATURES, features.to_dict())
  _write_json(path, OUTPUTS, outputs.to_dict())
  _write_json(path, METADATA, metadata)
  return ModelBundle.load(path)
