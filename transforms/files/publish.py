"""Where a run's files live, and how an attempt becomes the run's published output.

Each attempt of a run writes into a folder of its own, and a small pointer file
names the attempt that is published:

    BASE/RUN_ID/run_summary.json        the pointer: the summary of the published attempt
    BASE/RUN_ID/ATTEMPT/predictions-*   that attempt's files, report and profile

The job's last step writes the pointer, in one atomic write, only after every
file of the attempt is complete; then it deletes the run's older attempts. So a
reader that starts from `run_summary.json` sees the last complete attempt until
the next one is complete, whatever is killed when: a failed or killed attempt
only leaves a folder that no pointer names, and the next attempt of that run id
deletes it. A run folder without `run_summary.json` has no complete attempt.

Attempt names start with the UTC time they were launched, so they sort by age:
an attempt never replaces a pointer to a newer one, nor deletes a newer folder.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import uuid
from typing import Any, Optional

from apache_beam.io.filesystems import FileSystems

SUMMARY_FILE = 'run_summary.json'
# A run id names a folder and is matched in globs: no separators, no wildcards.
RUN_ID_PATTERN = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._=-]{0,127}$')
_ATTEMPT = re.compile(r'^attempt-\d{8}T\d{6}\d{6}Z-[0-9a-f]{6}$')


def check_run_id(run_id: str) -> None:
  """Raises ValueError unless `run_id` is safe as a folder name and in a glob."""
  if not RUN_ID_PATTERN.match(run_id or ''):
    raise ValueError(f'--run_id {run_id!r} must be 1 to 128 letters, digits, ".", "_", "=" or "-", '
                     'starting with a letter or digit')


def new_attempt(now: Optional[datetime.datetime] = None) -> str:
  """A name for one attempt of a run that sorts by launch time (to the microsecond)."""
  now = now or datetime.datetime.now(datetime.timezone.utc)
  return f'attempt-{now:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:6]}'


def run_folder(base: str, run_id: str) -> str:
  """BASE/RUN_ID: the run's pointer and its attempts. (Not a Hive-style `run_id=` folder:
  readers would then see run_id twice, as a partition and as a column.)"""
  return FileSystems.join(base.rstrip('/'), run_id)


def attempt_folder(base: str, run_id: str, attempt: str) -> str:
  return FileSystems.join(run_folder(base, run_id), attempt)


def pointer_path(base: str, run_id: str) -> str:
  return FileSystems.join(run_folder(base, run_id), SUMMARY_FILE)


def read_json(path: str) -> Optional[Any]:
  """One small JSON file, or None when it does not exist."""
  if not FileSystems.exists(path):
    return None
  with FileSystems.open(path) as f:
    return json.loads(f.read().decode('utf-8'))


def read_pointer(base: str, run_id: str) -> Optional[dict[str, Any]]:
  """The published attempt's summary, or None when the run has no complete attempt."""
  return read_json(pointer_path(base, run_id))


def write_json(path: str, value: Any) -> None:
  """Writes one small JSON file (a plain write: one object, rewritten whole by a retry)."""
  with FileSystems.create(path, mime_type='application/json') as f:
    f.write(json.dumps(value, indent=2).encode('utf-8'))


def _files_under(folder: str) -> list[str]:
  return sorted(m.path for m in FileSystems.match([FileSystems.join(folder, '**')])[0].metadata_list)


def remove_tree(folder: str) -> None:
  """Deletes a folder's files, then the folder where the file system has folders."""
  files = _files_under(folder)
  if files:
    FileSystems.delete(files)
  if FileSystems.exists(folder):
    FileSystems.delete([folder])


def attempts(base: str, run_id: str) -> list[str]:
  """The run's attempt folders that exist, oldest first."""
  prefix = run_folder(base, run_id) + '/'
  found = FileSystems.match([prefix + 'attempt-*/**'])[0].metadata_list
  names = {m.path[len(prefix):].split('/', 1)[0] for m in found}
  return sorted(name for name in names if _ATTEMPT.match(name))


def switch_pointer(base: str, run_id: str, summary: dict[str, Any]) -> bool:
  """Publishes `summary['attempt']` by replacing the pointer in one atomic write.

  Written to a temporary name and renamed over the pointer: a rename is atomic
  on a local disk, and on Cloud Storage the copy that a rename makes appears
  whole. Returns False, publishing nothing, when the pointer already names a
  newer attempt (a later launch of the same run id finished first).
  """
  current = read_pointer(base, run_id)
  if current is not None and current.get('attempt', '') > summary['attempt']:
    logging.warning('run %s: attempt %s is not published: the newer attempt %s already is', run_id,
                    summary['attempt'], current['attempt'])
    return False
  path = pointer_path(base, run_id)
  temporary = f'{path}.{summary["attempt"]}.tmp'
  write_json(temporary, summary)
  FileSystems.rename([temporary], [path])
  return True


def remove_older_attempts(base: str, run_id: str, attempt: str) -> list[str]:
  """Deletes the run's attempt folders older than `attempt`: the one it replaced, and any a
  failed or killed attempt left. Newer ones may still be running, so they stay."""
  removed = []
  for older in attempts(base, run_id):
    if older < attempt:
      remove_tree(attempt_folder(base, run_id, older))
      removed.append(older)
  return removed


def discard_attempt(base: str, run_id: str, attempt: str) -> None:
  """Deletes one attempt's files; never raises, since it runs while reporting another error."""
  folder = attempt_folder(base, run_id, attempt)
  try:
    remove_tree(folder)
  except Exception as e:  # pylint: disable=broad-except  (cleanup must not hide the real error)
    logging.warning('could not delete the files of the failed attempt %s: %s', folder, e)
