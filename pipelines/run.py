"""Run the batch-inference job: `python -m pipelines.run --input ... --model ... --output ...`.

Parses flags, resolves and checks the job before any worker starts (alone with
`--preflight_only`), builds and submits the pipeline (with a live progress line
on a terminal). The job itself reconciles its counts, writes its summary and
report and publishes its output as its last step; a launcher that waits then
prints the summary the job wrote. With --watch it keeps running and does this
for each new input file (pipelines.launcher.watch).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import gc
import logging
import os
import re
import sys
from typing import Optional, Sequence

from pipelines.launcher import logs

if __name__ == '__main__':
  logs.start(sys.argv[1:])  # before TensorFlow loads: its start-up lines go to the log file, not the console
  gc.disable()  # until the imports below are done

import apache_beam as beam  # the imports from here on may load TensorFlow
from apache_beam.options.pipeline_options import DirectOptions, GoogleCloudOptions, PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineState

from models.bundle import BundleError, bundle_format
from models.handlers.base import NoGpuError
from models.handlers import require_gpu
from pipelines.graph import gate, manifest
from pipelines.graph.batch_inference import build_pipeline
from pipelines.graph.plan import JobPlan
from pipelines.launcher import estimate, replay
from pipelines.launcher.progress import PROGRESS_RUNNERS, LiveCounters, ProgressLine, direct_runner_progress
from pipelines.launcher.resolve import resolve
from pipelines.launcher.watch import watch
from pipelines.options import BatchInferenceOptions, new_run_id, unknown_flags
from pipelines.record import status
from transforms.files import publish
from pipelines.record.summary import RunSummary

if __name__ == '__main__':
  # Start-up leaves millions of long-lived objects (Beam, the model's framework) that the
  # collector would walk at every full collection of the run. Frozen, they are left out;
  # the job's own garbage is collected as before. No collection runs first: what little
  # cyclic garbage the imports left stays, which is cheaper than one walk over it all.
  gc.freeze()
  gc.enable()


def _shows_progress(options: PipelineOptions, argv: Sequence[str]) -> bool:
  """Whether to draw the live progress line: a terminal, the DirectRunner, not --quiet.

  Sets the DirectRunner to run bundles on a worker thread when the user chose no
  running mode: only such a worker answers progress requests (pipelines.launcher.progress).
  Call before the Pipeline is created: it copies the options.
  """
  opts = options.view_as(BatchInferenceOptions)
  if opts.quiet or not sys.stdout.isatty() or opts.runner_name() not in PROGRESS_RUNNERS:
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
  """The error without the worker traceback that runners append to its message.

  Dataflow's error is a heading ("Dataflow pipeline failed. State: FAILED, Error:") over the worker's
  traceback, whose last `Type: message` line is the error itself; other runners raise the error with
  the step it failed in.
  """
  text = str(error).strip() or type(error).__name__
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if len(lines) > 1 and lines[0].endswith(':'):
    last = next((line for line in reversed(lines) if re.match(r'^[\w.]+(Error|Exception|Exit)\b.*: ', line)), None)
    if last is not None:
      return last.split(': ', 1)[1][:1000]
  return lines[0][:1000]


def _published_to(plan: JobPlan) -> str:
  """Where the run's predictions are published: the table, or the run folder its pointer switches."""
  if plan.predictions.run_base is None:
    return plan.predictions.uri
  return publish.run_folder(plan.records, plan.run_id)


def _discard(plan: JobPlan, error: str) -> None:
  """Deletes what a failed attempt wrote and records why it failed, for `status`."""
  for base in plan.bases:
    publish.discard_attempt(base, plan.run_id, plan.attempt)
  for destination in plan.outputs:
    destination.discard()
  status.record_failure(plan, error)


def run(argv: Optional[Sequence[str]] = None) -> Optional[RunSummary]:
  """Resolves, builds and runs the job; returns the summary the job published.

  The job publishes its own output, summary and report as its last step, so a
  launcher that does not wait (`--wait_for_job=false`, Beam's
  `--no_wait_until_finish`, a Flex Template) gets all of them too; it returns
  None here, and `python -m pipelines.record.status` reads the summary later.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  options = PipelineOptions(argv)
  opts = options.view_as(BatchInferenceOptions)
  if opts.device == 'gpu' and opts.runs_locally():
    require_gpu(bundle_format(opts.model))  # before preflight touches anything; remote workers check at model load
  plan, _ = resolve(options)
  logs.settle(opts.output)
  plan = dataclasses.replace(plan, manifest=manifest.build(options, plan))
  waits = opts.wait_for_job and not options.view_as(StandardOptions).no_wait_until_finish
  show_progress = _shows_progress(options, argv)
  pipeline = beam.Pipeline(options=options)
  build_pipeline(pipeline, plan)
  status.record_launch(plan)
  logging.info('run %s (%s): predicting %s with %s v%s', plan.run_id, plan.attempt, plan.source, plan.bundle.name,
               plan.bundle.version)
  retry = f'nothing was published to {_published_to(plan)}; fix the cause and re-run with --run_id {plan.run_id}'
  try:
    with status.Heartbeat(plan.record_folder), _progress(show_progress):
      result = pipeline.run()
      if getattr(result, 'has_job', False):
        gcp = options.view_as(GoogleCloudOptions)
        status.record_launch(plan, job_id=result.job_id(), region=gcp.region, project=gcp.project)
        logging.info('run %s: Dataflow job %s, https://console.cloud.google.com/dataflow/jobs/%s/%s?project=%s',
                     plan.run_id, result.job_id(), gcp.region, result.job_id(), gcp.project)
      if not waits or not getattr(result, 'has_job', True):
        logging.info('run %s: submitted, not waiting for it to finish', plan.run_id)
        return None
      state = result.wait_until_finish()
  except BaseException as e:
    verdict = gate.read_verdict(plan.record_folder)
    if verdict is not None and not verdict['passed']:  # keep the staged output for inspection
      raise gate.GateBreachedError(gate.breach_message(plan.run_id, verdict)
                                   + f': {publish.attempt_folder(plan.records, plan.run_id, plan.attempt)}') from e
    _discard(plan, _first_line(e))
    if not isinstance(e, Exception):
      raise
    gist = _first_line(e)  # the job's own errors (too many rejected, not reconciled) name the run already
    said = gist if gist.startswith(f'run {plan.run_id} ') else f'run {plan.run_id} failed: {gist}'
    raise RunError(f'{said}\n  {retry}') from e
  if state != PipelineState.DONE:
    _discard(plan, f'the job ended {state}')
    raise RunError(f'run {plan.run_id} ended {state}; {retry}')
  published = publish.read_pointer(plan.records, plan.run_id)
  if published is None or published.get('attempt') != plan.attempt:
    raise RunError(f'run {plan.run_id} ended {state} but attempt {plan.attempt} is not the published one in '
                   f'{publish.run_folder(plan.records, plan.run_id)}: another attempt of the run published after it')
  return RunSummary.from_dict(published)


def _failed(error: BaseException, code: int) -> int:
  """An expected outcome (a preflight failure, a broken gate, a failed job): its traceback to the log
  file, one message to the console; returns the exit status."""
  logs.failure(error)
  print(f'error: {error}', file=sys.stderr)
  return code


def main(argv: Optional[Sequence[str]] = None) -> int:
  if not logs.started():
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
  problems = unknown_flags(argv)
  if problems:
    print('error: ' + '; '.join(problems), file=sys.stderr)
    return 2
  try:
    options = PipelineOptions(argv)
    opts = options.view_as(BatchInferenceOptions)
    if opts.preflight_only:
      print(resolve(options, check_only=True)[1].render())
      return 0
    if opts.watch:
      summaries = watch(argv, run, on_run=lambda s: print(s.render(), flush=True))
      return 0 if all(s.reconciled for s in summaries) else 1
    if opts.estimate:
      print(estimate.render(estimate.estimate(argv, run)))
      return 0
    replayed = None
    replaying = bool(opts.replay)
    if replaying:
      argv, original, recorded = replay.prepare(argv)
      opts = PipelineOptions(argv).view_as(BatchInferenceOptions)
    if not opts.run_id:  # chosen here, so a launch that does not wait can say where its run will be
      opts.run_id = new_run_id()
      argv.append(f'--run_id={opts.run_id}')
    summary = run(argv)
    if replaying:
      replayed = replay.check(original, recorded, summary)
  except (ValueError, BundleError, NoGpuError) as e:  # bad flags, a preflight failure
    return _failed(e, 2)
  except gate.GateBreachedError as e:
    return _failed(e, gate.GATE_EXIT_STATUS)
  except (replay.ReplayMismatchError, RunError) as e:
    return _failed(e, 1)
  except Exception as e:  # pylint: disable=broad-except  (the traceback goes to the log, the gist last)
    logs.failure(e, 'unexpected failure')
    print(f'error: unexpected {type(e).__name__}: {_first_line(e)}', file=sys.stderr)
    return 1
  if summary is None:
    print(f'Submitted run {opts.run_id}; the job publishes its output and writes its summary itself.\n'
          f'  summary         {publish.pointer_path(opts.records_location(), opts.run_id)} (once it is done)\n'
          f'  status          {status.command(opts)}')
    return 0
  print(summary.render())
  print(f'  summary         {publish.pointer_path(opts.records_location(), summary.run_id)}')
  if logs.path():
    print(f'  log             {logs.path()}')
  if summary.report:
    print(f'  report          {summary.report}')
  if replayed:
    print(replayed)
  return 0 if summary.reconciled else 1


def exit_now(code: int) -> None:
  """Ends the process once the run is done, skipping the interpreter's teardown.

  By now every output is closed and published and the summary printed. Python's
  own exit would next unload TensorFlow's and Beam's thousands of modules, about
  a second (15% of a million-row run here) that no finished run needs. Exit
  handlers still run (logging flushes, multiprocessing stops its helpers), and
  standard streams are flushed, as a normal exit would.
  """
  if code and logs.path():
    print(f'log: {logs.path()}', file=sys.stderr)
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


if __name__ == '__main__':
  exit_now(main())
