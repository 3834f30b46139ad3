"""Bring your own model: turn a trained model and a feature description into a checked bundle.

    python -m models.importer --model MODEL [--features features.json | --inputs inputs.json] \\
        --outputs outputs.json --name churn --version 3 --output gs://bucket/bundles/churn-3 \\
        [--data sample.parquet] [--expected my_model_outputs.parquet] [--metric auc=0.822]

MODEL, by framework (the format follows from the name; --format overrides):

    TensorFlow    --model my_model/               a SavedModel directory (the default format)
    ONNX          --model model.onnx              any framework's ONNX export      pip install ".[onnx]"
    PyTorch       --model model.pt2               torch.export.save(...), or a
                  --model model.pt                TorchScript torch.jit.save(...)  pip install ".[torch]"
    XGBoost       --model model.ubj               booster.save_model('model.ubj' or 'model.json')
                                                                                   pip install ".[xgboost]"
    scikit-learn  --model model.skops             skops.io.dump(estimator, ...)    pip install ".[sklearn]"

A pickle (a scikit-learn .pkl/.joblib, a torch.save'd module) runs code when
loaded and is refused, with the command that converts it. A skops file's types
beyond scikit-learn's own are listed, and loaded only once you trust them
(`--trust TYPE ...`, or `--trust_all_listed`).

What the model takes (inputs.json, models/inputs.py) follows from the model
when it can: a scikit-learn model fitted on a DataFrame (a whole Pipeline with
its ColumnTransformer) or an ONNX graph with several named inputs (skl2onnx's
conversion of that Pipeline) takes a table of those columns, typed by the
graph or by the --expected/--data file, and needs no features.json: it
preprocesses itself. Any other model takes one matrix from features.json, in
its own float type (float64 for scikit-learn). `--inputs` declares it instead.

For a matrix, `features.json` lists the columns the model reads, in the order its input
matrix expects them, with the steps that turn each into numbers (docs/reference/feature-steps.md, the
feature step reference; `python -m pipelines.references` prints it). Every
learned value is part of the spec: give the vocabularies (in the order your
model was trained with), fill values and scaling statistics, or leave them out
and let `--data`, a sample of the training data, fit them in the documented
order (a vocabulary: most frequent first, ties by value, unless the step says
`"order": "lexical"` or `"numeric"`). The command prints every value the bundle
will apply. With `--data` the bundle also stores the sample's statistics, which
each run report compares against.

`--expected` proves the bundle, whatever its format: sample rows with the
outputs your own code produced for them, in the job's own column names
(`probability_<class>` and/or `predicted_class` for a classifier, `score` for a
regressor). The import runs the bundle's model on them, through the same
framework the job uses, and writes nothing unless every row agrees within
`--expected_atol + --expected_rtol * |expected|`; otherwise it prints the first
mismatches and the likely cause (for example a vocabulary in another order).
`--expected_label COLUMN` instead checks a classifier's accuracy on true classes
against `--min_accuracy`: a sanity bound, not a proof.

The bundle is checked before the command succeeds: the model loads, takes as
many inputs as the features produce and returns what outputs.json describes,
it predicts finite values for sample rows, and (with `--expected`) it
reproduces your outputs. A bundle that fails a check is removed and the command
exits 2.

An image model (PyTorch, ONNX or TensorFlow) takes `--images images.json` in
place of --features: how each image becomes its tensor (docs/guides/images.md).
`--expected` then holds one row per sample image, its path or URI in a `uri`
column (or its bytes; --image_column names another), with the outputs your
code produced for it. The import decodes each image with the job's own code, so
parity here is parity in a run; when the bundle disagrees, it names the setting
that differs (layout NCHW/NHWC, mean/std, 0-255 against 0-1, RGB against BGR,
the resize policy).

Examples:
  # every value given in features.json; proven on rows your own code predicted
  python -m models.importer --model=my_model/ --features=features.json \\
      --outputs=outputs.json --name=weather --version=1 --output=gs://BUCKET/models/weather-1 \\
      --expected=my_predictions.parquet
  # an ONNX model, statistics fitted on a training sample, then proven the same way
  python -m models.importer --model=model.onnx ... --data=training_sample.jsonl \\
      --expected=my_predictions.jsonl
  # an image classifier, proven on sample images your own code predicted
  python -m models.importer --model=model.pt2 --images=images.json --outputs=outputs.json \\
      --name=digits --version=1 --output=gs://BUCKET/models/digits-1 --expected=predictions.jsonl
  # no outputs of your own at hand: at least beat guessing on labelled rows
  python -m models.importer ... --data=training_sample.jsonl --expected=holdout.csv \\
      --expected_label=weather --min_accuracy=0.8
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from models import registry

from models.importer import diagnosis
from models.importer import image_parity
from models.importer import images as image_import

from models.importer import parity
from models.bundle import IMAGE_COLUMN, SAVED_MODEL, BundleError, ModelBundle, Outputs, write_bundle
from models.handlers import FORMATS, get_format, load_predictor, read_bytes
from models.importer.samples import read_validated
from models.importer import model_inputs
from models.inference import PredictionColumns
from models.inputs import InputContract, InputError
from transforms.rows.data_profile import profile_in_memory
from transforms.features.spec import FeatureSpec, fit_in_memory
from transforms.features.preprocessing import OneHot, Vocabulary
from transforms.images.spec import IMAGES

# Sample rows the imported model must predict finite values for.
SMOKE_ROWS = 256


def _read_json(path: str, what: str) -> Any:
  try:
    with FileSystems.open(path) as f:
      return json.loads(f.read().decode('utf-8'))
  except (OSError, ValueError) as e:
    raise BundleError(f'{what} {path}: {e}') from None


def copy_tree(source: str, destination: str) -> None:
  """Copies a directory, local or gs://; Beam's file systems copy a whole tree given a trailing '/'."""
  FileSystems.copy([source.rstrip('/') + '/'], [destination.rstrip('/') + '/'])


def _predictor(bundle: ModelBundle):
  """The bundle's model, loaded by its format's framework as the job loads it (on the CPU, or a GPU if any)."""
  return load_predictor(bundle.format, bundle.model_path if bundle.format != SAVED_MODEL else bundle.saved_model_path,
                        bundle.outputs, options=bundle.load_options, inputs=bundle.inputs)


def write_as_a_run_would(bundle: ModelBundle, rows: pa.RecordBatch, scores: np.ndarray) -> None:
  """Lays the sample's predictions out and writes them (to memory) with the run's own code and schema, so
  what a run would refuse (a class label that is not text, say) fails here, not on every night."""
  import pyarrow.parquet as pq
  columns = PredictionColumns(bundle.outputs, key_name='key', passthrough=(), model_name=bundle.name,
                              model_version=bundle.version, run_id='import')
  try:
    batch = columns.format(rows, scores)
    pq.write_table(pa.Table.from_batches([columns.table_rows(batch)]), pa.BufferOutputStream())
  except (pa.ArrowException, ValueError, TypeError) as e:
    raise BundleError(f'a run could not write this model\'s predictions: {e}; check outputs.json '
                      '(class names, a ranking\'s items)') from None


def smoke_test(bundle: ModelBundle, valid: Sequence[pa.RecordBatch]) -> np.ndarray:
  """Predicts the first sample rows with the bundle as the pipeline would, and lays them out and writes them
  as a run does; raises unless all are finite."""
  rows = pa.Table.from_batches(valid).slice(0, SMOKE_ROWS).combine_chunks().to_batches()[0]
  scores = _predictor(bundle).predict(bundle.model_input(rows))
  if scores.shape != (rows.num_rows, bundle.outputs.width):
    raise BundleError(f'the model returned shape {scores.shape} for {rows.num_rows} sample rows; '
                      f'expected ({rows.num_rows}, {bundle.outputs.width})')
  if not np.isfinite(scores).all():
    raise BundleError(f'the model returned non-finite values for {int((~np.isfinite(scores)).any(axis=1).sum())} '
                      f'of {rows.num_rows} sample rows; check the feature steps and their statistics')
  write_as_a_run_would(bundle, rows, scores)
  return scores


def prove(bundle: ModelBundle, expected: parity.ExpectedRows, tolerance: parity.Tolerance, *,
          min_accuracy: Optional[float] = None, count_batches: Sequence[pa.RecordBatch] = (),
          fitted_on_data: Sequence[str] = ()) -> parity.Agreement:
  """Runs the bundle's model, in its own format, on the expected rows; raises `BundleError` with the
  mismatches and likely causes."""
  predictor = _predictor(bundle)
  predict = lambda x: np.asarray(predictor.predict(x), np.float64)  # noqa: E731
  scores = predict(bundle.model_input(expected.valid))
  write_as_a_run_would(bundle, expected.valid, scores)
  agreement = parity.compare(scores, expected, bundle.outputs, tolerance, min_accuracy)
  if agreement.passed:
    return agreement
  causes = diagnosis.diagnose(bundle.features, predict, expected, bundle.outputs, tolerance, agreement,
                              count_batches=count_batches, min_accuracy=min_accuracy, fitted_on_data=fitted_on_data,
                              inputs=bundle.inputs)
  lines = [f'--expected {expected.path}: the bundle does not reproduce your model\'s outputs: {agreement.summary}.',
           'first mismatches:', *[f'  {m}' for m in agreement.mismatches], 'likely cause:',
           *[f'  {c}' for c in causes]]
  raise BundleError('\n'.join(lines))


def fitted_on_data(given: FeatureSpec, fitted: FeatureSpec) -> list[str]:
  """The steps whose values `--data` filled in, e.g. `month vocabulary (frequency order)`."""
  names = []
  for before, after in zip(given.features, fitted.features):
    for old, new in zip(before.steps, after.steps):
      if old.missing() and not isinstance(old, OneHot):  # a one_hot's depth follows from its vocabulary
        order = f' ({new.order} order)' if isinstance(new, Vocabulary) else ''
        names.append(f'{after.name} {new.kind}{order}')
  return names


def describe(spec: FeatureSpec, from_data: Sequence[str]) -> str:
  """What the bundle will apply, feature by feature, for the user to compare with their training code."""
  source = (f'fitted on --data: {", ".join(from_data)}; the rest as given' if from_data
            else 'every value as given in --features')
  return '\n'.join([f'feature spec ({source}); model input = these columns in this order:',
                    *[f'  {line}' for line in spec.describe()]])


# File name endings and the format they mean; a pickle is named so it can be refused with help.
_SUFFIXES = {'.onnx': 'onnx', '.pt2': 'torch', '.pt': 'torch', '.pth': 'torch', '.ubj': 'xgboost',
             '.json': 'xgboost', '.skops': 'sklearn', '.pkl': 'sklearn', '.pickle': 'sklearn', '.joblib': 'sklearn'}


def infer_model_format(model: str) -> str:
  """The format of MODEL from its name: a directory with saved_model.pb, or a file ending."""
  if FileSystems.exists(FileSystems.join(model.rstrip('/'), 'saved_model.pb')):
    return SAVED_MODEL
  for suffix, fmt in _SUFFIXES.items():
    if model.lower().endswith(suffix):
      return fmt
  raise BundleError(f'--model {model}: cannot tell its format from the name; pass --format '
                    f'({", ".join(FORMATS)}); a SavedModel is a directory holding saved_model.pb')


def _model_file(fmt: str, model: str, data: bytes) -> str:
  """The bundle's name for the model file; refuses files that would run code when loaded."""
  if fmt == 'sklearn':
    from models.handlers.sklearn import check_not_pickle
    check_not_pickle(data, model)
  if fmt == 'torch':
    from models.handlers.pytorch import kind_of
    return 'model.pt2' if kind_of(data) == 'export' else 'model.torchscript.pt'
  if fmt == 'xgboost':
    return 'model.json' if model.lower().endswith('.json') else 'model.ubj'
  return get_format(fmt).files[0]


def _load_options(fmt: str, data: bytes, trusted_types: Sequence[str], trust_all_listed: bool = False
                  ) -> dict[str, Any]:
  """skops's load options: the types beyond scikit-learn's, NumPy's and SciPy's that the user trusts."""
  if fmt != 'sklearn':
    return {}
  from models.handlers.sklearn import untrusted_types
  listed = untrusted_types(data)
  trusted = list(listed) if trust_all_listed else [t for t in trusted_types if t]
  refused = [t for t in listed if t not in trusted]
  if refused:
    raise BundleError('the skops file holds types beyond scikit-learn\'s, NumPy\'s and SciPy\'s own, which skops '
                      'loads only when you trust them:\n  ' + '\n  '.join(listed) + '\nif you trust them (the model '
                      f'comes from your own training code), pass --trust {" ".join(refused)}, or --trust_all_listed')
  return {'trusted_types': sorted(set(trusted))} if trusted else {}


def _contract(fmt: str, model: str, model_bytes: bytes, out: Outputs, options: dict[str, Any], *,
              inputs: Optional[str], features: Optional[str], sample: Optional[pa.RecordBatch]) -> InputContract:
  """What the model takes: --inputs, a matrix when --features is given, else what the model says."""
  if inputs:
    try:
      return InputContract.from_dict(_read_json(inputs, '--inputs'))
    except InputError as e:
      raise BundleError(f'--inputs {inputs}: {e}') from None
  found = model_inputs.read_inputs(fmt, model, model_bytes, out, options, sample)
  if features and found.shape != 'matrix':
    raise BundleError(f'{model} takes {found.describe()} and preprocesses them itself: leave out --features (its '
                      'steps are for a model that takes one matrix), or pass --inputs to declare otherwise')
  if not features and found.shape == 'matrix':
    raise BundleError(f'{model} takes one matrix of features: pass --features features.json, the columns and the '
                      'steps that make it (docs/reference/feature-steps.md)')
  return found


def import_model(*, model: str, features: Optional[str], outputs: str, name: str, version: str, output: str,
                 data: Optional[str] = None, data_format: Optional[str] = None, model_format: Optional[str] = None,
                 trusted_types: Sequence[str] = (), trust_all_listed: bool = False, inputs: Optional[str] = None,
                 expected: Optional[str] = None, expected_format: Optional[str] = None,
                 expected_label: Optional[str] = None, min_accuracy: Optional[float] = None,
                 tolerance: parity.Tolerance = parity.Tolerance(), metrics: Sequence[str] = (),
                 model_flag: str = '--model', images: Optional[str] = None,
                 image_column: str = IMAGE_COLUMN) -> ModelBundle:
  """Builds, writes and checks a bundle; removes it again if a check fails.

  `model_flag` is how errors name MODEL (`--saved_model` for the original command's flag). `images` is an
  image model's images.json, and `image_column` the column of `expected` that holds each image (URI or bytes).
  """
  fmt = model_format or infer_model_format(model)
  try:
    get_format(fmt)
  except ValueError as e:
    raise BundleError(f'--format: {e}') from None
  training_metrics = model_inputs.parse_metrics(metrics)
  try:
    out = Outputs(**_read_json(outputs, '--outputs'))
  except TypeError as e:
    raise BundleError(f'--outputs {outputs}: {e}') from None
  if fmt == SAVED_MODEL:
    if not FileSystems.exists(FileSystems.join(model.rstrip('/'), 'saved_model.pb')):
      raise BundleError(f'{model_flag} {model} has no saved_model.pb: pass the SavedModel directory')
    model_file, options, model_bytes = SAVED_MODEL, {}, b''
  else:
    if not FileSystems.exists(model):
      raise BundleError(f'{model_flag} {model} does not exist')
    model_bytes = read_bytes(model)
    try:
      model_file = _model_file(fmt, model, model_bytes)
    except ValueError as e:
      raise BundleError(f'{model_flag} {model}: {e}') from None
    options = _load_options(fmt, model_bytes, trusted_types, trust_all_listed)
  if images:
    return _import_images(
        fmt=fmt, model=model, model_bytes=model_bytes, model_file=model_file, options=options, out=out,
        images=images, image_column=image_column, inputs=inputs, features=features, data=data, name=name,
        version=version, output=output, training_metrics=training_metrics, expected=expected,
        expected_format=expected_format, expected_label=expected_label, min_accuracy=min_accuracy,
        tolerance=tolerance)
  sample = None
  if fmt == 'sklearn' and not inputs:  # types the columns of a model fitted on a DataFrame
    sample = model_inputs.first_rows(expected, expected_format)
    sample = sample if sample is not None else model_inputs.first_rows(data, data_format)
  contract = _contract(fmt, model, model_bytes, out, options, inputs=inputs, features=features, sample=sample)
  if contract.shape == 'matrix':
    try:
      given = FeatureSpec.from_dict(_read_json(features, '--features')) if features else None
    except (ValueError, KeyError, TypeError) as e:
      raise BundleError(f'--features {features}: {e}') from None
    if given is None:
      raise BundleError('--inputs declares a matrix: pass --features features.json, the steps that make it')
  else:
    if features:
      raise BundleError(f'--inputs declares {contract.describe()}: leave out --features (a model that takes a table '
                        'or tensors preprocesses itself)')
    given = contract.feature_spec()
  spec, statistics, valid = given, None, []
  if data:
    sample = read_validated(data, given, flag='--data', file_format=data_format, columns=given.columns)
    valid = list(sample.valid)
    logging.info('sample %s: %d rows valid, %d rejected', data, sum(b.num_rows for b in valid), len(sample.rejected))
    spec = fit_in_memory(given, valid)
    statistics = profile_in_memory(spec, sample.raw)
  elif not given.is_fitted:
    raise BundleError(f'--features {features} leaves values to learn and there is no --data to fit them on:\n  '
                      + '\n  '.join(given.missing())
                      + '\ngive them (in the order and with the values your model was trained with), or pass '
                      '--data with a sample of the training data to fit them')
  from_data = fitted_on_data(given, spec)
  print(describe(spec, from_data) if contract.shape == 'matrix' else
        f'model input: {contract.describe()}, as the input holds them (no feature steps: the model preprocesses)')
  rows = None
  if expected:
    rows = parity.read_expected(expected, spec, out, file_format=expected_format, label=expected_label)
  elif min_accuracy is not None or expected_label:
    raise BundleError('--expected_label and --min_accuracy need --expected, the file that holds the rows')

  extra = _write_model(fmt, model, model_bytes, model_file, options, output)
  try:
    bundle = write_bundle(output, features=spec if contract.shape == 'matrix' else None, outputs=out, name=name,
                          version=version, training_metrics=training_metrics, training_statistics=statistics,
                          inputs=contract, imported_from=model, **extra)
    bundle.check_signature()
    if valid:
      smoke_test(bundle, valid)
    if rows is not None:
      agreement = prove(bundle, rows, tolerance, min_accuracy=min_accuracy, count_batches=valid,
                        fitted_on_data=from_data)
      print(f'--expected {expected}: {agreement.summary}')
  except Exception:
    FileSystems.delete([output])
    raise
  return bundle


def _write_model(fmt: str, model: str, model_bytes: bytes, model_file: str, options: dict[str, Any],
                 output: str) -> dict[str, Any]:
  """Copies the model into the new bundle; metadata.json's entries that name it."""
  if FileSystems.exists(FileSystems.join(output, 'metadata.json')):
    raise BundleError(f'--output {output} already holds a bundle; choose a new directory per version')
  if fmt == SAVED_MODEL:
    copy_tree(model, FileSystems.join(output, SAVED_MODEL))
  else:
    with FileSystems.create(FileSystems.join(output, model_file)) as f:
      f.write(model_bytes)
  extra: dict[str, Any] = {} if fmt == SAVED_MODEL else {'format': fmt, 'model_file': model_file}
  if options:
    extra['load_options'] = options
  return extra


def _import_images(*, fmt: str, model: str, model_bytes: bytes, model_file: str, options: dict[str, Any],
                   out: Outputs, images: str, image_column: str, inputs: Optional[str], features: Optional[str],
                   data: Optional[str], name: str, version: str, output: str, training_metrics: dict[str, float],
                   expected: Optional[str], expected_format: Optional[str], expected_label: Optional[str],
                   min_accuracy: Optional[float], tolerance: parity.Tolerance) -> ModelBundle:
  """`import_model` for an image model: images.json in place of features, the expected images decoded as a run
  decodes them (models/importer/images.py)."""
  if features or data:
    raise BundleError(f'--images: an image model takes no {"--features" if features else "--data"}; images.json '
                      'says how each image becomes its tensor')
  spec = image_import.read_spec(images)
  contract = image_import.contract(spec, _read_json(inputs, '--inputs') if inputs else None)
  if fmt == 'onnx':
    image_import.check_onnx_input(model_bytes, spec)
  print(f'model input: {contract.describe()}, made from each image by {images}: {json.dumps(spec.to_dict())}')
  rows = None
  if expected:
    rows = image_import.read_expected(expected, spec, out, column=image_column, file_format=expected_format,
                                      label=expected_label)
  elif min_accuracy is not None or expected_label:
    raise BundleError('--expected_label and --min_accuracy need --expected, the file that holds the images')
  extra = _write_model(fmt, model, model_bytes, model_file, options, output)
  try:
    bundle = write_bundle(output, features=None, outputs=out, name=name, version=version,
                          training_metrics=training_metrics, inputs=contract, images=spec, imported_from=model, **extra)
    image_parity.check_signature(bundle)
    if rows is not None:
      agreement = image_parity.prove(bundle, rows, tolerance, min_accuracy=min_accuracy, write=write_as_a_run_would)
      print(f'--expected {expected}: {agreement.summary}')
  except Exception:
    FileSystems.delete([output])
    raise
  return bundle


def import_savedmodel(*, saved_model: str, **kwargs: Any) -> ModelBundle:
  """`import_model` for a SavedModel directory (the original command's name)."""
  return import_model(model=saved_model, model_format=SAVED_MODEL, model_flag='--saved_model', **kwargs)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m models.importer', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  model = parser.add_mutually_exclusive_group(required=True)
  model.add_argument('--model', help='The model: a SavedModel directory, or a .onnx, .pt2/.pt, .ubj/.json or '
                     '.skops file; local or gs://.')
  model.add_argument('--saved_model', help='A SavedModel directory (the same as --model DIR --format saved_model).')
  parser.add_argument('--format', default=None, choices=list(FORMATS),
                      help='The model format. Default: from --model (a directory with saved_model.pb, or the '
                      'file ending).')
  parser.add_argument('--trust', nargs='+', default=[], metavar='TYPE',
                      help='scikit-learn: types, beyond scikit-learn\'s, NumPy\'s and SciPy\'s, that skops may load '
                      'from the file (the import lists them when it meets them). Default: none.')
  parser.add_argument('--trust_all_listed', action='store_true',
                      help='scikit-learn: trust every type the import lists for the file (see --trust).')
  parser.add_argument('--trusted_types', default='', help='--trust, comma-separated (the older spelling).')
  parser.add_argument('--features', default=None,
                      help='features.json: columns, types and steps, in input order (docs/reference/feature-steps.md), '
                      'for a model that takes one matrix. A model that takes a table (a scikit-learn Pipeline '
                      'fitted on a DataFrame, a multi-input ONNX graph) needs none.')
  parser.add_argument('--inputs', default=None,
                      help='inputs.json: what the model takes, a matrix, a table of named columns or named tensors '
                      '(docs/guides/own-model.md). Default: read from the model.')
  parser.add_argument('--images', default=None,
                      help='images.json, for a model that takes images: how each image becomes its tensor (decode, '
                      'DICOM window, resize, mean/std, layout, dtype; docs/guides/images.md). inputs.json follows '
                      'from it; --expected then names each sample image by its URI.')
  parser.add_argument('--image_column', default=IMAGE_COLUMN,
                      help='With --images: the column of --expected holding each image, its URI (text) or its bytes. '
                      'Default: %(default)s.')
  parser.add_argument('--metric', action='append', default=[], metavar='NAME=VALUE',
                      help='A training metric to keep in the bundle (metadata.json training_metrics) and show in each '
                      'run report, e.g. --metric auc=0.822; repeatable.')
  parser.add_argument('--outputs', required=True,
                      help='outputs.json: {"kind": "classification", "classes": [...]} or {"kind": "regression"}.')
  parser.add_argument('--name', required=True, help='Model name stamped on every prediction.')
  parser.add_argument('--version', required=True, help='Model version stamped on every prediction.')
  parser.add_argument('--output', required=True, help='Bundle directory to write, local or gs://.')
  parser.add_argument('--data', default=None,
                      help='Sample of the training data (path or glob): fits the values features.json leaves out '
                      '(printed), stores the statistics run reports compare against, and smoke-tests the model.')
  parser.add_argument('--data_format', default=None, help='Format of --data. Default: from the extension.')
  parser.add_argument('--expected', default=None,
                      help='Rows (path or glob, any input format) with the feature columns and the outputs your '
                      'own code produced: probability_<class> and/or predicted_class columns for a classifier, '
                      'score for a regressor. The bundle is written only if it reproduces them.')
  parser.add_argument('--expected_format', default=None, help='Format of --expected. Default: from the extension.')
  parser.add_argument('--expected_atol', type=float, default=parity.Tolerance.atol,
                      help='Absolute tolerance for a probability or score. Default: %(default)s.')
  parser.add_argument('--expected_rtol', type=float, default=parity.Tolerance.rtol,
                      help='Relative tolerance, times |expected|, added to --expected_atol. Default: %(default)s.')
  parser.add_argument('--expected_label', default=None,
                      help='Instead of outputs of your own: a column of --expected holding the true class; the '
                      'bundle must reach --min_accuracy on it (a sanity bound, not a proof).')
  parser.add_argument('--min_accuracy', type=float, default=None,
                      help='With --expected_label: the least accuracy accepted. Default: the share of the most '
                      'common label (the bundle must beat always guessing it).')
  parser.add_argument('--register', default=None,
                      help='Once the bundle is checked, register --output (gs://) as a new version of this Vertex AI '
                      'Model Registry model, projects/P/locations/L/models/M (created if missing); then run with '
                      '--model=projects/P/locations/L/models/M@VERSION or @ALIAS.')
  parser.add_argument('--alias', action='append', default=None,
                      help='With --register: a version alias to give the new version (e.g. champion); repeatable.')
  parser.add_argument('--serving_image', default=registry.DEFAULT_SERVING_IMAGE,
                      help='With --register: the serving container the registry requires of a model version '
                      f'(batch jobs do not use it). Default: {registry.DEFAULT_SERVING_IMAGE}.')
  parser.add_argument('--vertex_api_endpoint', default=None,
                      help='With --register: the Vertex AI API endpoint. Default: LOCATION-aiplatform.googleapis.com.')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(message)s')
  try:
    bundle = import_model(model=args.model or args.saved_model, features=args.features, outputs=args.outputs,
                          name=args.name, version=args.version, output=args.output, data=args.data,
                          data_format=args.data_format,
                          model_format=SAVED_MODEL if args.saved_model else args.format,
                          trusted_types=[*args.trust, *(t.strip() for t in args.trusted_types.split(',') if t.strip())],
                          trust_all_listed=args.trust_all_listed, inputs=args.inputs, metrics=args.metric,
                          expected=args.expected, expected_format=args.expected_format,
                          expected_label=args.expected_label, min_accuracy=args.min_accuracy,
                          tolerance=parity.Tolerance(args.expected_atol, args.expected_rtol),
                          model_flag='--saved_model' if args.saved_model else '--model', images=args.images,
                          image_column=args.image_column)
  except (BundleError, ValueError) as e:
    print(f'error: {e}\nno bundle written to {args.output}', file=sys.stderr)
    return 2
  inputs = (f'images by {IMAGES}' if bundle.images is not None else
            f'{len(bundle.features.output_names)} model inputs ({", ".join(bundle.features.output_names)})')
  print(f'wrote bundle {bundle.name} v{bundle.version} to {args.output}: {get_format(bundle.format).label}, '
        f'{bundle.outputs.kind}, taking {bundle.inputs.describe()}, {inputs}; checked'
        + (' and smoke-tested on the sample' if args.data else '')
        + (', and it reproduces --expected' if args.expected else ''))
  if not args.expected:
    print('note: not compared with your model\'s own outputs; pass --expected with rows your code predicted to '
          'prove that the bundle predicts the same')
  if args.register:
    try:
      version = registry.register_version(args.register, args.output.rstrip('/'), display_name=bundle.name,
                                          serving_image=args.serving_image, aliases=args.alias or (),
                                          api_endpoint=args.vertex_api_endpoint)
    except registry.RegistryError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
    print(f'registered {args.output} as {version.versioned_name} (aliases: {", ".join(version.aliases) or "none"})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
