"""Publish a run's files all at once, so re-runs replace and failures leave nothing.

Beam's file sinks make each write all-or-nothing, but a run writes two sets
(predictions and dead letters) and a re-run may choose a different shard
count. So a run writes under a staging folder beside its final one,
`BASE/.staging-RUN_ID-ATTEMPT/`; only when the pipeline succeeds are the final
folder's old files deleted and the new ones renamed in. `run_summary.json` is
written last: a run folder holding it is complete.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Optional

from apache_beam.io.filesystems import FileSystems

# A run id names a folder and is matched in globs: no separators, no wildcards.
RUN_ID_PATTERN = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._=-]{0,127}$')


def check_run_id(run_id: str) -> None:
  """Raises ValueError unless `run_id` is safe as a folder name and in a glob."""
  if not RUN_ID_PATTERN.match(run_id or ''):
    raise ValueError(f'--run_id {run_id!r} must be 1 to 128 letters, digits, ".", "_", "=" or "-", '
                     'starting with a letter or digit')


def _files_under(directory: str) -> list[str]:
  return sorted(m.path for m in FileSystems.match([FileSystems.join(directory, '**')])[0].metadata_list)


def _delete(paths: list[str]) -> None:
  if paths:
    FileSystems.delete(paths)


def _remove_tree(directory: str) -> None:
  """Deletes a folder's files, then the folder where the file system has folders."""
  _delete(_files_under(directory))
  if FileSystems.exists(directory):
    FileSystems.delete([directory])


def _staging_prefix(base: str, run_id: str) -> str:
  return FileSystems.join(base.rstrip('/'), f'.staging-{run_id}-')


class StagedRun:
  """Where one attempt of a run writes, and how it is published or discarded.

  Args:
    bases: the folders that hold the run's folders: the output one, and the
      dead-letter one when it differs.
    run_id: the run id; the final folders are BASE/RUN_ID.
    attempt: names this attempt's staging folders; random by default.
  """

  def __init__(self, bases: list[str], run_id: str, *, attempt: Optional[str] = None):
    check_run_id(run_id)
    self._attempt = attempt or uuid.uuid4().hex[:8]
    self._bases = list(dict.fromkeys(b.rstrip('/') for b in bases))
    self._run_id = run_id

  def final(self, base: str) -> str:
    return FileSystems.join(base.rstrip('/'), self._run_id)

  def staging(self, base: str) -> str:
    return _staging_prefix(base, self._run_id) + self._attempt

  def discard_stale(self) -> None:
    """Deletes staging folders that killed attempts of this run id left behind."""
    for base in self._bases:
      prefix = _staging_prefix(base, self._run_id)
      files = FileSystems.match([prefix + '*/**'])[0].metadata_list
      for folder in sorted({prefix + m.path[len(prefix):].split('/', 1)[0] for m in files}):
        _remove_tree(folder)

  def discard(self) -> None:
    """Deletes this attempt's staged files; the final folders stay as they were."""
    for base in self._bases:
      try:
        _remove_tree(self.staging(base))
      except Exception as e:  # pylint: disable=broad-except  (cleanup must not hide the real error)
        logging.warning('could not delete staged files %s: %s', self.staging(base), e)

  def publish(self, summary_name: str) -> None:
    """Replaces each final folder's files with this attempt's staged files.

    The old summary goes first, so a crash part-way leaves a folder without a
    summary (incomplete), never an old summary over new files.
    """
    for base in self._bases:
      final = self.final(base)
      summary = FileSystems.join(final, summary_name)
      _delete([summary] if FileSystems.exists(summary) else [])
    for base in self._bases:
      final, staging = self.final(base), self.staging(base)
      _delete(_files_under(final))
      new = [p for p in _files_under(staging) if '/beam-temp-' not in p]
      if new:
        if not FileSystems.exists(final):
          FileSystems.mkdirs(final)
        FileSystems.rename(new, [FileSystems.join(final, p[len(staging):].lstrip('/')) for p in new])
      _remove_tree(staging)
