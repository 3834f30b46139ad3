"""`--replay=RUN_SUMMARY`: re-run a run exactly as its manifest recorded it, and check the predictions match.

Before anything runs, the launcher refuses (exit 2) when the model bundle's
digest changed, or when any input file changed, vanished or appeared under the
pattern; a table is read at the recorded snapshot (BigQuery time travel). The
replay runs under a new run id with the recorded options (flags given beside
`--replay` override them), and fails (exit 1) when its predictions' digest
differs from the original's.
"""

from __future__ import annotations

import datetime
from typing import Any, Optional, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.destinations import kind_of
from pipelines.graph import manifest as manifest_
from pipelines.options import BatchInferenceOptions
from transforms.files import publish
from transforms.files.read import FileInput
from pipelines.record.summary import RunSummary

# Recorded options a replay never carries over: it sets or refuses them itself.
_NOT_REPLAYED = {'replay', 'run_id', 'preflight_only', 'watch', 'watch_interval', 'watch_max_files', 'watch_timeout',
                 'input_snapshot', 'estimate', 'estimate_rows', 'deadline', 'estimate_output'}


class ReplayRefusedError(ValueError):
  """What the run read or ran has changed since, so it cannot be replayed exactly."""


class ReplayMismatchError(RuntimeError):
  """The replay ran, but its predictions differ from the original's."""


def _flags(options: dict[str, Any], bare_booleans: bool) -> list[str]:
  argv = []
  for name, value in options.items():
    if value is None or name in _NOT_REPLAYED or value == manifest_.REDACTED:  # credentials: give them again
      continue
    if isinstance(value, list):
      argv += [f'--{name}={v}' for v in value]
    elif isinstance(value, bool) and bare_booleans:  # Beam's own switches take no value
      if value:
        argv.append(f'--{name}')
    else:
      argv.append(f'--{name}={value}')
  return argv


def _file_changes(recorded: list[dict[str, Any]], pattern: str) -> list[str]:
  now = {f['path']: f for f in FileInput(pattern).describe()['files']}
  then = {f['path']: f for f in recorded}
  problems = [f'{p} changed (was {then[p]}, now {now[p]})' for p in sorted(then) if p in now and now[p] != then[p]]
  problems += [f'{p} is gone' for p in sorted(set(then) - set(now))]
  problems += [f'{p} is new under {pattern}' for p in sorted(set(now) - set(then))]
  return problems


def prepare(argv: Sequence[str]) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
  """The argv that replays `--replay`'s run, its original summary and manifest; raises ReplayRefusedError."""
  given = PipelineOptions(list(argv)).view_as(BatchInferenceOptions)
  summary = publish.read_json(given.replay)
  if summary is None:
    raise ReplayRefusedError(f'--replay: no run summary at {given.replay}')
  recorded = publish.read_json(summary['manifest']) if summary.get('manifest') else None
  if recorded is None:
    raise ReplayRefusedError(f'--replay: run {summary.get("run_id")} has no manifest (written by every run since '
                             'manifests were added), so what it read cannot be known')
  if recorded['options'].get('only_unscored'):
    raise ReplayRefusedError(f'--replay: run {summary["run_id"]} ran with --only_unscored, so the rows it predicted '
                             'depended on what earlier runs had scored then; replaying it is not supported')
  problems = []
  for role in ('model', 'challenger'):
    then = recorded.get(role)
    if then:
      now = manifest_.bundle_digest(then['path'])
      if now['sha256'] != then['sha256']:
        problems.append(f'the {role} bundle {then["path"]} changed: digest {now["sha256"][:12]}…, recorded '
                        f'{then["sha256"][:12]}…')
  inputs = recorded['input']
  extra = []
  if inputs['kind'] == 'files':
    problems += _file_changes(inputs['files'], inputs['pattern'])
  else:
    extra.append(f'--input_snapshot={inputs["snapshot_time"]}')
    if inputs.get('query'):  # the query's saved result, as it was: the query itself would read today's tables
      extra += [f'--input=bq://{inputs["table"]}']
  if problems:
    raise ReplayRefusedError(f'--replay of run {summary["run_id"]} refused: ' + '; '.join(problems))
  options = dict(recorded['options'])
  if inputs['kind'] == 'table' and inputs.get('query'):
    options.update(input_query=None, query_parameter=None)
  replay = _flags(options, bare_booleans=False) + _flags(recorded.get('beam_options', {}), bare_booleans=True)
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
  user = [a for a in argv if not a.startswith('--replay')]
  if given.run_id is None:
    user.append(f'--run_id={summary["run_id"]}-replay-{stamp}')
  output = given.output or options.get('output') or ''
  if output and not kind_of(output).holds_run_folders and not given.output:
    raise ReplayRefusedError('--replay of a run into a table needs --output: a table for the replay\'s rows, so '
                             'the original table is not changed')
  return replay + extra + user, summary, recorded


def check(original: dict[str, Any], recorded: dict[str, Any], replayed: Optional[RunSummary]) -> str:
  """Compares the replay's predictions with the original's; returns a line to print, or raises."""
  expected = recorded.get('predictions') or original.get('predictions_digest')
  if replayed is None:
    return 'replay submitted; compare its predictions_digest with the original\'s once it is done'
  got = replayed.predictions_digest
  if expected != got:
    raise ReplayMismatchError(f'replay {replayed.run_id} of run {original["run_id"]}: predictions differ '
                              f'(digest {got}, original {expected})')
  return (f'  replay          predictions match run {original["run_id"]}: {got["rows"]:,} rows, digest '
          f'{got["sum64"]}')
