"""`--watch`: keep running and predict each new file under `--input` once, as it lands.

Each new file is its own batch run (its own run id, summary and report), so a
file's predictions are complete and final when its run ends, and on Dataflow
nothing runs between files. Processed files are remembered in a manifest under
the output, `OUTPUT/_watch/processed.jsonl`, written after each run, so a
restarted watcher skips them. A file is taken once its size and modification
time have not changed between two looks, so a file still being copied is not
read half-written. (Objects on Cloud Storage appear whole, so there this costs
one interval of latency.)

Exactly once: a run id is derived from the file path, so if the watcher stops
after a run but before the manifest is written, the restarted watcher re-runs
that file under the same run id, which replaces that run's output.

Beam's `fileio.MatchContinuously` watches a prefix too, but inside a streaming
pipeline that keeps workers up between files and has no per-file summary; for
files that land now and then, a run per file is the cheaper and clearer unit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from typing import Callable, Iterable, Optional, Sequence

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import BeamIOError, FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import BatchInferenceOptions
from pipelines.record.summary import RunJob, RunSummary

MANIFEST = '_watch/processed.jsonl'


def manifest_path(output: str) -> str:
  return FileSystems.join(output.rstrip('/'), MANIFEST)


def read_manifest(path: str) -> dict[str, dict]:
  """The files already processed, by path, with their run id and outcome."""
  if not FileSystems.exists(path):
    return {}
  with FileSystems.open(path) as f:
    entries = [json.loads(line) for line in f.read().decode('utf-8').splitlines() if line.strip()]
  return {entry['path']: entry for entry in entries}


def write_manifest(path: str, entries: dict[str, dict]) -> None:
  """Rewrites the manifest whole: Cloud Storage objects cannot be appended to."""
  with FileSystems.create(path, mime_type='application/x-ndjson') as f:
    f.write(''.join(json.dumps(e, sort_keys=True) + '\n' for e in entries.values()).encode('utf-8'))


def run_id_for(path: str, prefix: Optional[str]) -> str:
  """A stable run id per input file: PREFIX-NAME-HASH (HASH tells apart files of one name)."""
  name = re.sub(r'[^A-Za-z0-9_.-]+', '_', path.rstrip('/').rsplit('/', 1)[-1])[:60]
  return f'{prefix or "watch"}-{name}-{hashlib.sha1(path.encode("utf-8")).hexdigest()[:8]}'


def ready_files(matches: Iterable[FileMetadata], done: dict[str, dict],
                last_seen: dict[str, tuple]) -> list[str]:
  """Files not processed yet whose size and modification time held since the last look.

  Updates `last_seen` with this look, so a file is ready on the look after it settles.
  """
  ready = []
  for m in sorted(matches, key=lambda m: m.path):
    if m.path in done:
      continue
    state = (m.size_in_bytes, m.last_updated_in_seconds)
    if last_seen.get(m.path) == state:
      ready.append(m.path)
    last_seen[m.path] = state
  return ready


def _match(pattern: str) -> list[FileMetadata]:
  try:
    return FileSystems.match([pattern])[0].metadata_list
  except BeamIOError:  # a prefix that does not exist yet holds no files
    return []


def watch(argv: Sequence[str], run: RunJob, *, on_run: Callable[[RunSummary], None] = lambda summary: None,
          sleep: Callable[[float], None] = time.sleep) -> list[RunSummary]:
  """Runs the job on each new file matching `--input` until a stop flag says so.

  Args:
    argv: the job's flags, with --watch and its settings.
    run: runs the job on flags and returns its summary (`pipelines.run.run`).
    on_run: called with each run's summary as soon as it ends.
    sleep: waits between looks (tests pass a shorter one).

  Returns:
    The summaries of the runs this watcher made, in order.
  """
  opts = PipelineOptions(list(argv)).view_as(BatchInferenceOptions)
  opts.validate_flags()
  pattern = opts.input + '*' if opts.input.endswith('/') else opts.input  # a prefix: every file in it
  manifest = manifest_path(opts.output)
  done = read_manifest(manifest)
  logging.info('watching %s every %.1fs; %d files already processed (%s)', pattern, opts.watch_interval,
               len(done), manifest)
  started = time.monotonic()
  last_seen: dict[str, tuple] = {}
  summaries: list[RunSummary] = []
  processed = 0  # files this watcher took, failed runs included
  while True:
    for path in ready_files(_match(pattern), done, last_seen):
      run_id = run_id_for(path, opts.run_id)
      logging.info('new file %s: run %s', path, run_id)
      entry = {'path': path, 'run_id': run_id, 'size': last_seen[path][0]}
      try:
        summary = run([*argv, f'--input={path}', f'--run_id={run_id}'])
      except Exception as e:  # a bad file must not stop the watcher; it is recorded, not retried
        logging.error('run %s on %s failed: %s', run_id, path, e)
        entry.update(state='FAILED', error=f'{type(e).__name__}: {e}'[:1000])
      else:
        if summary is None:  # submitted without waiting for it (e.g. --wait_for_job=false): no counts yet
          entry.update(state='SUBMITTED')
        else:
          entry.update(state=summary.state, rows_read=summary.rows_read, rows_predicted=summary.rows_predicted,
                       rows_rejected=summary.rows_rejected, output=summary.output)
          summaries.append(summary)
          on_run(summary)
      entry['processed_at'] = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
      done[path] = entry
      write_manifest(manifest, done)
      processed += 1
      if opts.watch_max_files and processed >= opts.watch_max_files:
        logging.info('watch: --watch_max_files %d reached', opts.watch_max_files)
        return summaries
    if opts.watch_timeout is not None and time.monotonic() - started >= opts.watch_timeout:
      logging.info('watch: --watch_timeout of %.0fs reached', opts.watch_timeout)
      return summaries
    sleep(opts.watch_interval)
