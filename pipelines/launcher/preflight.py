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
from typing import Optional

import pyarrow as pa

from models import registry
from models.bundle import IMAGE_COLUMN, TEXT_COLUMN, BundleError, ModelBundle
from pipelines.destinations import kind_of
from pipelines.options import BatchInferenceOptions
from transforms.files import checks
from transforms.files.publish import check_run_id
from transforms.images import listing
from transforms.images import source as image_source
from transforms.text import document_files


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



def _image_bundle(opts, bundle: ModelBundle) -> ModelBundle:
  """An image model's bundle reading the images from --image_column, keyed by it unless --key_column
  names another (a glob of image files: by each file's URI)."""
  column = image_source.URI if opts.reads_image_files(bundle) else (opts.image_column or IMAGE_COLUMN)
  opts.key_column = opts.key_column or column
  return bundle.with_image_column(column)


def _text_bundle(opts, bundle: ModelBundle) -> ModelBundle:
  """A text model's bundle reading the texts from --text_column. Keyed by --key_column, or like any table
  by each row's source and position: a text is no key. Document files' chunks are keyed by document#chunk
  and carry their document, chunk, page and offsets to the predictions."""
  if opts.reads_document_files(bundle):
    opts.key_column = opts.key_column or document_files.KEY
    named = [c.strip() for c in (opts.passthrough_columns or '').split(',') if c.strip()]
    added = [c for c in document_files.PROVENANCE if c not in named and c != opts.key_column]
    opts.passthrough_columns = ','.join(named + added)
    return bundle.with_text_column(document_files.TEXT)
  return bundle.with_text_column(opts.text_column or TEXT_COLUMN)


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
  if bundle is not None and bundle.images is not None:
    bundle = _image_bundle(opts, bundle)
  if bundle is not None and bundle.text is not None:
    bundle = _text_bundle(opts, bundle)
  notes, files, peeked, writable, schema = [], 0, 0, [], None
  if opts.reads_image_files(bundle):  # one listing call to the first match: a full listing runs on the workers
    schema = image_source.SCHEMA
    problems += [] if offline else listing.input_problems(opts.input)
  elif opts.reads_document_files(bundle):  # the same: the workers list, read and cut the documents
    schema = document_files.SCHEMA
    problems += [] if offline else listing.input_problems(opts.input)
    if opts.text_column:
      problems.append(f'--text_column {opts.text_column} names a column of a table; document files give each '
                      f'chunk\'s text as {document_files.TEXT!r}: remove --text_column')
  elif not offline and not opts.reads_bigquery:  # tables are checked by pipelines.launcher.resolve
    found, notes, files, peeked, schema = checks.check_input(opts, bundle.features if bundle else None)
    problems += found
  if opts.image_column and (bundle is None or bundle.images is None or opts.reads_image_files(bundle)):
    problems.append(f'--image_column {opts.image_column} names the column of a table holding images, for an image '
                    'model; ' + ('a glob of image files gives each file\'s uri' if bundle is not None and
                                 bundle.images is not None else 'this model takes no images') + ': remove it')
  folders = [opts.output, opts.dead_letter_target, opts.records_location()]
  folders = [d for d in dict.fromkeys(folders) if d and kind_of(d).holds_run_folders]
  for directory in [] if offline else folders:
    problem = checks.check_writable(directory)
    if problem:
      problems.append(problem)
    else:
      writable.append(directory)
  if problems:
    raise PreflightError(problems)
  for note in notes:
    logging.info('preflight: %s', note)
  return PreflightReport(bundle, files, peeked, notes, writable=writable, input_schema=schema)
