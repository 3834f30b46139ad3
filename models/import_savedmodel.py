"""Bring your own model: turn an existing SavedModel and a feature description into a checked bundle.

    python -m models.import_savedmodel --saved_model my_model/ --features features.json \\
        --outputs outputs.json --name churn --version 3 --output gs://bucket/bundles/churn-3 \\
        [--data sample.parquet]

`features.json` lists the columns the model reads, in the order its input
matrix expects them, with the steps that turn each into numbers (see README).
Steps may carry their statistics (a z-score's mean and std, a vocabulary) or
leave them out: then `--data`, a sample of the data the model was trained on,
fits them, with the same code the pipeline applies. With `--data` the bundle
also stores the sample's statistics, which each run report compares against.

The bundle is checked before the command succeeds: the SavedModel loads, its
signature takes as many inputs as the features produce and returns what
outputs.json describes, and (with `--data`) it predicts finite values for
sample rows. A bundle that fails a check is removed.
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
from models.bundle import SAVED_MODEL, BundleError, ModelBundle, Outputs, write_bundle
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
  from models.handler import SavedModelPredictor
  rows = pa.Table.from_batches(valid).slice(0, SMOKE_ROWS).combine_chunks().to_batches()[0]
  predictor = SavedModelPredictor(bundle.saved_model_path, bundle.outputs.signature, bundle.outputs.output_key)
  scores = predictor.predict(bundle.features.transform(rows))
  if scores.shape != (rows.num_rows, bundle.outputs.width):
    raise BundleError(f'the model returned shape {scores.shape} for {rows.num_rows} sample rows; '
                      f'expected ({rows.num_rows}, {bundle.outputs.width})')
  if not np.isfinite(scores).all():
    raise BundleError(f'the model returned non-finite values for {int((~np.isfinite(scores)).any(axis=1).sum())} '
                      f'of {rows.num_rows} sample rows; check the feature steps and their statistics')
  return scores


def import_savedmodel(*, saved_model: str, features: str, outputs: str, name: str, version: str, output: str,
                      data: Optional[str] = None, data_format: Optional[str] = None) -> ModelBundle:
  """Builds, writes and checks a bundle; removes it again if a check fails."""
  try:
    spec = FeatureSpec.from_dict(_read_json(features, '--features'))
  except (ValueError, KeyError, TypeError) as e:
    raise BundleError(f'--features {features}: {e}') from None
  try:
    out = Outputs(**_read_json(outputs, '--outputs'))
  except TypeError as e:
    raise BundleError(f'--outputs {outputs}: {e}') from None
  if not FileSystems.exists(FileSystems.join(saved_model.rstrip('/'), 'saved_model.pb')):
    raise BundleError(f'--saved_model {saved_model} has no saved_model.pb: pass the SavedModel directory')
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
  copy_tree(saved_model, FileSystems.join(output, SAVED_MODEL))
  try:
    bundle = write_bundle(output, features=spec, outputs=out, name=name, version=version,
                          training_statistics=statistics, imported_from=saved_model)
    bundle.check_signature()
    if valid:
      smoke_test(bundle, valid)
  except Exception:
    FileSystems.delete([output])
    raise
  return bundle


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m models.import_savedmodel', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--saved_model', required=True, help='The SavedModel directory, local or gs://.')
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
    bundle = import_savedmodel(saved_model=args.saved_model, features=args.features, outputs=args.outputs,
                               name=args.name, version=args.version, output=args.output, data=args.data,
                               data_format=args.data_format)
  except (BundleError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  inputs = ', '.join(bundle.features.output_names)
  print(f'wrote bundle {bundle.name} v{bundle.version} to {args.output}: {bundle.outputs.kind}, '
        f'{len(bundle.features.output_names)} model inputs ({inputs}); checked'
        + (' and smoke-tested on the sample' if args.data else ''))
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
