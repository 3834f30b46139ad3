"""The launch step: resolve and check a job once, on the launcher, before its graph is built.

`resolve` does every piece of I/O the job needs before it starts: it loads and
checks the bundle, runs the preflight checks (files and tables alike), saves a
query input's result, opens the BigQuery read session, types the passthrough
columns, names the run and its attempt, and makes each output's destination
(`pipelines.destinations.kind_of`), which checks itself and prepares what the
workers write into. `build_pipeline` then only builds
from the `JobPlan` (`pipelines.graph.plan`), with no I/O, so the Dataflow job description can be built
offline from a plan made with `offline=True`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import logging
from typing import Iterable, Optional, Union

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from models import registry
from models.bundle import ModelBundle, batch_rows
from models.challenger import check_comparable
from models.inference import PredictionColumns
from pipelines.destinations import kind_of
from pipelines.graph import gate as gate_
from pipelines.graph.plan import JobPlan, ModelSettings
from pipelines.launcher import preflight
from pipelines.options import BatchInferenceOptions, new_run_id
from transforms.bigquery import checks as bqp
from transforms.bigquery.destination import PARQUET_STAGING
from transforms.bigquery.read import ReadSession, create_read_session
from transforms.bigquery.tables import TableRef
from transforms.destination import CheckFailed, Destination, OutputRows, RunSettings
from transforms.files import publish
from transforms.files.read import FileInput
from transforms.images.prepare import IMAGE_BATCH_ROWS
from transforms.text.prepare import TEXT_BATCH_ROWS
from transforms.images.source import LISTED_ROWS, ImageFiles
from transforms.text.document_files import DocumentFiles
from transforms.files.scored_keys import Incremental
from transforms.rows import dead_letters as dl
from transforms.rows.duplicate_keys import DuplicatePolicy

DEFAULT_KEY = 'row_id'


def _key_type(field: Optional[pa.Field]) -> pa.DataType:
  """An integer key stays an integer; any other key is written as text."""
  return pa.int64() if field is not None and pa.types.is_integer(field.type) else pa.string()


def _output_key_type(opts: BatchInferenceOptions, project: Optional[str], key: str) -> pa.DataType:
  """The key's type in an existing output (the query that would type it has not run yet), else text."""
  return kind_of(opts.output).existing_key_type(opts.output, key, project) or pa.string()


def _input_types(opts: BatchInferenceOptions, bundle: ModelBundle, bq_input: Optional[bqp.BigQueryInput],
                 offline: bool, peeked: Optional[pa.Schema]) -> tuple[pa.DataType, tuple[pa.Field, ...]]:
  """The key's type, and the passthrough columns with the type each has in the input table or the first
  input file with rows (`peeked` by preflight). When no file has a row (a day with no data), features take
  the bundle's types and other columns are text: there is no value to keep the type of."""
  columns = ([opts.key_column] if opts.key_column else []) + opts.passthrough
  if not columns:
    return pa.string(), ()
  if bq_input is not None:
    schema = bq_input.schema
  elif offline:  # the graph's shape does not depend on these types
    schema = pa.schema([pa.field(c, pa.string()) for c in columns])
  elif peeked is not None:
    schema = peeked
    missing = [c for c in opts.passthrough if c not in schema.names]
    if missing:
      raise ValueError(f'--passthrough_columns {missing} are not in {opts.input} (it has {schema.names})')
  else:
    logging.info('--input %s has no rows: the output columns take the types of the model\'s features, or text',
                 opts.input)
    dtypes = {f.name: pa.float64() if f.dtype == 'float' else pa.string() for f in bundle.features.features}
    schema = pa.schema([pa.field(c, dtypes.get(c, pa.string())) for c in columns])
  key_type = _key_type(schema.field(opts.key_column) if opts.key_column in schema.names else None)
  return key_type, tuple(schema.field(c).with_nullable(True) for c in opts.passthrough)


def _bigquery_input(opts: BatchInferenceOptions, bundle: ModelBundle, project: Optional[str], *, run_id: str,
                    check_only: bool, table: Optional[TableRef] = None) -> Optional[bqp.BigQueryInput]:
  """Checks a BigQuery input; saves a query's result and opens the read session unless only checking."""
  if not opts.reads_bigquery:
    return None
  bq = bqp.client(project or bqp.home_project(opts))
  bytes_processed = None
  if opts.input_query:
    parameters = [bqp.parse_parameter(p) for p in opts.query_parameter or ()]
    if check_only:
      bytes_processed = bqp.dry_run(bq, opts.input_query, parameters)
      return bqp.BigQueryInput(None, None, bytes_processed, query=opts.input_query,
                               query_parameters=tuple(opts.query_parameter or ()))
    table, bytes_processed = bqp.materialize_query(bq, opts.input_query, parameters,
                                                   temp_dataset=opts.temp_dataset(), run_id=run_id)
    logging.info('--input_query processed %s bytes into %s', f'{bytes_processed:,}', table)
  else:
    table = table or TableRef.parse(opts.input)
  schema = bqp.check_input_table(bq, table, bundle.features, key_column=opts.key_column, passthrough=opts.passthrough)
  session = None if check_only else create_read_session(
      table, schema, project=bq.project, row_restriction=opts.input_filter, max_streams=opts.bq_read_streams,
      snapshot_time=opts.snapshot())
  return bqp.BigQueryInput(table, schema, bytes_processed, session, query=opts.input_query,
                           query_parameters=tuple(opts.query_parameter or ()))


@dataclasses.dataclass(frozen=True)
class _EarlyRead:
  bundle: ModelBundle
  session: concurrent.futures.Future


def _read_table_early(opts: BatchInferenceOptions, bundle: Optional[ModelBundle], project: Optional[str], *,
                      check_only: bool, offline: bool) -> Optional[_EarlyRead]:
  """Checks a plain BigQuery input table and opens its read session on a thread, while preflight loads
  the model (seconds of a framework's import and load; the session is a round trip to BigQuery).

  Only where nothing the session needs comes later: a table (not a query, not --only_unscored's
  anti-join), a real run. None otherwise, or where the bundle does not load (preflight says why);
  `resolve` then does it in its place, as before. An error surfaces where the session is used.
  """
  if offline or check_only or not opts.reads_bigquery or opts.input_query or opts.only_unscored:
    return None
  try:
    bundle = bundle or registry.load_bundle(opts.model, api_endpoint=opts.vertex_api_endpoint)
  except Exception:  # pylint: disable=broad-except  (preflight loads it again and names the problem)
    return None
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix='read-session')
  session = pool.submit(_bigquery_input, opts, bundle, project, run_id=opts.run_id, check_only=False)
  pool.shutdown(wait=False)
  return _EarlyRead(bundle, session)


def _offline_bigquery_input(opts: BatchInferenceOptions, bundle: ModelBundle) -> bqp.BigQueryInput:
  """A stand-in with no streams, typed from the feature spec: the described graph has the real shape."""
  table = TableRef.parse(opts.input) if opts.input else TableRef('PROJECT', 'DATASET', 'query_result')
  fields = [pa.field(opts.key_column, pa.string())] + [
      pa.field(f.name, pa.float64() if f.dtype == 'float' else pa.string()) for f in bundle.features.features]
  fields += [pa.field(c, pa.string()) for c in opts.passthrough if c not in {f.name for f in fields}]
  schema = pa.schema(list({f.name: f for f in fields}.values()))
  return bqp.BigQueryInput(table, schema, None, ReadSession('', table, (), schema, None, opts.input_filter),
                           query=opts.input_query, query_parameters=tuple(opts.query_parameter or ()))


def _now() -> datetime.datetime:
  return datetime.datetime.now(datetime.timezone.utc)


def _settings(opts: BatchInferenceOptions, project: Optional[str], attempt: str,
              started_at: datetime.datetime) -> RunSettings:
  temp = (opts.view_as(GoogleCloudOptions).temp_location or '').rstrip('/')
  return RunSettings(opts.run_id, attempt, started_at, file_format=opts.output_format, write_method=opts.bq_write_method,
                     staging_base=FileSystems.join(temp, PARQUET_STAGING), project=project,
                     publish_mode=opts.db_publish_mode, password_secret=opts.db_password_secret,
                     min_input_fraction=0.0 if opts.only_unscored else opts.min_input_fraction,
                     copy_connections=opts.db_copy_connections)


def _destinations(opts: BatchInferenceOptions, columns: PredictionColumns,
                  settings: RunSettings) -> tuple[Destination, Destination]:
  """The predictions' and the dead letters' destinations for this attempt, each of the kind its URI names."""
  predictions = OutputRows('predictions', columns.schema, columns.descriptions, 'predicted_at',
                           key_name=columns.key_name, dictionary_columns=tuple(columns.dictionary_columns),
                           serving_schema=columns.table_schema, serving_rows=columns.table_rows,
                           primary_key=tuple(columns.primary_key))
  # Dead letters are JSON Lines in files, whatever --output_format says: their records are text of any shape.
  dead_letters = OutputRows('dead_letters', dl.WRITTEN_SCHEMA, dl.DESCRIPTIONS, dl.REJECTED_AT, file_format='jsonl')
  return (kind_of(opts.output).for_output(opts.output, predictions, settings),
          kind_of(opts.dead_letter_target).for_output(opts.dead_letter_target, dead_letters, settings))


def check_outputs(destinations: Iterable[Destination]) -> list[str]:
  """Runs each output's checks (a dataset that exists, a table that takes every column, a database that
  connects); returns what was checked, a line each. Raises PreflightError listing every problem once."""
  lines, problems = [], []
  for destination in destinations:
    try:
      lines += destination.check()
    except CheckFailed as e:
      problems += e.problems
    except ValueError as e:
      problems.append(str(e))
  if problems:
    raise preflight.PreflightError(list(dict.fromkeys(problems)))
  return lines


def _checked_input(bq_input: Optional[bqp.BigQueryInput]) -> list[str]:
  """What preflight checked of a BigQuery input, a line each, for `--preflight_only`."""
  lines = []
  if bq_input is not None and bq_input.bytes_processed is not None:
    lines.append(f'--input_query is valid and processes {bq_input.bytes_processed:,} bytes')
  if bq_input is not None and bq_input.schema is not None:
    lines.append(f'input {bq_input.table}: has the key and feature columns, of readable types')
  return lines


def _columns(opts: BatchInferenceOptions, bundle: ModelBundle, key: str, passthrough: tuple[pa.Field, ...],
             key_type: pa.DataType) -> PredictionColumns:
  return PredictionColumns(bundle.outputs, key, passthrough, bundle.name, bundle.version, opts.run_id,
                           key_type, top_k=opts.top_k, model_resource=bundle.registry_resource,
                           text_column=bundle.text_column if bundle.outputs.kind == 'entities' else None)


def resolve(options: PipelineOptions, *, check_only: bool = False, offline: bool = False,
            bundle: Optional[ModelBundle] = None, check_model: bool = True) -> tuple[JobPlan, preflight.PreflightReport]:
  """Resolves and checks the job `options` describe; sets their run id when it is empty.

  Args:
    options: the job's pipeline options.
    check_only: run every check but change nothing (`--preflight_only`): a query
      is dry-run, not saved, and no read session is opened.
    offline: contact no cloud service (the Dataflow job description): skip the
      input and output checks; BigQuery inputs and passthrough types get stand-ins.
    bundle: an already loaded bundle.
    check_model: load its SavedModel and check the signature (see `preflight.check`).

  Returns:
    The plan and the preflight report. Raises `preflight.PreflightError` (or
    ValueError) naming every problem found.
  """
  opts = options.view_as(BatchInferenceOptions)
  opts.run_id = opts.run_id or new_run_id()
  project = options.view_as(GoogleCloudOptions).project
  reading = _read_table_early(opts, bundle, project, check_only=check_only, offline=offline)
  report = preflight.check(opts, reading.bundle if reading else bundle, offline=offline, check_model=check_model)
  bundle = report.bundle
  challenger, thresholds = _challenger_and_gate(opts, bundle, check_model=check_model and not offline)
  models = [b for b in (bundle, challenger) if b is not None]
  if bundle.images is not None:  # rows name images: many per read batch, a model call's worth per chunk decoded
    opts.read_batch_size = opts.read_batch_size or LISTED_ROWS
    opts.max_batch_rows = opts.max_batch_rows or IMAGE_BATCH_ROWS
  if bundle.text is not None:  # a few sort windows per read batch; model calls are cut by tokens, rows a cap
    opts.read_batch_size = opts.read_batch_size or 4 * bundle.text.sort_window
    opts.max_batch_rows = opts.max_batch_rows or TEXT_BATCH_ROWS
  opts.fill_batch_sizes(batch_rows(*(b.format for b in models)))
  attempt = publish.new_attempt()
  key = opts.key_column or DEFAULT_KEY
  early_lines: list[str] = []
  try:
    opts.fill_share_model([b.format for b in models], lambda: max(b.model_bytes() for b in models))
    if offline:
      incremental = _skip_scored(opts, bundle, project, offline=True)[0]
      bq_input = _offline_bigquery_input(opts, bundle) if opts.reads_bigquery else None
    else:
      if opts.input_query:  # before the query costs anything, without the passthrough columns it will type
        probe = _columns(opts, bundle, key, (), _output_key_type(opts, project, key))
        settings = _settings(opts, project, attempt, _now())
        early_lines = check_outputs(d for d in _destinations(opts, probe, settings) if d.checks_before_query)
      incremental, unscored = _skip_scored(opts, bundle, project, offline=False) if not check_only else (None, None)
      bq_input = reading.session.result() if reading else _bigquery_input(
          opts, bundle, project, run_id=opts.run_id, check_only=check_only, table=unscored)
    typed = bq_input is None or bq_input.schema is not None  # a dry-run query has no result table to type from
    key_type, passthrough = _input_types(opts, bundle, bq_input, offline, report.input_schema) if typed else (pa.string(), ())
    columns = _columns(opts, bundle, key, passthrough, key_type)
    started_at = _now()
    predictions, dead_letters = _destinations(opts, columns, _settings(opts, project, attempt, started_at))
    if not offline:
      report.tables += _checked_input(bq_input)
      if typed:
        report.tables += check_outputs((predictions, dead_letters))
      else:  # a dry-run query: what was checked before it stands; the rest is checked now, untyped
        report.tables += early_lines + check_outputs(d for d in (predictions, dead_letters) if not d.checks_before_query)
      if not check_only:
        for destination in (predictions, dead_letters):
          destination.prepare()
  except preflight.PreflightError:
    raise
  except ValueError as e:
    raise preflight.PreflightError([str(e)]) from None
  source = opts.input or (f'query into {bq_input.table}' if bq_input.table else 'the --input_query')
  plan = JobPlan(run_id=opts.run_id, attempt=attempt, started_at=started_at, bundle=bundle, columns=columns,
                 source=source, input=bq_input or _file_input(opts, bundle),
                 predictions=predictions, dead_letters=dead_letters, records=opts.records_location(),
                 runner=opts.runner_name(), read_batch_size=opts.read_batch_size, key_column=opts.key_column,
                 passthrough=tuple(opts.passthrough),
                 model=ModelSettings(opts.min_batch_rows, opts.max_batch_rows, opts.share_model(), opts.device,
                                     opts.inference_accelerator, threads=opts.model_threads,
                                     worker_processes=opts.worker_processes(),
                                     spare_core=bundle.images is None and bundle.text is None),
                 challenger=challenger, segment_column=opts.segment_column, gate=thresholds, report=opts.report,
                 max_rejected_fraction=opts.max_rejected_fraction, incremental=incremental,
                 duplicates=DuplicatePolicy.parse(opts.on_duplicate_key) if opts.key_column else None)
  return plan, report


def _file_input(opts: BatchInferenceOptions, bundle: ModelBundle) -> Union[FileInput, ImageFiles, DocumentFiles]:
  """A glob of table files, of an image model's image files (one row each), or of a text model's documents
  (one row per chunk)."""
  if opts.reads_image_files(bundle):
    return ImageFiles(opts.input)
  if opts.reads_document_files(bundle):
    return DocumentFiles(opts.input, bundle.text, bundle.tokenizer_path)
  return FileInput(opts.input, opts.input_format, opts.key_column)


def _skip_scored(opts: BatchInferenceOptions, bundle: ModelBundle, project: Optional[str], *,
                 offline: bool) -> tuple[Optional[Incremental], Optional[TableRef]]:
  """--only_unscored: how the run skips rows this model version scored before, as the output's kind does it
  (earlier runs' key files for a folder; one anti-join for a table), and the table of unscored rows to read."""
  if not opts.only_unscored:
    return None, None
  return kind_of(opts.output).skip_scored(opts, bundle.name, bundle.version, project, offline=offline)


def _challenger_and_gate(opts: BatchInferenceOptions, bundle: ModelBundle, *,
                         check_model: bool) -> tuple[Optional[ModelBundle], tuple[gate_.Threshold, ...]]:
  """Loads and checks --challenger against the model; parses --gate. Raises PreflightError."""
  problems, challenger, thresholds = [], None, ()
  if opts.challenger:
    try:
      challenger = ModelBundle.load(opts.challenger)
      if check_model:
        challenger.check_signature()
      check_comparable(bundle, challenger)
    except ValueError as e:  # BundleError is one
      problems.append(f'--challenger: {e}')
  try:
    thresholds = gate_.parse(opts.gate, challenger=bool(opts.challenger))
  except ValueError as e:
    problems.append(str(e))
  needs = gate_.needs_training_statistics(thresholds)
  if needs and bundle.training_statistics is None:
    problems.append(f'--gate: {", ".join(needs)} compare with training, but {bundle.path} holds no training statistics')
  if problems:
    raise preflight.PreflightError(problems)
  return challenger, thresholds
