"""`python -m pipelines.record.status --run_id=RUN_ID --output=OUTPUT`: how a run nobody waited for went.

A launch that does not wait (a Flex Template, a schedule) leaves the run's
record behind: the launcher writes `launch.json` into the attempt's folder
before it submits (with the Dataflow job id once it has one) and rewrites
`heartbeat.json` there every HEARTBEAT_SECONDS while it runs; a launcher that
sees the job fail writes `failure.json`, and the job writes `run_summary.json`
when it publishes. This reads them back, and asks the output itself what it
holds of the run (`Destination.published_run`, for every kind: a folder's
pointer, a BigQuery table's rows, the run PostgreSQL noted in the publish's
own transaction), so a run killed just after its publish committed says so:

  exit 0  DONE: the published summary (and whether it reconciled); or, with
          no record to read (no --summary_location for a table), the output
          holds the run
  exit 1  FAILED: the error of the newest attempt; KILLED: its launcher
          stopped (no heartbeat) without publishing; or PUBLISHED to the
          output but killed before its summary was written
  exit 3  RUNNING: its launcher's heartbeat is fresh, or its Dataflow job
          runs (or its state cannot be read: the job id says where to look)
  exit 2  no such run under that output, or bad flags

`--clean[=HOURS]` first removes what attempts killed more than HOURS ago
(default 24) left staged for the output: a folder's hidden attempt folders
(of any run id), a BigQuery table's staged Parquet files (under
--temp_location) and staging tables, a database's staging tables. The next
run into the output does this too, for leftovers older than 24 hours.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import socket
import sys
import threading
from typing import Any, Optional, Sequence

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from pipelines.destinations import kind_of
from pipelines.options import BatchInferenceOptions
from transforms.destination import STALE_AFTER, PublishedRun
from transforms.files import publish
from pipelines.record.summary import RunSummary

LAUNCH_FILE = 'launch.json'
FAILURE_FILE = 'failure.json'
HEARTBEAT_FILE = 'heartbeat.json'
# How often a running launcher rewrites its heartbeat, and how many beats it may miss before `status`
# calls it stopped (a slow write to Cloud Storage is not a death).
HEARTBEAT_SECONDS = 30.0
MISSED_BEATS = 3
# Dataflow job states in which the job may still publish.
_DATAFLOW_ACTIVE = ('JOB_STATE_RUNNING', 'JOB_STATE_PENDING', 'JOB_STATE_QUEUED', 'JOB_STATE_NOT_STARTED',
                    'JOB_STATE_DRAINING', 'JOB_STATE_CANCELLING', 'JOB_STATE_RESOURCE_CLEANING_UP')


def _now() -> datetime.datetime:
  return datetime.datetime.now(datetime.timezone.utc)


def record_launch(plan, *, job_id: Optional[str] = None, region: Optional[str] = None,
                  project: Optional[str] = None) -> None:
  """Notes the attempt before (and, with the job id, after) it is submitted."""
  publish.write_json(FileSystems.join(plan.record_folder, LAUNCH_FILE), {
      'run_id': plan.run_id, 'attempt': plan.attempt, 'started_at': plan.started_at.isoformat(timespec='seconds'),
      'runner': plan.runner, 'input': plan.source, 'output': plan.predictions.uri, 'job_id': job_id,
      'region': region, 'project': project})


def record_failure(plan, error: str) -> None:
  """Notes why an attempt failed (in place of its deleted files); never raises, since it runs
  while reporting that error."""
  try:
    publish.write_json(FileSystems.join(plan.record_folder, FAILURE_FILE), {
        'run_id': plan.run_id, 'attempt': plan.attempt, 'state': 'FAILED', 'error': error,
        'started_at': plan.started_at.isoformat(timespec='seconds'), 'runner': plan.runner})
  except Exception:  # pylint: disable=broad-except
    pass


class Heartbeat:
  """While the launcher runs the job, rewrites RECORD/ATTEMPT/heartbeat.json every `every` seconds.

  `status` tells a running attempt from a killed one by it: a heartbeat older
  than MISSED_BEATS beats, or whose process is gone from this machine, with no
  summary and no failure, is a launcher that was killed. When the launcher
  returns it writes a last beat saying so (`ended`): a job it left running (on
  Dataflow, not waiting) is then asked for its state instead. Writes never
  raise: a heartbeat must not fail a run.
  """

  def __init__(self, record_folder: str, every: float = HEARTBEAT_SECONDS):
    self._path = FileSystems.join(record_folder, HEARTBEAT_FILE)
    self._every = every
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._loop, name='heartbeat', daemon=True)

  def _beat(self, ended: bool = False) -> None:
    try:
      publish.write_json(self._path, {'at': _now().isoformat(timespec='seconds'), 'every': self._every,
                                      'host': socket.gethostname(), 'pid': os.getpid(), 'ended': ended})
    except Exception:  # pylint: disable=broad-except
      pass

  def _loop(self) -> None:
    while not self._stop.wait(self._every):
      self._beat()

  def __enter__(self) -> 'Heartbeat':
    self._beat()
    self._thread.start()
    return self

  def __exit__(self, *exc_info) -> None:
    self._stop.set()
    self._thread.join()
    self._beat(ended=True)


def _read(folder: str, name: str) -> Optional[dict[str, Any]]:
  """One record file of an attempt; None when missing or torn (a launcher killed while writing it)."""
  try:
    return publish.read_json(FileSystems.join(folder, name))
  except ValueError:
    return None


def _launcher_alive(beat: dict[str, Any]) -> Optional[bool]:
  """Whether the launcher that wrote `beat` still runs: its process where it ran on this machine, else
  the heartbeat's age; None when it returned (`ended`)."""
  if beat.get('ended'):
    return None
  if beat.get('host') == socket.gethostname() and beat.get('pid'):
    try:
      os.kill(int(beat['pid']), 0)
    except ProcessLookupError:
      return False
    except OSError:  # another user's process: it exists
      pass
  at = datetime.datetime.fromisoformat(beat['at'])
  return (_now() - at).total_seconds() <= MISSED_BEATS * float(beat.get('every', HEARTBEAT_SECONDS))


def _dataflow_state(launch: dict[str, Any]) -> Optional[str]:
  """The Dataflow job's state (JOB_STATE_RUNNING, JOB_STATE_FAILED, ...); None when it cannot be read
  (no credentials, no network, an older launch record without the project)."""
  if not (launch.get('job_id') and launch.get('project') and launch.get('region')):
    return None
  try:
    from apache_beam.runners.dataflow.internal import apiclient  # pylint: disable=import-outside-toplevel
    options = PipelineOptions([f'--project={launch["project"]}', f'--region={launch["region"]}'])
    state = apiclient.DataflowApplicationClient(options).get_job(launch['job_id']).current_state
    return getattr(state, 'name', str(state))
  except Exception:  # pylint: disable=broad-except
    return None


def _held(held: PublishedRun, output: str) -> str:
  """What the output holds of the run, in words."""
  when = f' at {held.published_at}' if held.published_at else ''
  by = f' by {held.attempt}' if held.attempt else ''
  rows = f'{held.rows:,} rows' if held.rows is not None else 'rows'
  return f'{output} holds {rows} of the run, published{when}{by}' + (f' ({held.note})' if held.note else '')


def _attempt_state(run_id: str, attempt: str, folder: str, output: str,
                   held: Optional[PublishedRun]) -> tuple[int, str]:
  """The exit status and line for an attempt newer than the published summary (or with none)."""
  failure = _read(folder, FAILURE_FILE)
  launch = _read(folder, LAUNCH_FILE) or {}
  heading = f'Run {run_id}: attempt {attempt} launched {launch.get("started_at", "?")} on {launch.get("runner", "?")}'
  job = f'Dataflow job {launch["job_id"]} in {launch.get("region")}' if launch.get('job_id') else ''
  if held is not None and held.attempt == attempt:  # the publish committed; what came after it did not finish
    why = f' ({failure.get("error")})' if failure else ''
    return 1, (f'Run {run_id}: PUBLISHED by attempt {attempt}, but it stopped before writing its summary{why}: '
               f'{_held(held, output)}. Its dead letters and summary are not published; re-run with '
               f'--run_id {run_id} to finish them (it publishes the same rows again)')
  if failure is not None:
    return 1, f'Run {run_id}: attempt {attempt} FAILED: {failure.get("error")}'
  if job:
    state = _dataflow_state(launch)
    if state in _DATAFLOW_ACTIVE:
      return 3, f'{heading}: RUNNING ({job} is {state})'
    if state is not None:
      return 1, f'{heading}: {job} ended {state} without publishing; re-run with --run_id {run_id}'
  beat = _read(folder, HEARTBEAT_FILE)
  alive = _launcher_alive(beat) if beat and beat.get('at') else None
  if alive:
    return 3, f'{heading}: RUNNING (its launcher\'s last heartbeat at {beat["at"]})'
  if alive is False and not job:  # the job ran inside the launcher: it died with it
    return 1, (f'{heading}: KILLED without publishing: its launcher stopped (last heartbeat at {beat["at"]}); '
               f'nothing of this attempt was published; re-run with --run_id {run_id}')
  where = (f'; {job}: `gcloud dataflow jobs describe {launch["job_id"]} --region={launch.get("region")}` '
           'tells which') if job else ''
  return 3, (f'{heading} has not published: still running, or stopped without publishing (its launcher no '
             f'longer reports){where}')


def command(opts: BatchInferenceOptions) -> str:
  """The `status` command for the run `opts` launch, with the flags that find its record."""
  flags = [f'--run_id={opts.run_id}', f'--output={opts.output}']
  temp_location = opts.view_as(GoogleCloudOptions).temp_location
  if opts.summary_location:
    flags.append(f'--summary_location={opts.summary_location}')
  elif not kind_of(opts.output).holds_run_folders and temp_location:
    flags.append(f'--temp_location={temp_location}')
  return 'python -m pipelines.record.status ' + ' '.join(shlex.quote(f) for f in flags)


def describe(opts: BatchInferenceOptions, run_id: str) -> tuple[int, str]:
  """The exit status and text `status` prints for the run: from its record under the records folder
  (when the flags name one) and from the output itself."""
  records = opts.records_location()
  output = opts.output
  try:
    held = kind_of(output).published_run(output, run_id, opts)
    unread = ''
  except Exception as e:  # pylint: disable=broad-except  (an unreachable output: the record may still say)
    held, unread = None, f'  (could not ask {output}: {str(e).strip().splitlines()[0] if str(e).strip() else e!r})'
  published = publish.read_pointer(records, run_id) if records else None
  attempts = publish.attempts(records, run_id) if records else []
  newer = [a for a in attempts if published is None or a > published.get('attempt', '')]
  lines = []
  if published is not None:
    summary = RunSummary.from_dict(published)
    lines.append(summary.render())
  if newer:
    code, line = _attempt_state(run_id, newer[-1], publish.attempt_folder(records, run_id, newer[-1]), output, held)
    lines.append(line)
    if published is not None:
      lines.append(f'  (the summary above is of the attempt published before it, {published.get("attempt")})')
  elif published is not None:
    code = 0 if summary.reconciled else 1
  elif held is not None:
    where = (f'its summary and report are under {publish.run_folder(records, run_id)}, which holds none'
             if records else 'give --summary_location (or --temp_location) as the run had for its summary and report')
    lines.append(f'Run {run_id}: {_held(held, output)}; {where}')
    code = 0
  else:
    if records and records.rstrip('/') == output.rstrip('/'):  # a folder holds its runs' records
      return 2, f'no run {run_id} under {records}' + unread
    where = f' nor under {records}' if records else ' (give --summary_location or --temp_location as the run had ' \
        'to look for its record too)'
    return 2, f'no run {run_id} in {output}{where}' + unread
  return code, '\n'.join(lines + ([unread] if unread else []))


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if '--help' in argv or '-h' in argv:
    print(__doc__)
    return 0
  own = argparse.ArgumentParser(add_help=False)
  own.add_argument('--clean', nargs='?', type=float, const=STALE_AFTER.total_seconds() / 3600, default=None)
  try:
    clean, argv = own.parse_known_args(argv)
  except SystemExit:  # argparse printed what is wrong with --clean
    return 2
  opts = PipelineOptions(argv).view_as(BatchInferenceOptions)
  if clean.clean is not None and opts.output:
    hours = clean.clean
    removed = kind_of(opts.output).remove_stale(opts.output, datetime.timedelta(hours=hours), opts)
    print(f'--clean: removed {len(removed)} leftover(s) of attempts killed more than {hours:g} h ago'
          + (f': {", ".join(removed)}' if removed else ''))
    if not opts.run_id:
      return 0
  if not opts.run_id or not opts.output:
    print('error: give --run_id and the run\'s --output (and --summary_location or --temp_location for a '
          'table output, as the run had)', file=sys.stderr)
    return 2
  code, text = describe(opts, opts.run_id)
  print(text, file=sys.stdout if code != 2 else sys.stderr)
  return code


if __name__ == '__main__':
  sys.exit(main())
