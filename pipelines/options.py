"""Every flag of the batch-inference job, declared once.

Standard Beam flags (`--runner`, `--direct_num_workers`, `--project`, ...)
work alongside; `python -m pipelines.run --help` lists ours.
"""

from __future__ import annotations

import datetime
import uuid

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from transforms.sinks import OUTPUT_FORMATS
from transforms.sources import FORMATS

# Rows per RecordBatch read from files, and so per element in every later step.
# Measured with benchmarks/sweep.py (1M rows, example model, DirectRunner, 2
# shared cores, medians of 3 rounds), pipeline seconds: 4096 rows 3.4, 8192 3.6,
# 16384 2.3, 32768 3.1, 65536 4.6; peak RSS 809 MB at 4096 up to 923 MB at 65536.
# At 16384 the per-batch Python cost has vanished; past it, time and memory grow.
DEFAULT_READ_BATCH_SIZE = 16384
# Rows per model call. Equal to the read batch, so RunInference passes one
# element's matrix to the model as it is instead of concatenating several
# (16384/32768 measured 2.7 s against 2.2-2.3 s for 16384/16384 in the same rounds).
DEFAULT_MAX_BATCH_ROWS = 16384
# One model copy per worker machine, or one per SDK process? Measured (1M rows,
# example model, benchmarks/sweep.py): on the DirectRunner in one process there
# is nothing to share, and sharing cost 2.7 s of start-up (Beam starts a model
# server and connects with back-off), 17.7 s against 15.0 s; with two processes
# it saved 500 MB of peak RSS (1.9 GB against 2.4 GB) at about the same speed.
# So by default the model is shared wherever a machine runs several processes.
_ONE_PROCESS_MODES = ('in_memory', 'multi_threading')


def _bool(value: str) -> bool:
  if value.lower() in ('true', '1', 'yes'):
    return True
  if value.lower() in ('false', '0', 'no'):
    return False
  raise ValueError(f'expected true or false, got {value!r}')


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
        '(e.g. gs://bucket/observations/*.parquet).')
    parser.add_argument(
        '--input_format', default=None, choices=FORMATS,
        help='Format of the input files. Default: inferred from each file extension.')
    parser.add_argument(
        '--model', default=None,
        help='Model bundle directory, local or gs:// (SavedModel, features.json, outputs.json, metadata.json).')
    parser.add_argument(
        '--output', default=None,
        help='Output directory, local or gs://. Predictions go to OUTPUT/RUN_ID/, '
        'with run_summary.json beside them.')
    parser.add_argument(
        '--output_format', default='parquet', choices=OUTPUT_FORMATS,
        help='Format of the prediction files. Default: parquet.')
    parser.add_argument(
        '--dead_letter', default=None,
        help='Directory for rejected rows (JSON Lines, one reason each), written under '
        'DEAD_LETTER/RUN_ID/. Default: the --output directory.')
    parser.add_argument(
        '--key_column', default=None,
        help='Input column that identifies a row; copied to the output as the key. '
        'Default: a generated row_id, "SOURCE_FILE:LINE".')
    parser.add_argument(
        '--passthrough_columns', default='',
        help='Comma-separated input columns copied unchanged to each prediction row.')
    parser.add_argument(
        '--run_id', default=None,
        help='Identifies this run in every output row and path. Re-running with the same id '
        'replaces that run\'s output. Default: a new UTC-time-based id.')
    parser.add_argument(
        '--read_batch_size', type=int, default=DEFAULT_READ_BATCH_SIZE,
        help=f'Rows per Arrow RecordBatch read from the input. Default: {DEFAULT_READ_BATCH_SIZE}.')
    parser.add_argument(
        '--min_batch_rows', type=int, default=1,
        help='Fewest rows RunInference packs into one model call. Default: 1.')
    parser.add_argument(
        '--max_batch_rows', type=int, default=DEFAULT_MAX_BATCH_ROWS,
        help=f'Most rows RunInference packs into one model call. Default: {DEFAULT_MAX_BATCH_ROWS}.')
    parser.add_argument(
        '--share_model_across_processes', type=_bool, default=None,
        help='Load one model copy per worker machine, shared by its SDK processes (one copy per GPU), '
        'instead of one per process. Default: true, except on the DirectRunner in a single process, '
        'where there is nothing to share and the model server only adds start-up time.')

  def share_model(self) -> bool:
    """--share_model_across_processes, or its default for the runner this job runs on."""
    if self.share_model_across_processes is not None:
      return self.share_model_across_processes
    runner = self.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    one_process = self.view_as(DirectOptions).direct_running_mode in _ONE_PROCESS_MODES
    return not ((name or 'DirectRunner').endswith('DirectRunner') and one_process)

  @property
  def passthrough(self) -> list[str]:
    return [c.strip() for c in (self.passthrough_columns or '').split(',') if c.strip()]

  def validate_flags(self) -> None:
    """Raises ValueError naming every missing or inconsistent flag of ours."""
    problems = [f'--{name} is required' for name in ('input', 'model', 'output') if not getattr(self, name)]
    if self.read_batch_size < 1:
      problems.append('--read_batch_size must be at least 1')
    if not 1 <= self.min_batch_rows <= self.max_batch_rows:
      problems.append('--min_batch_rows must be at least 1 and at most --max_batch_rows')
    if self.key_column and self.key_column in self.passthrough:
      problems.append(f'--key_column {self.key_column!r} is always in the output; drop it from --passthrough_columns')
    if problems:
      raise ValueError('; '.join(problems))
