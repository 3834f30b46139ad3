"""`python -m pipelines.record.status --run_id=RUN_ID --output=OUTPUT`: how a run nobody waited for went.

A launch that does not wait (a Flex Template, a schedule) leaves the run's
record behind: the launcher writes `launch.json` into the attempt's folder
before it submits (with the Dataflow job id once it has one), a launcher that
sees the job fail writes `failure.json`, and the job writes
`run_summary.json` when it publishes. This reads them back:

  exit 0  DONE: the published summary (and whether it reconciled)
  exit 1  FAILED: the error of the newest attempt
  exit 3  no summary yet: still running, or stopped without publishing (the
          Dataflow job id says which, on the job page or with `gcloud dataflow jobs describe`)
  exit 2  no such run under that output, or bad flags

`--clean[=HOURS]` first removes what attempts killed more than HOURS ago
(default 24) left staged at the output (a database's staging tables; the next
run into the output does this too).
"""

from __future__ import annotations

import datetime
import sys
from typing import Optional, Sequence

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.destinations import kind_of
from pipelines.options import BatchInferenceOptions
from transforms.files import publish
from pipelines.record.summary import RunSummary

LAUNCH_FILE = 'launch.json'
FAILURE_FILE = 'failure.json'


def record_launch(plan, *, job_id: Optional[str] = None, region: Optional[str] = None) -> None:
  """Notes the attempt before (and, with the job id, after) it is submitted."""
  publish.write_json(FileSystems.join(plan.record_folder, LAUNCH_FILE), {
      'run_id': plan.run_id, 'attempt': plan.attempt, 'started_at': plan.started_at.isoformat(timespec='seconds'),
      'runner': plan.runner, 'input': plan.source, 'output': plan.predictions.uri, 'job_id': job_id,
      'region': region})


def record_failure(plan, error: str) -> None:
  """Notes why an attempt failed (in place of its deleted files); never raises, since it runs
  while reporting that error."""
  try:
    publish.write_json(FileSystems.join(plan.record_folder, FAILURE_FILE), {
        'run_id': plan.run_id, 'attempt': plan.attempt, 'state': 'FAILED', 'error': error,
        'started_at': plan.started_at.isoformat(timespec='seconds'), 'runner': plan.runner})
  except Exception:  # pylint: disable=broad-except
    pass


def describe(records: str, run_id: str) -> tuple[int, str]:
  """The exit status and text `status` prints for the run under the records folder."""
  published = publish.read_pointer(records, run_id)
  attempts = publish.attempts(records, run_id)
  newer = [a for a in attempts if published is None or a > published.get('attempt', '')]
  lines = []
  if published is not None:
    summary = RunSummary.from_dict(published)
    lines.append(summary.render())
  if newer:
    folder = publish.attempt_folder(records, run_id, newer[-1])
    failure = publish.read_json(FileSystems.join(folder, FAILURE_FILE))
    launch = publish.read_json(FileSystems.join(folder, LAUNCH_FILE)) or {}
    if failure is not None:
      lines.append(f'Run {run_id}: attempt {newer[-1]} FAILED: {failure.get("error")}')
      code = 1
    else:
      job = f'; Dataflow job {launch["job_id"]} in {launch.get("region")}' if launch.get('job_id') else ''
      lines.append(f'Run {run_id}: attempt {newer[-1]} launched {launch.get("started_at", "?")} on '
                   f'{launch.get("runner", "?")}{job} has not published: still running, or stopped without '
                   'publishing')
      code = 3
    if published is not None:
      lines.append(f'  (the summary above is of the attempt published before it, {published.get("attempt")})')
    return code, '\n'.join(lines)
  if published is not None:
    return (0 if summary.reconciled else 1), lines[0]
  return 2, f'no run {run_id} under {records}'


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if '--help' in argv or '-h' in argv:
    print(__doc__)
    return 0
  clean = [a for a in argv if a == '--clean' or a.startswith('--clean=')]
  argv = [a for a in argv if a not in clean]
  opts = PipelineOptions(argv).view_as(BatchInferenceOptions)
  if clean and opts.output:
    hours = float(clean[-1].partition('=')[2] or 24)
    removed = kind_of(opts.output).remove_stale(opts.output, datetime.timedelta(hours=hours),
                                                password_secret=opts.db_password_secret)
    print(f'--clean: removed {len(removed)} staging table(s) left by attempts older than {hours:g} h'
          + (f': {", ".join(removed)}' if removed else ''))
    if not opts.run_id:
      return 0
  if not opts.run_id or not opts.output:
    print('error: give --run_id and the run\'s --output (and --summary_location or --temp_location for a '
          'bq:// output, as the run had)', file=sys.stderr)
    return 2
  code, text = describe(opts.records_location(), opts.run_id)
  print(text, file=sys.stdout if code != 2 else sys.stderr)
  return code


if __name__ == '__main__':
  sys.exit(main())
