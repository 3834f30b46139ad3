"""Run the batch-inference job: `python -m pipelines.run --input ... --model ... --output ...`.

Parses flags, runs the preflight checks before any worker starts (alone with
`--preflight_only`), builds and runs the pipeline into staging folders,
publishes them as the run's output, then prints the run summary and writes it
as run_summary.json beside the predictions.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import time
import traceback
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineState

from models.bundle import BundleError
from pipelines import preflight
from pipelines.batch_inference import build_pipeline, run_directory
from pipelines.options import BatchInferenceOptions, new_run_id
from pipelines.staging import StagedRun
from pipelines.summary import RunSummary, counters

SUMMARY_FILE = 'run_summary.json'


class RunError(RuntimeError):
  """The job failed after preflight; nothing of this attempt was published."""


def _first_line(error: BaseException) -> str:
  """The error without the worker traceback that runners append to its message."""
  text = str(error).strip() or type(error).__name__
  return text.splitlines()[0][:1000]


def run(argv: Optional[Sequence[str]] = None) -> RunSummary:
  """Runs the job to completion and returns its summary."""
  options = PipelineOptions(argv)
  opts = options.view_as(BatchInferenceOptions)
  opts.run_id = opts.run_id or new_run_id()
  bundle = preflight.check(opts).bundle
  out_dir = run_directory(opts.output, opts.run_id)
  staged = StagedRun([opts.output, opts.dead_letter or opts.output], opts.run_id)
  staged.discard_stale()

  started = datetime.datetime.now(datetime.timezone.utc)
  clock = time.monotonic()
  pipeline = beam.Pipeline(options=options)
  build_pipeline(pipeline, opts, bundle, output_dir=staged.staging(opts.output),
                 dead_letter_dir=staged.staging(opts.dead_letter or opts.output))
  logging.info('run %s: predicting %s with %s v%s', opts.run_id, opts.input, bundle.name, bundle.version)
  retry = f'nothing was published to {out_dir}; fix the cause and re-run with --run_id {opts.run_id}'
  try:
    result = pipeline.run()
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
  try:
    staged.publish(SUMMARY_FILE)
  except Exception as e:
    raise RunError(f'run {opts.run_id} could not publish its output to {out_dir}: {_first_line(e)}\n  '
                   f're-run with --run_id {opts.run_id} to replace it') from e

  summary = RunSummary(
      run_id=opts.run_id,
      model={'name': bundle.name, 'version': bundle.version, 'path': opts.model},
      input=opts.input,
      output=out_dir,
      dead_letter=run_directory(opts.dead_letter or opts.output, opts.run_id),
      runner=str(options.view_as(StandardOptions).runner or 'DirectRunner'),
      state=str(state),
      started_at=started.isoformat(timespec='seconds'),
      wall_seconds=round(time.monotonic() - clock, 3),
      rows_read=totals.get('rows_read', 0),
      rows_predicted=totals.get('rows_predicted', 0),
      rows_rejected=totals.get('rows_rejected', 0),
      rejected_by_reason={name[len('rejected_'):]: n for name, n in totals.items() if name.startswith('rejected_')},
      files_read=totals.get('files_read', 0),
  )
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
    summary = run(argv)
  except (ValueError, BundleError) as e:
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
  print(summary.render())
  print(f'  summary         {FileSystems.join(summary.output, SUMMARY_FILE)}')
  return 0 if summary.reconciled else 1


if __name__ == '__main__':
  sys.exit(main())
