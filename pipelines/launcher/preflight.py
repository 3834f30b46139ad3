"""Checks that a run can succeed, on the launcher, before any worker starts.

A job that cannot finish should cost a second and say why, not an hour of
workers and a stack trace. `check` collects every problem it finds (a bundle
that does not load or disagrees with its spec, input that is missing or lacks
the features, schemas the model cannot read, an output that cannot be
written) and raises them together, column by column and file by file.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Optional

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from models import registry
from models.bundle import BundleError, ModelBundle
from pipelines.options import BatchInferenceOptions
from transforms.files.publish import check_run_id
from transforms.bigquery.tables import is_table
from transforms.files.csv_reader import repeated_columns
from transforms.features.spec import FeatureSpec
from transforms.postgres.tables import is_database
from transforms.files.readers import infer_format
from transforms.files.read import peek_schema
from transforms.rows.validation import check_schema

# Files whose schema preflight reads. Each costs one small read; the rest of a
# large input is checked as it is read.
MAX_FILES_PEEKED = 20


class PreflightError(ValueError):
  """The run cannot succeed; `problems` says why, one line each."""

  def __init__(self, problems: list[str]):
    super().__init__('preflight failed:\n' + '\n'.join(f'  - {p}' for p in problems))
    self.problems = problems


@dataclasses.dataclass
class PreflightReport:
  """What preflight checked, for the `--preflight_only` message."""
  bundle: ModelBundle
  files: int
  files_peeked: int
  notes: list[str]
  tables: list[str] = dataclasses.field(default_factory=list)  # what was checked of BigQuery or PostgreSQL
  writable: list[str] = dataclasses.field(default_factory=list)  # folders a probe file was written to
  # The first input file with rows: its columns' types (read once here, used again to type the output).
  input_schema: Optional[pa.Schema] = None

  def render(self) -> str:
    lines = [f'preflight passed: model {self.bundle.name} v{self.bundle.version} loads and takes '
             f'{len(self.bundle.features.output_names)} feature values']
    if self.files:
      lines.append(f'  input      {self.files} files; schema checked on {self.files_peeked}')
    lines += [f'  tables     {line}' for line in self.tables]
    if self.writable:
      lines.append(f'  writable   {", ".join(self.writable)}')
    return '\n'.join(lines + [f'  note: {n}' for n in self.notes])



def schema_problems(schema: pa.Schema, spec: FeatureSpec, *, key_column: Optional[str] = None,
                    passthrough: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
  """Problems (and notes) of one input file's schema against a feature spec (`check_schema`), in the
  order of the spec's features, then the flags."""
  found = check_schema(schema, spec, key_column=key_column, passthrough=passthrough)
  problems = []
  for feature in spec.features:
    if feature.name in found.missing:
      problems.append(f'missing required feature column {feature.name!r} (the model has no fill value for it)')
    elif feature.name in found.unreadable:
      problems.append(f'column {feature.name!r} is {schema.field(feature.name).type}, '
                      f'which cannot be read as {feature.dtype}')
  problems += [f'{flag} {column!r} is not a column' for flag, column in found.absent]
  return problems, [f'no column {name!r}: every row gets its fill value' for name in found.filled]


def _check_input(opts: BatchInferenceOptions,
                 spec: Optional[FeatureSpec]) -> tuple[list[str], list[str], int, int, Optional[pa.Schema]]:
  try:
    files = sorted((m.path, m.size_in_bytes) for m in FileSystems.match([opts.input])[0].metadata_list)
  except Exception as e:  # pylint: disable=broad-except  (each file system raises its own types)
    return [f'--input {opts.input}: cannot list files: {e}'], [], 0, 0, None
  if not files:
    return [f'--input {opts.input} matches no files'], [], 0, 0, None
  paths = [path for path, _ in files]
  problems, notes, peeked, first = [], [], 0, None
  if not opts.input_format:
    for path in paths:
      try:
        infer_format(path)
      except ValueError as e:
        problems.append(str(e))
  for path in [path for path, size in files if size][:MAX_FILES_PEEKED]:  # 0 bytes: an empty file, no rows
    try:
      schema = peek_schema(path, file_format=opts.input_format)
    except ValueError as e:
      if 'no readable rows' in str(e):
        continue  # an empty file: nothing to check, nothing to predict
      problems.append(f'cannot read {path}: {e}')
      continue
    except Exception as e:  # pylint: disable=broad-except  (a corrupt file raises anything)
      problems.append(f'cannot read {path}: {type(e).__name__}: {e}')
      continue
    peeked += 1
    first = first or schema
    if spec is not None:
      found, fills = schema_problems(schema, spec, key_column=opts.key_column, passthrough=tuple(opts.passthrough))
      problems += [f'{path}: {p}' for p in found]
      notes += [f'{path}: {n}' for n in fills]
      used = set(spec.columns) | {opts.key_column} | set(opts.passthrough)
      for name, copies in repeated_columns(schema).items():
        if name in used:
          problems.append(f'{path}: the header names column {name!r} {copies} times, so which one to read is '
                          'ambiguous; rename the copies')
        else:
          notes.append(f'{path}: column {name!r} appears {copies} times; the job does not read it, so the '
                       'copies are ignored')
  return problems, notes, len(paths), peeked, first


def check_writable(directory: str) -> Optional[str]:
  """Writes and deletes a probe file in `directory`; returns the problem, or None."""
  probe = FileSystems.join(directory.rstrip('/'), f'.preflight-{uuid.uuid4().hex}')
  try:
    with FileSystems.create(probe) as f:
      f.write(b'preflight')
    FileSystems.delete([probe])
  except Exception as e:  # pylint: disable=broad-except
    return f'cannot write to {directory}: {type(e).__name__}: {e}'
  return None


def check(opts: BatchInferenceOptions, bundle: Optional[ModelBundle] = None, *,
          offline: bool = False, check_model: bool = True) -> PreflightReport:
  """Runs the flag, bundle and file checks; raises `PreflightError` listing all problems found.

  BigQuery tables are checked by `pipelines.launcher.resolve.resolve`, which calls this first.

  Args:
    opts: the job's options.
    bundle: an already loaded bundle; loaded from `opts.model` when None.
    offline: check only the flags and the bundle, touching no input or output.
    check_model: load the SavedModel and check its signature; False when the
      caller serves the bundle's features through another model handler.

  Returns:
    The report, holding the loaded and signature-checked bundle.
  """
  try:
    opts.validate_flags()
    if opts.run_id:
      check_run_id(opts.run_id)
  except ValueError as e:
    raise PreflightError(str(e).split('; ')) from None
  problems: list[str] = []
  try:
    bundle = bundle or registry.load_bundle(opts.model, api_endpoint=opts.vertex_api_endpoint)
    if check_model:
      bundle.check_signature()
  except (BundleError, registry.RegistryError) as e:
    problems.append(str(e))
    bundle = None
  except Exception as e:  # pylint: disable=broad-except  (an unreachable or unreadable bundle folder)
    problems.append(f'cannot load the model bundle {opts.model}: {type(e).__name__}: {e}')
    bundle = None
  notes, files, peeked, writable, schema = [], 0, 0, [], None
  if not offline and not opts.reads_bigquery:  # tables are checked by pipelines.launcher.resolve
    found, notes, files, peeked, schema = _check_input(opts, bundle.features if bundle else None)
    problems += found
  folders = [opts.output, opts.dead_letter_target, opts.records_location()]
  folders = [d for d in dict.fromkeys(folders) if d and not is_table(d) and not is_database(d)]
  for directory in [] if offline else folders:
    problem = check_writable(directory)
    if problem:
      problems.append(problem)
    else:
      writable.append(directory)
  if problems:
    raise PreflightError(problems)
  for note in notes:
    logging.info('preflight: %s', note)
  return PreflightReport(bundle, files, peeked, notes, writable=writable, input_schema=schema)
