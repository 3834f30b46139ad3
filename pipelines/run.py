"""Run the batch-inference job: `python -m pipelines.run --input ... --model ... --output ...`.

Parses flags, runs the preflight checks before any worker starts (alone with
`--preflight_only`), builds and runs the pipeline into staging folders (with a
live progress line on a terminal), publishes them as the run's output, then
prints the run summary and writes it as run_summary.json beside the
predictions, with the run report (report.html). With --watch it keeps running
and does this for each new input file (pipelines.watch).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime
import json
import logging
import os
import sys
import time
import traceback
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, GoogleCloudOptions, PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineState

from models.bundle import BundleError
from models.handler import NoGpuError, require_gpu
from pipelines import preflight
from pipelines import preflight_bigquery as bqp
from pipelines.batch_inference import PROFILE_FILE, bigquery_input, bigquery_outputs, build_pipeline, run_directory
from pipelines.options import BatchInferenceOptions, new_run_id
from pipelines.progress import LiveCounters, ProgressLine, direct_runner_progress
from pipelines.report import REPORT_FILE, write_report
from pipelines.staging import StagedRun
from pipelines.summary import RunSummary, counters
from transforms.bigquery import TableRef, is_table

SUMMARY_FILE = 'run_summary.json'
# Runners that run the model on this machine, so a GPU check here is meaningful.
LOCAL_RUNNERS = (None, 'DirectRunner', 'BundleBasedDirectRunner', 'SwitchingDirectRunner', 'PrismRunner')


def _is_direct(options: PipelineOptions) -> bool:
  runner = options.view_as(StandardOptions).runner
  return runner is None or str(runner) in ('DirectRunner', 'SwitchingDirectRunner')


def _shows_progress(options: PipelineOptions, argv: Sequence[str]) -> bool:
  """Whether to draw the live progress line: a terminal, the DirectRunner, not --quiet.

  Sets the DirectRunner to run bundles on a worker thread when the user chose no
  running mode: only such a worker answers progress requests (pipelines.progress).
  Call before the Pipeline is created: it copies the options.
  """
  if options.view_as(BatchInferenceOptions).quiet or not sys.stdout.isatty() or not _is_direct(options):
    return False
  if not any(a.startswith('--direct_running_mode') for a in argv):
    options.view_as(DirectOptions).direct_running_mode = 'multi_threading'
  return True


def _progress(show: bool) -> contextlib.AbstractContextManager:
  if not show:
    return contextlib.nullcontext()
  live = LiveCounters()
  stack = contextlib.ExitStack()
  stack.enter_context(direct_runner_progress(live))
  stack.enter_context(ProgressLine(live.totals))
  return stack


class RunError(RuntimeError):
  """The job failed after preflight; nothing of this attempt was published."""


def _first_line(error: BaseException) -> str:
  """The error without the worker traceback that runners append to its message."""
  text = str(error).strip() or type(error).__name__
  return text.splitlines()[0][:1000]


def run(argv: Optional[Sequence[str]] = None) -> Optional[RunSummary]:
  """Runs the job to completion and returns its summary.

  Returns None when it does not wait (`--wait_for_job=false`, Beam's
  `--no_wait_until_finish`, or a runner that only wrote the job description).
  Such a run writes straight into its final folders: nothing stays behind to
  publish staged files.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  options = PipelineOptions(argv)
  opts = options.view_as(BatchInferenceOptions)
  opts.run_id = opts.run_id or new_run_id()
  if opts.device == 'gpu' and options.view_as(StandardOptions).runner in LOCAL_RUNNERS:
    require_gpu()  # before preflight touches anything; remote workers check at model load
  bundle = preflight.check(opts).bundle
  project = options.view_as(GoogleCloudOptions).project
  dead_target = opts.dead_letter_target
  for target in (opts.output, dead_target):  # before a query input costs anything
    if is_table(target):
      table = TableRef.parse(target)
      bqp.check_dataset(bqp.client(project or table.project), table)
  bq_input = bigquery_input(opts, bundle, project) if opts.reads_bigquery else None
  if bq_input is not None and bq_input.bytes_processed is not None:
    logging.info('--input_query processed %s bytes into %s', f'{bq_input.bytes_processed:,}', bq_input.table)

  out_dir = opts.output if is_table(opts.output) else run_directory(opts.output, opts.run_id)
  waits = opts.wait_for_job and not options.view_as(StandardOptions).no_wait_until_finish
  # File outputs are staged and published at the end; tables replace a re-run's rows instead.
  staged = StagedRun([t for t in (opts.output, dead_target) if not is_table(t)], opts.run_id)
  if waits:
    staged.discard_stale()

  def staging(target: str) -> Optional[str]:
    return staged.staging(target) if waits and not is_table(target) else None

  started = datetime.datetime.now(datetime.timezone.utc)
  clock = time.monotonic()
  show_progress = _shows_progress(options, argv)
  pipeline = beam.Pipeline(options=options)
  outputs = build_pipeline(pipeline, opts, bundle, bq_input, output_dir=staging(opts.output),
                           dead_letter_dir=staging(dead_target))
  tables = bigquery_outputs(opts, outputs.columns)
  for table, schema, time_column in tables:
    bqp.prepare_output_table(bqp.client(project or table.project), table, schema, partition_field=time_column)
  source = opts.input or f'query into {bq_input.table}'
  logging.info('run %s: predicting %s with %s v%s', opts.run_id, source, bundle.name, bundle.version)
  retry = f'nothing was published to {out_dir}; fix the cause and re-run with --run_id {opts.run_id}'
  try:
    with _progress(show_progress):
      result = pipeline.run()
      if getattr(result, 'has_job', False):
        gcp = options.view_as(GoogleCloudOptions)
        logging.info('run %s: Dataflow job %s, https://console.cloud.google.com/dataflow/jobs/%s/%s?project=%s',
                     opts.run_id, result.job_id(), gcp.region, result.job_id(), gcp.project)
      if not waits or not getattr(result, 'has_job', True):
        logging.info('run %s: submitted, not waiting for it to finish', opts.run_id)
        return None
      state = result.wait_until_finish()
  except BaseException as e:
    staged.discard()
    if not isinstance(e, Exception):
      raise
    raise RunError(f'run {opts.run_id} failed: {_first_line(e)}\n  {retry}') from e
  if state != PipelineState.DONE:
    staged.discard()
    raise RunError(f'run {opts.run_id} ended {state}; {retry}')
  totals = counters(result)
  rows_written = link = None
  for table, _, time_column in tables:  # the new rows landed: drop an earlier attempt's
    bq = bqp.client(project or table.project)
    replaced = bqp.replace_earlier_rows(bq, table, opts.run_id, time_column=time_column, started=started)
    logging.info('replaced %d rows of an earlier attempt of run %s in %s', replaced, opts.run_id, table)
    if str(table) == opts.output:
      rows_written, link = bqp.rows_of_run(bq, table, opts.run_id), bqp.console_link(table)

  summary = RunSummary(
      run_id=opts.run_id,
      model={'name': bundle.name, 'version': bundle.version, 'path': opts.model},
      input=source,
      output=out_dir,
      dead_letter=dead_target if is_table(dead_target) else run_directory(dead_target, opts.run_id),
      runner=str(options.view_as(StandardOptions).runner or 'DirectRunner'),
      state=str(state),
      started_at=started.isoformat(timespec='seconds'),
      wall_seconds=round(time.monotonic() - clock, 3),
      rows_read=totals.get('rows_read', 0),
      rows_predicted=totals.get('rows_predicted', 0),
      rows_rejected=totals.get('rows_rejected', 0),
      rejected_by_reason={name[len('rejected_'):]: n for name, n in totals.items() if name.startswith('rejected_')},
      files_read=totals.get('files_read', 0),
      rows_written=rows_written,
      output_link=link,
  )
  try:
    if opts.report and not is_table(opts.output):  # staged with the rest, so a published folder has its report
      report_dir = staging(opts.output)
      with FileSystems.open(FileSystems.join(report_dir, PROFILE_FILE)) as f:
        profile = json.loads(f.read().decode('utf-8'))
      write_report(report_dir, summary, profile, training_statistics=bundle.training_statistics,
                   model=bundle.metadata)
    staged.publish(SUMMARY_FILE)
  except Exception as e:
    staged.discard()
    raise RunError(f'run {opts.run_id} could not publish its output to {out_dir}: {_first_line(e)}\n  '
                   f're-run with --run_id {opts.run_id} to replace it') from e
  if not is_table(opts.output):
    summary.write(FileSystems.join(out_dir, SUMMARY_FILE))
  return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
  logging.getLogger('apache_beam').setLevel(logging.WARNING)
  argv = list(sys.argv[1:] if argv is None else argv)
  if '--help' in argv or '-h' in argv:
    parser = argparse.ArgumentParser(
        prog='python -m pipelines.run', description=__doc__,
        epilog='Standard Beam options (--runner, --direct_num_workers, --project, --region, ...) also apply.')
    BatchInferenceOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    parser.print_help()
    return 0
  try:
    opts = PipelineOptions(argv).view_as(BatchInferenceOptions)
    if opts.preflight_only:
      print(preflight.check(opts).render())
      return 0
    if opts.watch:
      from pipelines.watch import watch
      summaries = watch(argv, on_run=lambda s: print(s.render(), flush=True))
      return 0 if all(s.reconciled for s in summaries) else 1
    summary = run(argv)
  except (ValueError, BundleError, NoGpuError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except RunError as e:
    logging.error('the job failed:\n%s', ''.join(traceback.format_exception(e.__cause__ or e)))
    print(f'error: {e}', file=sys.stderr)
    return 1
  except Exception as e:  # pylint: disable=broad-except  (the traceback goes to the log, the gist last)
    logging.exception('unexpected failure')
    print(f'error: unexpected {type(e).__name__}: {_first_line(e)}', file=sys.stderr)
    return 1
  if summary is None:
    print('Submitted; the runner reports progress (no run summary when not waiting).')
    return 0
  print(summary.render())
  if summary.output_link is None:
    print(f'  summary         {FileSystems.join(summary.output, SUMMARY_FILE)}')
    if opts.report:
      print(f'  report          {FileSystems.join(summary.output, REPORT_FILE)}')
  return 0 if summary.reconciled else 1


def exit_now(code: int) -> None:
  """Ends the process once the run is done, skipping the interpreter's teardown.

  By now every output is closed and published and the summary printed. Python's
  own exit would next unload TensorFlow's and Beam's thousands of modules, about
  a second (15% of a million-row run here) that no finished run needs. Exit
  handlers still run (logging flushes, multiprocessing stops its helpers), and
  standard streams are flushed, as a normal exit would.
  """
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


if __name__ == '__main__':
  exit_now(main())
