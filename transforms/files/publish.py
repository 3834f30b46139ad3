"""Where a run's files live, and how an attempt becomes the run's published output.

Readers of files glob: Spark, Hive, BigQuery external tables, pandas and
pyarrow datasets read every file under a folder, except (the Hadoop convention)
paths that start with `_` or `.`. So everything of a run is hidden that way
except the published predictions:

    BASE/RUN_ID/_run_summary.json                 the pointer: the summary of the published attempt
    BASE/RUN_ID/attempt-X/predictions-*           the published attempt's predictions: the only visible files
    BASE/RUN_ID/_attempt-X/                       each attempt's own folder: report, profile, manifest,
                                                  launch.json, dead letters, scored keys...
    BASE/RUN_ID/_attempt-X/predictions/predictions-*   ...and its predictions until they are published

`pyarrow.dataset.dataset('BASE/RUN_ID')`, `spark.read.parquet('BASE/RUN_ID')`,
a glob of `BASE/RUN_ID/*/predictions-*` and a BigQuery external table over
`BASE/RUN_ID/attempt-*` read the published night and nothing else: an attempt
still writing, one that failed its checks or its gate, and one killed at any
point before publishing stay hidden.

Publishing moves files; it never copies data. The job's last step, once every
check passed, replaces the pointer in one atomic write: that is the commit, and
a run killed before it has changed nothing any reader sees. Then
(`show_attempt`) it hides what the older attempt shows (deletes it: the pointer
no longer names it), so a glob never sees two nights, and moves this attempt's
predictions folder into view; then it deletes the run's older attempts. On a
local disk the move is one directory rename, atomic. Cloud Storage has no
folders: a move renames each object (a server-side copy and a delete; no byte
leaves Cloud Storage and no data is rewritten by the job), so for the seconds a
publish takes a glob may see no night or part of this one, never two. A folder
per attempt, not one fixed folder, is what makes this safe to retry and to
kill: the name says whose files a folder holds, so a retry of the last step
(which a runner makes after a failure) finishes the move, and nothing ever
hides or deletes the wrong attempt's files.

A reader that starts from `_run_summary.json` reads the folder its `output`
names, the last published attempt's; a run folder without it has no published
attempt. Attempt names start with the UTC time they were launched, so they sort
by age: an attempt never replaces a pointer to a newer one, nor deletes or
shows over a newer folder. The time in the name also tells an attempt killed
long ago, whose run id may never run again (a date), from one still running:
`remove_stale_attempts` deletes those folders across every run folder.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import time
import uuid
from typing import Any, Optional

from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem

# Hidden, by the Hadoop convention that Spark, Hive, BigQuery's Hive layouts and pyarrow datasets follow.
HIDDEN = '_'
SUMMARY_FILE = HIDDEN + 'run_summary.json'
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
  """BASE/RUN_ID/_ATTEMPT: everything of one attempt, hidden from readers that glob."""
  return FileSystems.join(run_folder(base, run_id), HIDDEN + attempt)


def shown_folder(base: str, run_id: str, attempt: str) -> str:
  """BASE/RUN_ID/ATTEMPT: the published attempt's predictions, the run folder's only visible files."""
  return FileSystems.join(run_folder(base, run_id), attempt)


def staged_folder(base: str, run_id: str, attempt: str, name: str) -> str:
  """Where an attempt writes the files it shows once published: inside its hidden folder."""
  return FileSystems.join(attempt_folder(base, run_id, attempt), name)


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


def _attempt_names(base: str, run_id: str, prefix: str) -> list[str]:
  """The attempts with a folder `RUN_ID/PREFIX<attempt>` holding files, oldest first."""
  folder = run_folder(base, run_id) + '/'
  found = FileSystems.match([folder + prefix + 'attempt-*/**'])[0].metadata_list
  names = {m.path[len(folder):].split('/', 1)[0][len(prefix):] for m in found}
  return sorted(name for name in names if _ATTEMPT.match(name))


def attempts(base: str, run_id: str) -> list[str]:
  """The run's attempts that have a folder, oldest first."""
  return _attempt_names(base, run_id, HIDDEN)


def shown_attempts(base: str, run_id: str) -> list[str]:
  """The attempts whose predictions are visible: one, the published, except while a publish runs."""
  return _attempt_names(base, run_id, '')


def _move_folder(source: str, target: str, name: str) -> None:
  """Moves the files `NAME-*` of `source` into `target`, which a reader sees all at once where it can.

  On a local disk, a folder holding only those files moves in one rename, atomic;
  otherwise (Cloud Storage, which has no folders, or a target that part of an
  interrupted move already made) file by file, each a rename, and on Cloud Storage
  a server-side copy and delete. Moving what is already moved does nothing, so a
  retry finishes an interrupted move.
  """
  everything = _files_under(source)
  files = [f for f in everything if f.rsplit('/', 1)[-1].startswith(f'{name}-') and
           f.rsplit('/', 1)[0] == source.rstrip('/')]
  if not files:
    return
  local = isinstance(FileSystems.get_filesystem(source), LocalFileSystem)
  if local and files == everything and not FileSystems.exists(target):
    FileSystems.rename([source], [target])
    return
  if local and not FileSystems.exists(target):
    FileSystems.mkdirs(target)
  FileSystems.rename(files, [FileSystems.join(target, f.rsplit('/', 1)[-1]) for f in files])


def show_attempt(base: str, run_id: str, attempt: str, name: str) -> bool:
  """Shows the published attempt's files `NAME-*` (its predictions): hides what an older attempt shows, then
  moves these into view. Call it once the run's pointer names the attempt.

  Returns False, showing nothing, unless the pointer names `attempt` (a later
  launch of the same run id published after it). Safe to repeat: a retry
  finishes what an interrupted call began (see the module docstring).
  """
  def published() -> bool:
    return (read_pointer(base, run_id) or {}).get('attempt') == attempt

  if not published():
    logging.warning('run %s: attempt %s is not shown: it is not the published attempt', run_id, attempt)
    return False
  for older in shown_attempts(base, run_id):
    if older != attempt:  # the pointer no longer names it: its files go before these appear
      remove_tree(shown_folder(base, run_id, older))
  _move_folder(staged_folder(base, run_id, attempt, name), shown_folder(base, run_id, attempt), name)
  if not published():  # a newer attempt published meanwhile: it shows itself, so hide this one again
    _move_folder(shown_folder(base, run_id, attempt), staged_folder(base, run_id, attempt, name), name)
    return False
  return True


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
  for older in sorted(set(attempts(base, run_id) + shown_attempts(base, run_id))):
    if older < attempt:
      remove_tree(shown_folder(base, run_id, older))  # hidden by now, unless a publish was interrupted
      remove_tree(attempt_folder(base, run_id, older))
      removed.append(older)
  return removed


def launched_at(attempt: str) -> datetime.datetime:
  """The UTC time an attempt was launched, from its name (`new_attempt`)."""
  return datetime.datetime.strptime(attempt.split('-')[1], '%Y%m%dT%H%M%S%fZ').replace(tzinfo=datetime.timezone.utc)


def remove_stale_attempts(base: str, older_than: datetime.timedelta,
                          now: Optional[datetime.datetime] = None) -> list[str]:
  """Deletes the attempt folders under every run folder of `base` that killed attempts left; returns them.

  An attempt's folder goes when it was launched more than `older_than` ago, no
  file in it was written since (a running attempt's launcher rewrites its
  heartbeat there, and its workers write into it), and its run's pointer does
  not name it. One listing of `BASE/*/_attempt-*/**` finds them; a pointer is
  read only for a run folder that holds one.
  """
  now = now or datetime.datetime.now(datetime.timezone.utc)
  cutoff = now - older_than
  root = base.rstrip('/') + '/'
  newest: dict[tuple[str, str], float] = {}  # (run id, attempt): when a file in its folder was last written
  for m in FileSystems.match([root + '*/' + HIDDEN + 'attempt-*/**'])[0].metadata_list:
    run_id, folder = m.path[len(root):].split('/')[:2]
    attempt = folder[len(HIDDEN):]
    if _ATTEMPT.match(attempt):
      written = m.last_updated_in_seconds or time.time()  # unknown: as if just written, so it stays
      newest[(run_id, attempt)] = max(newest.get((run_id, attempt), 0.0), written)
  stale = sorted(key for key, written in newest.items()
                 if launched_at(key[1]) < cutoff and written < cutoff.timestamp())
  removed, pointers = [], {}
  for run_id, attempt in stale:
    if run_id not in pointers:
      pointers[run_id] = (read_pointer(base, run_id) or {}).get('attempt')
    if attempt == pointers[run_id]:
      continue
    remove_tree(shown_folder(base, run_id, attempt))  # shown only where a publish was interrupted
    remove_tree(attempt_folder(base, run_id, attempt))
    removed.append(attempt_folder(base, run_id, attempt))
  if removed:
    logging.info('%s: deleted %d attempt folder(s) of attempts killed more than %s ago: %s', base, len(removed),
                 older_than, ', '.join(removed))
  return removed


def discard_attempt(base: str, run_id: str, attempt: str) -> None:
  """Deletes one attempt's files; never raises, since it runs while reporting another error."""
  folder = attempt_folder(base, run_id, attempt)
  try:
    remove_tree(folder)
  except Exception as e:  # pylint: disable=broad-except  (cleanup must not hide the real error)
    logging.warning('could not delete the files of the failed attempt %s: %s', folder, e)
