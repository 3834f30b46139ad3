"""Every flag of the batch-inference job, declared once.

Standard Beam flags (`--runner`, `--direct_num_workers`, `--project`, ...)
work alongside; `python -m pipelines.run --help` lists ours.
"""

from __future__ import annotations

import datetime
import difflib
import logging
import uuid
from typing import Callable, Optional, Sequence

from apache_beam.options.pipeline_options import DirectOptions, GoogleCloudOptions, PipelineOptions, StandardOptions

from models.bundle import FRAMEWORK_BATCH_ROWS, IMAGE_COLUMN, SAVED_MODEL, SAVED_MODEL_BATCH_ROWS, TEXT_COLUMN
from pipelines.destinations import kind_of
from transforms.bigquery.tables import WRITE_METHODS, is_table
from transforms.postgres.tables import PUBLISH_MODES
from transforms.files.readers import FORMATS
from transforms.files.write import OUTPUT_FORMATS
from transforms.images.source import IMAGE_FORMAT, is_image_glob
from transforms.text.document_files import DOCUMENT_FORMAT, is_document_glob
from transforms.rows.dead_letters import MAX_REJECTED_FRACTION
from transforms.rows.duplicate_keys import DuplicatePolicy

# Flags without which the job cannot start; the Flex Template marks the rest optional.
# Always required; one of --input and --input_query is required too.
REQUIRED_FLAGS = ('model', 'output')
# Where the model runs. `auto` takes a GPU when TensorFlow sees one.
DEVICES = ('auto', 'cpu', 'gpu')
# One model copy per worker machine, or one per SDK process? Sharing saves memory: the example
# SavedModel in two processes (1M rows, benchmarks/sweep.py) peaked 500 MB lower (1.9 GB against
# 2.4 GB) at about the same speed, and a GPU keeps one copy. It costs time: a model server to start
# (2.7 s measured in one process), and every call's batch pickled to it and the outputs back, 9-17 ms
# per 65,536-row call (benchmarks/model_call.py). With two processes on the small models of
# benchmarks/frameworks.py (docs/performance.md, "A shared model across 2 processes"), a copy per process ran
# faster for ONNX and scikit-learn, as fast for XGBoost, and slower for PyTorch.
# So a model is shared on a GPU, for these formats, or from this file size up.
SHARED_FORMATS = (SAVED_MODEL, 'torch')
SHARED_MODEL_BYTES = 128 * 2**20
# In these modes the DirectRunner runs one process: nothing to share.
_ONE_PROCESS_MODES = ('in_memory', 'multi_threading')
# Runners that run the job on this machine: a GPU check here is meaningful, and there is no worker pool.
LOCAL_RUNNERS = ('DirectRunner', 'BundleBasedDirectRunner', 'SwitchingDirectRunner', 'PrismRunner')


def parse_bool(value: str) -> bool:
  if value.lower() in ('true', '1', 'yes'):
    return True
  if value.lower() in ('false', '0', 'no'):
    return False
  raise ValueError(f'expected true or false, got {value!r}')


def _add_bool(parser, name: str, default, help: str) -> None:  # pylint: disable=redefined-builtin
  """A true/false flag: `--name` alone means true, `--name=false` (a template's NAME=VALUE) false."""
  parser.add_argument(name, type=parse_bool, nargs='?', const=True, default=default, metavar='true|false',
                      help=help)


def unknown_flags(argv: Sequence[str]) -> list[str]:
  """Problems with flags that no options class of ours or Beam's declares, each with a "did you mean".

  Beam only logs a warning for them and runs on, so a mistyped `--key_colum`
  would silently give a run keyed by the generated row id.
  """
  parsers = []
  beam_options = logging.getLogger('apache_beam.options.pipeline_options')
  level = beam_options.level
  beam_options.setLevel(logging.ERROR)  # its "Discarding unparseable args" would repeat ours, less clearly
  try:
    PipelineOptions(list(argv)).get_all_options(add_extra_args_fn=parsers.append)
  finally:
    beam_options.setLevel(level)
  parser = parsers[0]
  _, unknown = parser.parse_known_args(list(argv))
  known = [flag for action in parser._actions for flag in action.option_strings]  # pylint: disable=protected-access
  problems, previous = [], ''
  for arg in unknown:
    after_flag, previous = previous.startswith('-') and '=' not in previous, arg
    if not arg.startswith('-'):
      if not after_flag:  # not the value of an unknown flag just reported
        problems.append(f'unexpected argument {arg!r}: every argument is a --flag or its value')
      continue
    name = arg.split('=', 1)[0]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    problems.append(f'unknown flag {name}' + (f'; did you mean {close[0]}?' if close else
                                              ' (see python -m pipelines.run --help)'))
  return problems


def new_run_id() -> str:
  """A sortable, unique run id: UTC time plus a short random suffix."""
  now = datetime.datetime.now(datetime.timezone.utc)
  return f'{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}'


class BatchInferenceOptions(PipelineOptions):
  """Options of the batch-inference job."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument(
        '--input', default=None,
        help='Observations to predict: a file path or glob, local or gs:// '
        '(e.g. gs://bucket/observations/*.parquet), or a BigQuery table, bq://PROJECT.DATASET.TABLE '
        '(read with the Storage Read API, only the needed columns).')
    parser.add_argument(
        '--input_filter', default=None,
        help='With a bq:// --input: a SQL predicate BigQuery applies before sending rows, '
        'e.g. "region = \'EU\' AND day >= \'2026-11-01\'".')
    parser.add_argument(
        '--input_query', default=None,
        help='Instead of --input: a standard-SQL query whose result rows are predicted. Values come in '
        'as query parameters (@name, see --query_parameter), never pasted into the text. The result is '
        'saved to a table in --bq_temp_dataset (expires after a day) and read from there.')
    parser.add_argument(
        '--query_parameter', action='append', default=None,
        help='A parameter of --input_query, NAME=TYPE:VALUE (e.g. day=DATE:2026-11-25, '
        'min_mass=FLOAT64:3000). Repeat for each parameter.')
    parser.add_argument(
        '--bq_temp_dataset', default=None,
        help='PROJECT.DATASET (or DATASET in --project) for query results and Beam\'s temporary tables. '
        'Required with --input_query.')
    parser.add_argument(
        '--bq_read_streams', type=int, default=0,
        help='With a BigQuery input: the most Storage Read streams to read in parallel (each stream is read '
        'by one worker thread at a time). Default: 0, as many as BigQuery offers for the table.')
    parser.add_argument(
        '--input_format', default=None, choices=FORMATS + (IMAGE_FORMAT, DOCUMENT_FORMAT),
        help='Format of the input files. Default: inferred from each file extension; for an image model '
        '(images.json in its bundle), a glob that names no table format (e.g. gs://bucket/scans/**.dcm) is '
        f'read as image files, one row per file, keyed by its {IMAGE_COLUMN!r}; for a text model, a glob that '
        f'ends in .txt, .md, .html or .pdf (or any glob with --input_format={DOCUMENT_FORMAT}) is read as document '
        'files cut into chunks, one row per chunk, keyed by document#chunk.')
    parser.add_argument(
        '--image_column', default=None,
        help=f'For an image model reading a table: the column holding each image, its URI (gs:// or a path) or '
        f'its bytes. Default: {IMAGE_COLUMN!r}, as a glob of image files and BigQuery object tables name it. A '
        'column of URIs is also the key unless --key_column names another; a table of bytes needs --key_column.')
    parser.add_argument(
        '--text_column', default=None,
        help=f'For a text model (text.json in its bundle): the column holding each text. Default: {TEXT_COLUMN!r}. '
        'Rows are keyed by --key_column, or like any table by their file and position; an empty or whitespace-only '
        'text, or one over text.json\'s max_bytes, is a dead letter; a text over max_tokens is cut and counted.')
    parser.add_argument(
        '--model', default=None,
        help='Model bundle directory, local or gs:// (a SavedModel, or the ONNX, PyTorch, XGBoost or scikit-learn '
        'model metadata.json names; features.json, outputs.json, metadata.json). ./launch.sh import makes one. '
        'Or a Vertex AI Model Registry model, projects/P/locations/L/models/M[@VERSION_OR_ALIAS] (e.g. @champion; '
        'none: the default version), resolved on the launcher to its artifact URI and version id.')
    parser.add_argument(
        '--vertex_api_endpoint', default=None,
        help='With a registry --model: the Vertex AI API endpoint. Default: LOCATION-aiplatform.googleapis.com.')
    parser.add_argument(
        '--top_k', type=int, default=10,
        help='For a ranking model (outputs.json kind "ranking"): how many of the best items each row keeps, '
        'best first. Files and BigQuery get them as list columns top_items and top_scores; a PostgreSQL '
        'table gets one row per (key, rank). Default: 10.')
    parser.add_argument(
        '--output', default=None,
        help='Output directory, local or gs://: the published predictions are the only visible files under '
        'OUTPUT/RUN_ID/ (everything else, _run_summary.json and unpublished attempts included, is hidden from '
        'globs by a leading _). Or a BigQuery table, bq://PROJECT.DATASET.TABLE: created if '
        'needed, partitioned by day of predicted_at; a re-run of a --run_id replaces that run\'s rows. '
        'Or a PostgreSQL table, postgresql://[USER@]HOST[:PORT]/DATABASE?table=[SCHEMA.]TABLE, or a Cloud SQL one, '
        'cloudsql://PROJECT:REGION:INSTANCE/DATABASE?table=[SCHEMA.]TABLE&user=IAM_USER (IAM database '
        'authentication): created if needed with the key as primary key, written with COPY into a staging table, '
        'published in one transaction when the run ends (see --db_publish_mode). Never put a password in the URL.')
    parser.add_argument(
        '--db_publish_mode', default='upsert', choices=PUBLISH_MODES,
        help='How a database --output takes a run\'s rows, in one transaction: upsert (each key of the run gets '
        'its new rows, other keys keep theirs; a re-run of a --run_id replaces its own rows) or replace (the run\'s '
        'rows become the whole table, swapped in by renaming). Default: upsert.')
    parser.add_argument(
        '--db_password_secret', default=None,
        help='With a database --output: a Secret Manager version, projects/P/secrets/S/versions/V, holding the '
        'password, read where the job connects. Default: none; libpq\'s environment (PGPASSWORD, ~/.pgpass) for '
        'postgresql://, IAM database authentication for cloudsql://.')
    parser.add_argument(
        '--db_copy_connections', type=int, default=None,
        help='With a database --output: how many connections each writing worker thread COPYs on at once, so the '
        'server parses one batch while the worker predicts the next. Default: up to 4, fewer where the server has '
        'few free connections (a quarter of max_connections less those in use).')
    parser.add_argument(
        '--min_input_fraction', type=float, default=0.5,
        help='With a database --output: fail the run, publishing nothing, when it wrote fewer rows than this '
        'fraction of the rows the table already holds (a truncated input would otherwise publish a night of '
        'which part is new and the rest an earlier night\'s, or shrink a replaced table). 0 turns the check off; '
        'not applied with --only_unscored, whose nights are small by design. Default: 0.5.')
    parser.add_argument(
        '--bq_write_method', default='FILE_LOADS', choices=WRITE_METHODS,
        help='How rows reach a bq:// output: FILE_LOADS (the default: Parquet files under --temp_location, '
        'gs://, published when the run ends by one load job, atomic; a re-run\'s rows go to a staging table '
        'and replace the run\'s earlier rows in one MERGE; no per-row cost), STREAMING_INSERTS (rows visible at once, '
        'billed per byte; a re-run\'s earlier rows are deleted when it publishes), STORAGE_WRITE_API (runs '
        'through Beam\'s Java expansion service: needs Java).')
    parser.add_argument(
        '--output_format', default='parquet', choices=OUTPUT_FORMATS,
        help='Format of the prediction files. Default: parquet.')
    parser.add_argument(
        '--dead_letter', default=None,
        help='Directory for rejected rows (JSON Lines, one reason each), written under '
        'DEAD_LETTER/RUN_ID/, or a BigQuery table bq://PROJECT.DATASET.TABLE. Default: the --output '
        'directory, or OUTPUT_TABLE_dead_letters beside a bq:// --output.')
    parser.add_argument(
        '--summary_location', default=None,
        help='With a bq:// --output: the folder, local or gs://, for each run\'s _run_summary.json and report, '
        'as SUMMARY_LOCATION/RUN_ID/. Default: TEMP_LOCATION/runs. (File outputs keep them beside the '
        'predictions.)')
    parser.add_argument(
        '--key_column', default=None,
        help='Input column that identifies a row; copied to the output as the key. '
        'Default: a generated row_id, "SOURCE_FILE:LINE".')
    parser.add_argument(
        '--on_duplicate_key', default='reject',
        help='With --key_column: what the run does with a key the input holds on more than one row, decided '
        'from every key of the input before anything is written; the summary counts repeated keys and shows '
        'examples. reject: every row of a repeated key becomes a dead letter (reason duplicate_key). fail: the '
        'run fails and publishes nothing. keep_last_by:COLUMN (or keep_first_by:COLUMN): the row with the '
        'highest (lowest) COLUMN is kept, the others become dead letters (reason superseded, not counted by '
        '--max_rejected_fraction); a key whose rows tie on it, or have no value, is rejected. Default: reject.')
    parser.add_argument(
        '--passthrough_columns', default='',
        help='Comma-separated input columns copied unchanged to each prediction row.')
    parser.add_argument(
        '--run_id', default=None,
        help='Identifies this run in every output row and path. Re-running with the same id '
        'replaces that run\'s output. Default: a new UTC-time-based id.')
    parser.add_argument(
        '--read_batch_size', type=int, default=None,
        help='Rows per Arrow RecordBatch read from the input, and so per element in every later step. '
        f'Default: the model format\'s, {SAVED_MODEL_BATCH_ROWS} for a SavedModel and {FRAMEWORK_BATCH_ROWS} '
        'for the other formats, or --max_batch_rows if that is smaller.')
    parser.add_argument(
        '--min_batch_rows', type=int, default=1,
        help='Fewest rows RunInference packs into one model call. Default: 1.')
    parser.add_argument(
        '--max_batch_rows', type=int, default=None,
        help='Most rows RunInference packs into one model call. Default: the model format\'s, as for '
        '--read_batch_size (or --read_batch_size if that is larger), so each element read is one model '
        'call, passed on without concatenating.')
    _add_bool(
        parser, '--share_model_across_processes', None,
        'Load one model copy per worker machine, shared by its SDK processes through a model server, '
        'instead of one per process. Default: true where a machine runs several processes and the model '
        'needs the memory or runs faster so: a GPU (--device=gpu or an accelerator asked for), a SavedModel, a '
        f'PyTorch model, or a model file of {SHARED_MODEL_BYTES // 2**20} MiB or more; otherwise false, a copy per '
        'process, which spares each batch the trip to the model server.')
    _add_bool(
        parser, '--quiet', False,
        'No live progress line. (It is only drawn when stdout is a terminal and the runner is the '
        'DirectRunner; on Dataflow the same counters show on the job page.)')
    _add_bool(
        parser, '--verbose', False,
        'Print everything on the console: Beam\'s and the libraries\' log lines and TensorFlow\'s start-up '
        'lines. Default: false, the console shows our own progress lines and the summary, and the full log goes '
        'to a file the summary names (OUTPUT/_logs/ for a local folder --output, else the system\'s temporary '
        'folder).')
    _add_bool(
        parser, '--report', True,
        'Profile the input and the predictions and write OUTPUT/RUN_ID/report.html with PNG charts '
        '(counts, rejection reasons, throughput, predictions, drift against the training statistics). '
        'Default: true.')
    _add_bool(
        parser, '--watch', False,
        'Keep running: predict each new file that lands under --input (a glob, local or gs://), '
        'exactly once per file, as its own run; processed files are remembered in '
        'OUTPUT/_watch/processed.jsonl.')
    parser.add_argument(
        '--watch_interval', type=float, default=10.0,
        help='With --watch: seconds between looks at --input. A file is taken once its size has not '
        'changed between two looks. Default: 10.')
    parser.add_argument(
        '--watch_max_files', type=int, default=None,
        help='With --watch: stop after predicting this many files. Default: no limit.')
    parser.add_argument(
        '--watch_timeout', type=float, default=None,
        help='With --watch: stop after this many seconds. Default: no limit.')
    parser.add_argument(
        '--device', default='auto', choices=DEVICES,
        help='Where the model runs: gpu fails at model load when the model\'s framework sees no GPU '
        '(TensorFlow, PyTorch CUDA, onnxruntime-gpu\'s CUDA provider, XGBoost cuda; scikit-learn has none), '
        'cpu keeps the model on the CPU, auto uses a GPU when there is one. Default: auto.')
    parser.add_argument(
        '--model_threads', type=int, default=None,
        help='Threads of the model\'s own pool (OpenMP for scikit-learn, onnxruntime\'s intra-op threads, '
        'PyTorch\'s and TensorFlow\'s, XGBoost\'s), in the process that holds the model. Default: the cores each '
        'worker process owns, less one for the job\'s own reading and writing where it owns several (one thread on '
        'Dataflow; the machine\'s cores less one on the DirectRunner in one process); a pool as wide as the machine '
        'fights the other processes for its cores.')
    parser.add_argument(
        '--inference_accelerator', default=None,
        help='Beam accelerator resource hint for the predict step only, e.g. '
        '"type:nvidia-l4;count:1;install-nvidia-driver", so services that fit workers to steps '
        'give GPUs to inference alone. Default: none (every worker gets the same machine).')
    _add_bool(
        parser, '--wait_for_job', True,
        'Wait for the job to end and write the run summary (true), or return once the runner '
        'has accepted it (false). Beam\'s --no_wait_until_finish takes no value, so Flex Template '
        'launches and schedules, whose parameters are NAME=VALUE, pass wait_for_job=false. Default: true.')
    parser.add_argument(
        '--max_rejected_fraction', type=float, default=MAX_REJECTED_FRACTION,
        help='Fail the run, publishing nothing (exit 1), when more than this fraction of the rows read is '
        'rejected, e.g. 0.01; 1 never fails for rejections. Every rejection counts, rows the output refused (a '
        'database constraint, a streamed BigQuery row) and repeated keys included; rows superseded by '
        '--on_duplicate_key=keep_last_by do not. The message gives the share and the top reasons. '
        f'Default: {MAX_REJECTED_FRACTION:g}.')
    parser.add_argument(
        '--challenger', default=None,
        help='A second model bundle (same outputs) that scores the same validated rows in the same job. Only '
        'the --model\'s predictions are published; the two are compared (agreement, class flips, score shift by '
        'quantile, PSI, per --segment_column) in comparison.json and the run report. Features are computed once '
        'when both bundles\' feature specs are equal.')
    parser.add_argument(
        '--segment_column', default=None,
        help='With --challenger: an input column whose values split the comparison into segments '
        '(e.g. region). Default: none.')
    parser.add_argument(
        '--gate', default=None,
        help='Thresholds checked before publishing, comma-separated METRIC OP NUMBER (OP: >=, <=, >, <), e.g. '
        '"agreement>=0.97,psi<=0.1,rejected_rate<=0.01". A run that breaks one publishes nothing, keeps its '
        'staged output and gate.json (which threshold broke, by how much) in the attempt folder, and exits 4. '
        'Metrics: rejected_rate, drifted_features, feature_psi, missing_rate_shift (against the training '
        'statistics); with --challenger also agreement, psi, score_shift, challenger_unscored_rate, score_psi,'
        ' top1_overlap, top5_overlap, top10_overlap.')
    _add_bool(
        parser, '--only_unscored', False,
        'Predict only the rows whose --key_column (and --row_version_column) has no prediction yet from this '
        'model name and version in the output; the rest are counted as skipped (read = predicted + rejected + '
        'skipped). A file output keeps the keys each run scored under OUTPUT/_scored/; a bq:// input with a '
        'bq:// output is anti-joined in BigQuery (needs --bq_temp_dataset). Default: false.')
    parser.add_argument(
        '--row_version_column', default=None,
        help='With --only_unscored: an input column that changes when a row changes (e.g. updated_at); a row is '
        'scored again when its value differs from the one last scored. Copied to the predictions.')
    _add_bool(
        parser, '--estimate', False,
        'Do not run: forecast the run\'s wall time and cost on Dataflow. Runs the job here on a sample '
        '(--estimate_rows), measures rows/s per core and bytes per row, and forecasts the whole input here, '
        'as a process (start-up and publishing included; printed), and for the chosen --machine_type, GPU and --max_num_workers, and for every machine type and worker count of the '
        'dated price table in pipelines/launcher/prices.py; suggests the cheapest meeting --deadline. Writes estimate.html '
        '(with a chart) and estimate.json to --estimate_output.')
    parser.add_argument(
        '--estimate_rows', type=int, default=50000,
        help='With --estimate: rows of the input to run the sample on (its first rows; a second run repeats them 8 times). Default: 50000.')
    parser.add_argument(
        '--deadline', default=None,
        help='With --estimate: the wall time the run must finish in, e.g. 45m, 2h or 1h30m; the estimate '
        'suggests the cheapest setting that meets it. Default: none (the cheapest).')
    parser.add_argument(
        '--estimate_output', default=None,
        help='With --estimate: the folder, local or gs://, for estimate.html and estimate.json. Default: '
        'OUTPUT/_estimates/RUN_ID (SUMMARY_LOCATION/_estimates/RUN_ID for a bq:// output).')
    parser.add_argument(
        '--input_snapshot', default=None,
        help='With a bq:// --input: read the table as it was at this UTC time, ISO 8601 (BigQuery time '
        'travel, within the table\'s time-travel window, 7 days by default), e.g. 2026-11-25T02:00:00Z. '
        'Default: the launch time (recorded in the run summary as input_snapshot).')
    parser.add_argument(
        '--replay', default=None,
        help='A _run_summary.json (local or gs://) to re-run exactly: the same model bundle (refused if its digest '
        'changed), the same input files (refused if any changed, appeared or vanished) or the same table snapshot '
        '(BigQuery time travel), the same options, under a new run id (RUN_ID-replay-TIME unless --run_id); then '
        'checks that the predictions match the original\'s digest. Flags given beside it override the '
        'recorded ones (e.g. --output).')
    _add_bool(
        parser, '--preflight_only', False,
        'Only check that the run can succeed (the model loads and matches its feature spec, the input '
        'exists and has the features, the output is writable), then exit: 0 if it can, 2 if not.')

  def snapshot(self) -> Optional[datetime.datetime]:
    """--input_snapshot as a UTC time; None for now."""
    if not self.input_snapshot:
      return None
    when = datetime.datetime.fromisoformat(self.input_snapshot.replace('Z', '+00:00'))
    return when.replace(tzinfo=datetime.timezone.utc) if when.tzinfo is None else when

  def runner_name(self) -> str:
    """The runner's name, whether --runner named it or a caller passed a runner; DirectRunner by default."""
    runner = self.view_as(StandardOptions).runner
    return str(runner if isinstance(runner, str) else type(runner).__name__ if runner else 'DirectRunner')

  def runs_locally(self) -> bool:
    """Whether the job runs on this machine (a direct runner or Prism), not on a worker pool."""
    return self.runner_name() in LOCAL_RUNNERS

  def share_model(self) -> bool:
    """--share_model_across_processes, as given or as `fill_share_model` chose; before that, whether
    several processes share a machine."""
    if self.share_model_across_processes is not None:
      return self.share_model_across_processes
    return self.several_processes()

  def worker_processes(self) -> Optional[int]:
    """Worker processes sharing a machine's cores (what the model's threads are sized by): one on the
    DirectRunner in one process, --direct_num_workers in several; None elsewhere, one per core."""
    if not self.runner_name().endswith('DirectRunner'):
      return None
    if self.view_as(DirectOptions).direct_running_mode in _ONE_PROCESS_MODES:
      return 1
    return self.view_as(DirectOptions).direct_num_workers or None

  def several_processes(self) -> bool:
    """Whether a machine runs several SDK processes: all but the DirectRunner in one process."""
    one_process = self.view_as(DirectOptions).direct_running_mode in _ONE_PROCESS_MODES
    return not (self.runner_name().endswith('DirectRunner') and one_process)

  def asks_for_gpu(self) -> bool:
    """Whether the job asks for a GPU: --device=gpu, --inference_accelerator or a worker_accelerator."""
    service_options = self.view_as(GoogleCloudOptions).dataflow_service_options or []
    return (self.device == 'gpu' or bool(self.inference_accelerator)
            or any('worker_accelerator=' in option for option in service_options))

  def fill_share_model(self, formats: Sequence[str], model_bytes: Callable[[], int]) -> None:
    """Gives --share_model_across_processes, where left unset, the choice that wins for these models,
    so the run, its manifest and its workers all see the one used.

    Shared where several processes share a machine and the model needs the memory or was measured
    faster shared: a GPU, a format of `SHARED_FORMATS`, or a model file of `SHARED_MODEL_BYTES` or
    more; a copy per process otherwise (see their comment).

    Args:
      formats: the formats of the job's models (the champion's, and a challenger's).
      model_bytes: the size of the largest model file; called only when the choice depends on it.
    """
    if self.share_model_across_processes is not None:
      return
    self.share_model_across_processes = self.several_processes() and (
        self.asks_for_gpu() or any(f in SHARED_FORMATS for f in formats) or model_bytes() >= SHARED_MODEL_BYTES)

  def temp_dataset(self) -> Optional[tuple[Optional[str], str]]:
    """--bq_temp_dataset as (project, dataset); the project is None when the flag names none."""
    if not self.bq_temp_dataset:
      return None
    project, _, dataset = self.bq_temp_dataset.rpartition('.')
    return project or None, dataset

  @property
  def passthrough(self) -> list[str]:
    """--passthrough_columns, and --row_version_column (the predictions say which version they scored)."""
    columns = [c.strip() for c in (self.passthrough_columns or '').split(',') if c.strip()]
    version = self.row_version_column
    if version and version not in columns and version != self.key_column:
      columns.append(version)
    return columns

  @property
  def reads_bigquery(self) -> bool:
    return bool(self.input_query) or is_table(self.input)

  @property
  def dead_letter_target(self) -> str:
    """Where rejected rows go: --dead_letter, else beside the output."""
    if self.dead_letter:
      return self.dead_letter
    return kind_of(self.output).dead_letters_beside(self.output, self.records_location())

  def records_location(self) -> str:
    """The base folder of each run's summary and report: the output folder, or for a table
    --summary_location (default TEMP_LOCATION/runs)."""
    if kind_of(self.output).holds_run_folders:
      return self.output
    temp = (self.view_as(GoogleCloudOptions).temp_location or '').rstrip('/')
    return self.summary_location or (f'{temp}/runs' if temp else '')

  def reads_image_files(self, bundle) -> bool:
    """Whether --input is a glob of image files, one row each (an image model's, naming no table format)."""
    if bundle is None or bundle.images is None or self.reads_bigquery or not self.input:
      return False
    return self.input_format == IMAGE_FORMAT or (self.input_format is None and is_image_glob(self.input))

  def reads_document_files(self, bundle) -> bool:
    """Whether --input is a glob of document files, cut into chunks (a text model's, naming documents by its
    extension or by --input_format)."""
    if bundle is None or bundle.text is None or self.reads_bigquery or not self.input:
      return False
    return self.input_format == DOCUMENT_FORMAT or (self.input_format is None and is_document_glob(self.input))

  def fill_batch_sizes(self, rows: int) -> None:
    """Gives --read_batch_size and --max_batch_rows, where left unset, the model format's `rows`
    (`models.bundle.batch_rows`), so the run, its manifest and its workers all see the number used.

    RunInference packs whole elements, so the one left unset follows the one given: a read batch is
    no larger than the model calls given, and model calls take at least the read batch given.
    """
    given_read, given_max = self.read_batch_size, self.max_batch_rows
    if given_read is None:
      self.read_batch_size = min(rows, given_max) if given_max is not None else rows
    if given_max is None:
      self.max_batch_rows = max(rows, self.min_batch_rows, given_read or 0)

  def validate_flags(self) -> None:
    """Raises ValueError naming every missing or inconsistent flag of ours."""
    problems = [f'--{name} is required' for name in REQUIRED_FLAGS if not getattr(self, name)]
    if bool(self.input) == bool(self.input_query):
      problems.append('give exactly one of --input and --input_query')
    if self.input_query and not self.bq_temp_dataset:
      problems.append('--input_query needs --bq_temp_dataset, where its result table is kept')
    if self.input_filter and not is_table(self.input):
      problems.append('--input_filter applies to a bq:// --input only; put the condition in the --input_query')
    if self.query_parameter and not self.input_query:
      problems.append('--query_parameter applies to --input_query only')
    if self.reads_bigquery and not self.key_column:
      problems.append('a BigQuery input needs --key_column: table rows have no position to key them by')
    if self.output:  # each kind of output checks the flags it cannot take
      if not kind_of(self.output).holds_run_folders and not self.records_location():
        problems.append('a table --output keeps its run summary and report in --summary_location (or '
                        '--temp_location/runs): give one of them')
      problems += kind_of(self.output).flag_problems(self, 'output')
    if self.dead_letter or self.output:
      problems += kind_of(self.dead_letter_target).flag_problems(self, 'dead_letter')
    if self.top_k < 1:
      problems.append('--top_k must be at least 1')
    if self.bq_read_streams < 0:
      problems.append('--bq_read_streams must be 0 (as many as BigQuery offers) or more')
    if self.read_batch_size is not None and self.read_batch_size < 1:
      problems.append('--read_batch_size must be at least 1')
    if self.max_batch_rows is not None and self.max_batch_rows < 1:
      problems.append('--max_batch_rows must be at least 1')
    if self.min_batch_rows < 1 or (self.max_batch_rows is not None and self.min_batch_rows > self.max_batch_rows):
      problems.append('--min_batch_rows must be at least 1 and at most --max_batch_rows')
    if self.key_column and self.key_column in self.passthrough:
      problems.append(f'--key_column {self.key_column!r} is always in the output; drop it from --passthrough_columns')
    if not 0 <= self.max_rejected_fraction <= 1:
      problems.append('--max_rejected_fraction must be between 0 and 1')
    if self.db_copy_connections is not None and self.db_copy_connections < 1:
      problems.append('--db_copy_connections must be at least 1')
    if not 0 <= self.min_input_fraction <= 1:
      problems.append('--min_input_fraction must be between 0 and 1')
    try:
      policy = DuplicatePolicy.parse(self.on_duplicate_key)
      if str(policy) != 'reject' and not self.key_column:
        problems.append(f'--on_duplicate_key={policy} needs --key_column: generated row ids never repeat')
      if policy.column and policy.column == self.key_column:
        problems.append(f'--on_duplicate_key={policy}: order the rows of a key by another column than the key')
    except ValueError as e:
      problems.append(str(e))
    if self.watch_interval <= 0:
      problems.append('--watch_interval must be positive')
    if self.watch_max_files is not None and self.watch_max_files < 1:
      problems.append('--watch_max_files must be at least 1')
    if self.inference_accelerator and self.device == 'cpu':
      problems.append('--inference_accelerator asks for a GPU but --device is cpu')
    if self.input_snapshot:
      try:
        self.snapshot()
      except ValueError:
        problems.append(f'--input_snapshot {self.input_snapshot!r} is not an ISO 8601 time')
      if not is_table(self.input):
        problems.append('--input_snapshot applies to a bq:// --input only')
    if self.only_unscored and not self.key_column:
      problems.append('--only_unscored needs --key_column: generated row ids do not name a row across runs')
    if self.row_version_column and not self.only_unscored:
      problems.append('--row_version_column applies with --only_unscored')
    if self.estimate and self.reads_bigquery:
      problems.append('--estimate samples input files; a BigQuery input is not supported yet')
    if self.estimate and self.estimate_rows < 100:
      problems.append('--estimate_rows must be at least 100')
    if self.deadline and not self.estimate:
      problems.append('--deadline applies with --estimate')
    if self.segment_column and not self.challenger:
      problems.append('--segment_column splits the --challenger comparison: give --challenger too')
    if problems:
      raise ValueError('; '.join(dict.fromkeys(problems)))
