"""Preflight checks of file inputs and outputs: the input's files list and read as the model needs, and
an output folder takes a file. Run on the launcher (`pipelines.launcher.preflight`) before any worker."""

from __future__ import annotations

import uuid
from typing import Any, Optional

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.features.spec import FeatureSpec
from transforms.files.csv_reader import repeated_columns
from transforms.files.read import peek_schema
from transforms.files.readers import infer_format
from transforms.rows.validation import check_schema

# Files whose schema preflight reads. Each costs one small read; the rest of a
# large input is checked as it is read.
MAX_FILES_PEEKED = 20


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


def check_input(opts: Any, spec: Optional[FeatureSpec]) -> tuple[list[str], list[str], int, int, Optional[pa.Schema]]:
  """Lists `opts.input`'s files and reads the schema of the first MAX_FILES_PEEKED with bytes against
  `spec`: (problems, notes, files, files peeked, the first schema read). `opts` are the job's options, by name."""
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
