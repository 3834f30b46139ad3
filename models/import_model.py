"""Bring your own model: turn a trained model and a feature description into a checked bundle.

    python -m models.import_model --model MODEL --features features.json --outputs outputs.json \\
        --name churn --version 3 --output gs://bucket/bundles/churn-3 [--data sample.parquet]

MODEL, by framework (the format follows from the name; --format overrides):

    TensorFlow    --model my_model/               a SavedModel directory (the default format)
    ONNX          --model model.onnx              any framework's ONNX export      pip install ".[onnx]"
    PyTorch       --model model.pt2               torch.export.save(...), or a
                  --model model.pt                TorchScript torch.jit.save(...)  pip install ".[torch]"
    XGBoost       --model model.ubj               booster.save_model('model.ubj' or 'model.json')
                                                                                   pip install ".[xgboost]"
    scikit-learn  --model model.skops             skops.io.dump(estimator, ...)    pip install ".[sklearn]"

A pickle (a scikit-learn .pkl/.joblib, a torch.save'd module) runs code when
loaded and is refused, with the command that converts it.

`features.json` lists the columns the model reads, in the order its input
matrix expects them, with the steps that turn each into numbers (see README).
Steps may carry their statistics (a z-score's mean and std, a vocabulary) or
leave them out: then `--data`, a sample of the data the model was trained on,
fits them, with the same code the pipeline applies. With `--data` the bundle
also stores the sample's statistics, which each run report compares against.

The bundle is checked before the command succeeds: the model loads, takes as
many inputs as the features produce and returns what outputs.json describes,
and (with `--data`) it predicts finite values for sample rows. A bundle that
fails a check is removed.
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

from models.bundle import SAVED_MODEL, BundleError, ModelBundle, Outputs, write_bundle
from models.handlers import FORMATS, get_format, load_predictor, read_bytes
from transforms.features import FeatureSpec, fit_in_memory
from transforms.profile import profile_in_memory
from transforms.readers import Rejected, infer_format, open_file, read_file
from transforms.validation import validate

# Sample rows the imported model must predict finite values for.
SMOKE_ROWS = 256


def _read_json(path: str, what: str) -> Any:
  try:
    with FileSystems.open(path) as f:
      return json.loads(f.read().decode('utf-8'))
  except (OSError, ValueError) as e:
    raise BundleError(f'{what} {path}: {e}') from None


def read_sample(pattern: str, spec: FeatureSpec, *, file_format: Optional[str] = None,
                batch_size: int = 8192) -> tuple[list[pa.RecordBatch], list[pa.RecordBatch], int]:
  """Reads sample files as the pipeline does: (raw batches, valid batches, rows rejected)."""
  matches = FileSystems.match([pattern])[0].metadata_list
  if not matches:
    raise BundleError(f'--data {pattern} matches no files')
  raw, valid, rejected = [], [], 0
  for m in sorted(matches, key=lambda m: m.path):
    fmt = file_format or infer_format(m.path)
    with open_file(m.path, fmt) as f:
      for item in read_file(f, m.path, fmt, batch_size=batch_size, columns=spec.columns):
        if isinstance(item, Rejected):
          rejected += item.letters.num_rows
          continue
        raw.append(item)
        good, letters = validate(item, spec)
        rejected += letters.num_rows if letters is not None else 0
        if good.num_rows:
          valid.append(good)
  if not valid:
    raise BundleError(f'--data {pattern}: no row passed validation against the feature description '
                      f'({rejected} rejected); check the column names and types')
  return raw, valid, rejected


def copy_tree(source: str, destination: str) -> None:
  """Copies a directory, local or gs://; Beam's file systems copy a whole tree given a trailing '/'."""
  FileSystems.copy([source.rstrip('/') + '/'], [destination.rstrip('/') + '/'])


def smoke_test(bundle: ModelBundle, valid: Sequence[pa.RecordBatch]) -> np.ndarray:
  """Predicts the first sample rows with the bundle as the pipeline would; raises unless all are finite."""
  rows = pa.Table.from_batches(valid).slice(0, SMOKE_ROWS).combine_chunks().to_batches()[0]
  predictor = load_predictor(bundle.format, bundle.model_path, bundle.outputs, options=bundle.load_options)
  scores = predictor.predict(bundle.features.transform(rows))
  if scores.shape != (rows.num_rows, bundle.outputs.width):
    raise BundleError(f'the model returned shape {scores.shape} for {rows.num_rows} sample rows; '
                      f'expected ({rows.num_rows}, {bundle.outputs.width})')
  if not np.isfinite(scores).all():
    raise BundleError(f'the model returned non-finite values for {int((~np.isfinite(scores)).any(axis=1).sum())} '
                      f'of {rows.num_rows} sample rows; check the feature steps and their statistics')
  return scores


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


def _load_options(fmt: str, data: bytes, trusted_types: Sequence[str]) -> dict[str, Any]:
  if fmt != 'sklearn':
    return {}
  from models.handlers.sklearn import untrusted_types
  refused = untrusted_types(data, trusted_types)
  if refused:
    raise BundleError(f'the skops file holds types that skops does not trust by default: {refused}; if you '
                      f'trust them, pass --trusted_types {",".join(refused)}')
  return {'trusted_types': list(trusted_types)} if trusted_types else {}


def import_model(*, model: str, features: str, outputs: str, name: str, version: str, output: str,
                 data: Optional[str] = None, data_format: Optional[str] = None, model_format: Optional[str] = None,
                 trusted_types: Sequence[str] = ()) -> ModelBundle:
  """Builds, writes and checks a bundle; removes it again if a check fails."""
  fmt = model_format or infer_model_format(model)
  try:
    get_format(fmt)
  except ValueError as e:
    raise BundleError(f'--format: {e}') from None
  try:
    spec = FeatureSpec.from_dict(_read_json(features, '--features'))
  except (ValueError, KeyError, TypeError) as e:
    raise BundleError(f'--features {features}: {e}') from None
  try:
    out = Outputs(**_read_json(outputs, '--outputs'))
  except TypeError as e:
    raise BundleError(f'--outputs {outputs}: {e}') from None
  if fmt == SAVED_MODEL:
    if not FileSystems.exists(FileSystems.join(model.rstrip('/'), 'saved_model.pb')):
      raise BundleError(f'--model {model} has no saved_model.pb: pass the SavedModel directory')
    model_file, options, model_bytes = SAVED_MODEL, {}, b''
  else:
    if not FileSystems.exists(model):
      raise BundleError(f'--model {model} does not exist')
    model_bytes = read_bytes(model)
    try:
      model_file = _model_file(fmt, model, model_bytes)
    except ValueError as e:
      raise BundleError(f'--model {model}: {e}') from None
    options = _load_options(fmt, model_bytes, trusted_types)
  statistics, valid = None, []
  if data:
    raw, valid, rejected = read_sample(data, spec, file_format=data_format)
    logging.info('sample %s: %d rows valid, %d rejected', data, sum(b.num_rows for b in valid), rejected)
    if not spec.is_fitted:
      spec = fit_in_memory(spec, valid)
    statistics = profile_in_memory(spec, raw)
  elif not spec.is_fitted:
    unfitted = [f.name for f in spec.features if not f.is_fitted]
    raise BundleError(f'--features {features}: steps of {unfitted} have no statistics; '
                      'pass --data with a sample of the training data to fit them')

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
  try:
    bundle = write_bundle(output, features=spec, outputs=out, name=name, version=version,
                          training_statistics=statistics, imported_from=model, **extra)
    bundle.check_signature()
    if valid:
      smoke_test(bundle, valid)
  except Exception:
    FileSystems.delete([output])
    raise
  return bundle


def import_savedmodel(*, saved_model: str, **kwargs: Any) -> ModelBundle:
  """`import_model` for a SavedModel directory (the original command's name)."""
  return import_model(model=saved_model, model_format=SAVED_MODEL, **kwargs)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m models.import_model', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  model = parser.add_mutually_exclusive_group(required=True)
  model.add_argument('--model', help='The model: a SavedModel directory, or a .onnx, .pt2/.pt, .ubj/.json or '
                     '.skops file; local or gs://.')
  model.add_argument('--saved_model', help='A SavedModel directory (the same as --model DIR --format saved_model).')
  parser.add_argument('--format', default=None, choices=list(FORMATS),
                      help='The model format. Default: from --model (a directory with saved_model.pb, or the '
                      'file ending).')
  parser.add_argument('--trusted_types', default='',
                      help='scikit-learn: comma-separated types, beyond scikit-learn\'s, NumPy\'s and SciPy\'s, '
                      'that skops may load from the file (the error lists them). Default: none.')
  parser.add_argument('--features', required=True, help='features.json: columns, types and steps, in input order.')
  parser.add_argument('--outputs', required=True,
                      help='outputs.json: {"kind": "classification", "classes": [...]} or {"kind": "regression"}.')
  parser.add_argument('--name', required=True, help='Model name stamped on every prediction.')
  parser.add_argument('--version', required=True, help='Model version stamped on every prediction.')
  parser.add_argument('--output', required=True, help='Bundle directory to write, local or gs://.')
  parser.add_argument('--data', default=None,
                      help='Sample of the training data (path or glob): fits unfitted steps, stores the statistics '
                      'run reports compare against, and smoke-tests the model.')
  parser.add_argument('--data_format', default=None, help='Format of --data. Default: from the extension.')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(message)s')
  try:
    bundle = import_model(model=args.model or args.saved_model, features=args.features, outputs=args.outputs,
                          name=args.name, version=args.version, output=args.output, data=args.data,
                          data_format=args.data_format,
                          model_format=SAVED_MODEL if args.saved_model else args.format,
                          trusted_types=[t.strip() for t in args.trusted_types.split(',') if t.strip()])
  except (BundleError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  inputs = ', '.join(bundle.features.output_names)
  print(f'wrote bundle {bundle.name} v{bundle.version} to {args.output}: {get_format(bundle.format).label}, '
        f'{bundle.outputs.kind}, '
        f'{len(bundle.features.output_names)} model inputs ({inputs}); checked'
        + (' and smoke-tested on the sample' if args.data else ''))
  return 0


if __name__ == '__main__':
  sys.exit(main())
