"""The launch step: resolve and check a job once, on the launcher, before its graph is built.

`resolve` does every piece of I/O the job needs before it starts: it loads and
checks the bundle, runs the preflight checks (files and tables alike), saves a
query input's result, opens the BigQuery read session, types the passthrough
columns and names the run and its attempt. `build_pipeline` then only builds
from the `JobPlan` (`pipelines.graph.plan`), with no I/O, so the Dataflow job description can be built
offline from a plan made with `offline=True`.
"""

from __future__ import annotations

import datetime
import logging
from typing import Optional

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from models.bundle import ModelBundle, batch_rows
from models.challenger import check_comparable
from models.inference import PredictionColumns
from transforms.bigquery import checks as bqp
from pipelines.graph import gate as gate_
from transforms.files import scored_keys as incremental_
from transforms.postgres import publish as pgpub
from pipelines.graph.plan import PARQUET_STAGING, Destination, JobPlan
from pipelines.launcher import preflight
from pipelines.options import BatchInferenceOptions, new_run_id
from transforms.files import publish
from transforms.rows import dead_letters as dl
from transforms.bigquery.tables import TableRef, is_table, table_schema
from transforms.bigquery.read import ReadSession, create_read_session
from transforms.postgres.tables import PgTarget, is_database

DEFAULT_KEY = 'row_id'


def _key_type(field: Optional[pa.Field]) -> pa.DataType:
  """An integer key stays an integer; any other key is written as text."""
  return pa.int64() if field is not None and pa.types.is_integer(field.type) else pa.string()


def _output_key_type(opts: BatchInferenceOptions, project: Optional[str], key: str) -> pa.DataType:
  """The key's type in an existing output table (the query that would type it has not run yet), else text."""
  if not is_table(opts.output):
    return pa.string()
  table = TableRef.parse(opts.output)
  try:
    fields = {f.name: f for f in bqp.client(project or table.project).get_table(table.dotted).schema}
  except Exception:  # pylint: disable=broad-except  (a missing table or dataset: check_tables says which)
    return pa.string()
  kind = fields[key].field_type if key in fields else 'STRING'
  return pa.int64() if kind in ('INT64', 'INTEGER') else pa.string()


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
      return bqp.BigQueryInput(None, None, bytes_processed)
    table, bytes_processed = bqp.materialize_query(bq, opts.input_query, parameters,
                                                   temp_dataset=opts.temp_dataset(), run_id=run_id)
    logging.info('--input_query processed %s bytes into %s', f'{bytes_processed:,}', table)
  else:
    table = table or TableRef.parse(opts.input)
  schema = bqp.check_input_table(bq, table, bundle.features, key_column=opts.key_column, passthrough=opts.passthrough)
  session = None if check_only else create_read_session(
      table, schema, project=bq.project, row_restriction=opts.input_filter, max_streams=opts.bq_read_streams,
      snapshot_time=opts.snapshot())
  return bqp.BigQueryInput(table, schema, bytes_processed, session)


def _offline_bigquery_input(opts: BatchInferenceOptions, bundle: ModelBundle) -> bqp.BigQueryInput:
  """A stand-in with no streams, typed from the feature spec: the described graph has the real shape."""
  table = TableRef.parse(opts.input) if opts.input else TableRef('PROJECT', 'DATASET', 'query_result')
  fields = [pa.field(opts.key_column, pa.string())] + [
      pa.field(f.name, pa.float64() if f.dtype == 'float' else pa.string()) for f in bundle.features.features]
  fields += [pa.field(c, pa.string()) for c in opts.passthrough if c not in {f.name for f in fields}]
  schema = pa.schema(list({f.name: f for f in fields}.values()))
  return bqp.BigQueryInput(table, schema, None, ReadSession('', table, (), schema, None, opts.input_filter))


def parquet_base(opts: BatchInferenceOptions) -> str:
  return FileSystems.join((opts.view_as(GoogleCloudOptions).temp_location or '').rstrip('/'), PARQUET_STAGING)


def _destinations(opts: BatchInferenceOptions, columns: PredictionColumns, run_id: str,
                  attempt: str) -> tuple[Destination, Destination]:
  """The predictions' and the dead letters' destinations for this attempt."""
  def folder(uri: str, name: str) -> Optional[str]:
    if is_database(uri):
      return None
    if not is_table(uri):
      return publish.attempt_folder(uri, run_id, attempt)
    if opts.bq_write_method == 'FILE_LOADS':
      return FileSystems.join(publish.attempt_folder(parquet_base(opts), run_id, attempt), name)
    return None

  dead = opts.dead_letter_target
  schema = columns.table_schema if is_database(opts.output) else columns.schema
  return (Destination(opts.output, schema, columns.descriptions, 'predicted_at',
                      folder(opts.output, 'predictions'), tuple(columns.dictionary_columns)),
          Destination(dead, dl.TABLE_SCHEMA if is_table(dead) else dl.WRITTEN_SCHEMA,
                      dl.DESCRIPTIONS, dl.REJECTED_AT, folder(dead, 'dead_letters')))


def check_tables(project: Optional[str], destinations: tuple[Destination, ...]) -> None:
  """The output datasets exist, and existing output tables take every column the job writes."""
  for d in destinations:
    if d.is_table:
      bqp.check_output_table(bqp.client(project or d.table.project), d.table,
                             table_schema(d.schema, d.descriptions))


def _checked_tables(bq_input: Optional[bqp.BigQueryInput], destinations: tuple[Destination, ...]) -> list[str]:
  """What preflight checked of BigQuery, a line each, for `--preflight_only`."""
  lines = []
  if bq_input is not None and bq_input.bytes_processed is not None:
    lines.append(f'--input_query is valid and processes {bq_input.bytes_processed:,} bytes')
  if bq_input is not None and bq_input.schema is not None:
    lines.append(f'input {bq_input.table}: has the key and feature columns, of readable types')
  lines += [f'output {d.uri}: the dataset exists and the table (or the one the job creates) takes every column'
            for d in destinations if d.is_table]
  return lines


def _columns(opts: BatchInferenceOptions, bundle: ModelBundle, key: str, passthrough: tuple[pa.Field, ...],
             key_type: pa.DataType) -> PredictionColumns:
  if bundle.outputs.kind == 'ranking' and opts.output_format == 'csv' and not (
      is_table(opts.output) or is_database(opts.output)):
    raise ValueError('a ranking model writes lists (top_items, top_scores), which CSV cannot hold: '
                     'use --output_format=parquet or jsonl')
  return PredictionColumns(bundle.outputs, key, passthrough, bundle.name, bundle.version, opts.run_id,
                           key_type, top_k=opts.top_k, model_resource=bundle.registry_resource)


def _database(opts: BatchInferenceOptions, columns: PredictionColumns, attempt: str, *, offline: bool,
              check_only: bool, report: preflight.PreflightReport) -> Optional[pgpub.DatabaseOutput]:
  """Checks a database --output (connection, columns, privileges); unless only checking, creates the
  serving table if missing and this attempt's staging table."""
  if not is_database(opts.output):
    return None
  target = PgTarget.parse(opts.output)
  database = pgpub.DatabaseOutput(target, target.staging_table(opts.run_id, attempt), tuple(columns.primary_key),
                                  opts.db_publish_mode, opts.db_password_secret)
  if offline:
    return database
  problems = pgpub.check_target(target, columns.table_schema, database.key, password_secret=database.password_secret)
  if problems:
    raise preflight.PreflightError(problems)
  report.tables.append(f'output {target}: connects; the table (or the one the job creates) takes every column, '
                       f'keyed by {", ".join(database.key)}; the user may create, insert and delete')
  if not check_only:
    pgpub.create_tables(target, columns.table_schema, database.key, database.staging,
                        password_secret=database.password_secret)
  return database


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
  report = preflight.check(opts, bundle, offline=offline, check_model=check_model)
  bundle = report.bundle
  challenger, thresholds = _challenger_and_gate(opts, bundle, check_model=check_model and not offline)
  models = [b for b in (bundle, challenger) if b is not None]
  opts.fill_batch_sizes(batch_rows(*(b.format for b in models)))
  attempt = publish.new_attempt()
  key = opts.key_column or DEFAULT_KEY
  try:
    opts.fill_share_model([b.format for b in models], lambda: max(b.model_bytes() for b in models))
    if offline:
      bq_input = _offline_bigquery_input(opts, bundle) if opts.reads_bigquery else None
      incremental = (incremental_.Incremental(opts.row_version_column, (), FileSystems.join(incremental_.index_folder(
          opts.output, bundle.name, bundle.version), f'{opts.run_id}.json'))
                     if opts.only_unscored and not is_table(opts.output) else None)
    else:
      if opts.input_query:  # before the query costs anything, without the passthrough columns it will type
        probe = _columns(opts, bundle, key, (), _output_key_type(opts, project, key))
        check_tables(project, _destinations(opts, probe, opts.run_id, attempt))
      incremental, unscored = _incremental(opts, bundle, project, check_only=check_only)
      bq_input = _bigquery_input(opts, bundle, project, run_id=opts.run_id, check_only=check_only, table=unscored)
    typed = bq_input is None or bq_input.schema is not None  # a dry-run query has no result table to type from
    key_type, passthrough = _input_types(opts, bundle, bq_input, offline, report.input_schema) if typed else (pa.string(), ())
    columns = _columns(opts, bundle, key, passthrough, key_type)
    predictions, dead_letters = _destinations(opts, columns, opts.run_id, attempt)
    if not offline and typed:
      check_tables(project, (predictions, dead_letters))
    database = _database(opts, columns, attempt, offline=offline, check_only=check_only, report=report)
  except preflight.PreflightError:
    raise
  except ValueError as e:
    raise preflight.PreflightError([str(e)]) from None
  if not offline:
    report.tables += _checked_tables(bq_input, (predictions, dead_letters))
  source = opts.input or (f'query into {bq_input.table}' if bq_input.table else 'the --input_query')
  plan = JobPlan(run_id=opts.run_id, attempt=attempt, started_at=datetime.datetime.now(datetime.timezone.utc),
                 bundle=bundle, columns=columns, source=source, predictions=predictions, dead_letters=dead_letters,
                 records=opts.records_location(), runner=opts.runner_name(), project=project, bigquery_input=bq_input,
                 parquet_base=parquet_base(opts) if predictions.loads_parquet or dead_letters.loads_parquet else None,
                 challenger=challenger, gate=thresholds, incremental=incremental, database=database)
  return plan, report


def _incremental(opts: BatchInferenceOptions, bundle: ModelBundle, project: Optional[str], *,
                 check_only: bool) -> tuple[Optional[incremental_.Incremental], Optional[TableRef]]:
  """--only_unscored: earlier runs' key files (a file output), or the input's unscored rows saved by one
  anti-join in BigQuery (a table output), which the job then reads instead of the input table."""
  if not opts.only_unscored or check_only:
    return None, None
  if not is_table(opts.output):
    return incremental_.for_files(opts.output, bundle.name, bundle.version, opts.run_id,
                                  opts.row_version_column), None
  from google.api_core import exceptions
  from google.cloud import bigquery
  bq = bqp.client(project or bqp.home_project(opts))
  source, output = TableRef.parse(opts.input), TableRef.parse(opts.output)
  try:
    bq.get_table(output.dotted)
  except exceptions.NotFound:  # nothing scored yet
    return incremental_.Incremental(opts.row_version_column), None
  query = bqp.unscored_query(source, output, key_column=opts.key_column,
                                      version_column=opts.row_version_column, input_filter=opts.input_filter)
  parameters = [bigquery.ScalarQueryParameter('model_name', 'STRING', bundle.name),
                bigquery.ScalarQueryParameter('model_version', 'STRING', bundle.version),
                bigquery.ScalarQueryParameter('run_id', 'STRING', opts.run_id)]
  table, _ = bqp.materialize_query(bq, query, parameters, temp_dataset=opts.temp_dataset(),
                                   run_id=f'unscored_{opts.run_id}')
  total = list(bq.query(bqp.count_query(source, opts.input_filter)).result())[0][0]
  unscored = bq.get_table(table.dotted).num_rows
  logging.info('--only_unscored: %s of %s input rows have no prediction from %s v%s yet (saved in %s)',
               f'{unscored:,}', f'{total:,}', bundle.name, bundle.version, table)
  return incremental_.Incremental(opts.row_version_column, skipped_by_bigquery=total - unscored), table


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
