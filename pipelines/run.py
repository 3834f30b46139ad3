"""Run the batch-inference job: `python -m pipelines.run --input ... --model ... --output ...`.

Parses flags, checks the model bundle before any worker starts, builds and runs
the pipeline, then prints the run summary and writes it as run_summary.json
beside the predictions.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import time
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from models.bundle import BundleError, ModelBundle
from pipelines import preflight_bigquery as bqp
from pipelines.batch_inference import bigquery_input, bigquery_outputs, build_pipeline, run_directory
from pipelines.options import BatchInferenceOptions, new_run_id
from pipelines.summary import RunSummary, counters
from transforms.bigquery import TableRef, is_table

SUMMARY_FILE = 'run_summary.json'


def run(argv: Optional[Sequence[str]] = None) -> RunSummary:
  """Runs the job to completion and returns its summary."""
  options = PipelineOptions(argv)
  opts = options.view_as(BatchInferenceOptions)
  opts.validate_flags()
  bundle = ModelBundle.load(opts.model)
  bundle.check_signature()
  opts.run_id = opts.run_id or new_run_id()
  project = options.view_as(GoogleCloudOptions).project
  for target in (opts.output, opts.dead_letter_target):  # before a query input costs anything
    if is_table(target):
      table = TableRef.parse(target)
      bqp.check_dataset(bqp.client(project or table.project), table)
  bq_input = bigquery_input(opts, bundle, project) if opts.reads_bigquery else None
  if bq_input is not None and bq_input.bytes_processed is not None:
    logging.info('--input_query processed %s bytes into %s', f'{bq_input.bytes_processed:,}', bq_input.table)

  started = datetime.datetime.now(datetime.timezone.utc)
  clock = time.monotonic()
  pipeline = beam.Pipeline(options=options)
  outputs = build_pipeline(pipeline, opts, bundle, bq_input)
  tables = bigquery_outputs(opts, outputs.columns)
  for table, schema, time_column in tables:
    bqp.prepare_output_table(bqp.client(project or table.project), table, schema, partition_field=time_column)
  source = opts.input or f'query into {bq_input.table}'
  logging.info('run %s: predicting %s with %s v%s', opts.run_id, source, bundle.name, bundle.version)
  result = pipeline.run()
  state = result.wait_until_finish()
  totals = counters(result)
  rows_written = link = None
  for table, _, time_column in tables:  # the new rows landed: drop an earlier attempt's
    bq = bqp.client(project or table.project)
    replaced = bqp.replace_earlier_rows(bq, table, opts.run_id, time_column=time_column, started=started)
    logging.info('replaced %d rows of an earlier attempt of run %s in %s', replaced, opts.run_id, table)
    if str(table) == opts.output:
      rows_written, link = bqp.rows_of_run(bq, table, opts.run_id), bqp.console_link(table)

  out_dir = opts.output if is_table(opts.output) else run_directory(opts.output, opts.run_id)
  dead_target = opts.dead_letter_target
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
    summary = run(argv)
  except (ValueError, BundleError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(summary.render())
  if summary.output_link is None:
    print(f'  summary         {FileSystems.join(summary.output, SUMMARY_FILE)}')
  return 0 if summary.reconciled else 1


if __name__ == '__main__':
  sys.exit(main())
