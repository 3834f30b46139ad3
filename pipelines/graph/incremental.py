"""`--only_unscored`: predict only the rows this model version has not scored yet.

A file output keeps a manifest of the keys each run scored: the job writes
`ATTEMPT/scored_keys-*.parquet` (key, and row version with
`--row_version_column`) beside its predictions, and once it has published,
`OUTPUT/_scored/MODEL/VERSION/RUN_ID.json` naming them. The next run's
launcher lists those (never the run's own earlier attempts, which its
publishing replaces) and the job skips matching rows (`transforms.incremental`).
A key is recorded only after its run published, so a run killed in between
re-scores its rows next time rather than losing them.

A BigQuery input with a BigQuery output needs no manifest: the launcher saves
the input's rows that have no prediction from this model version (and row
version) in the output table with one anti-join on the server, reads those,
and counts the rest as skipped.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

from apache_beam.io.filesystems import FileSystems

from pipelines.record import publish

SCORED_FOLDER = '_scored'
KEYS_BASE = 'scored_keys'


@dataclasses.dataclass(frozen=True)
class Incremental:
  """How this run skips rows already scored."""
  version_column: Optional[str]
  key_files: Optional[tuple[str, ...]] = None  # a file output: earlier runs' key files; None: BigQuery did it
  index: Optional[str] = None  # a file output: where this run records its key files once published
  skipped_by_bigquery: int = 0  # a table to table run: rows the anti-join left out


def _safe(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9._=-]', '_', text)


def index_folder(output: str, model_name: str, model_version: str) -> str:
  return FileSystems.join(output.rstrip('/'), SCORED_FOLDER, _safe(model_name), _safe(model_version))


def earlier_key_files(output: str, model_name: str, model_version: str, run_id: str) -> tuple[str, ...]:
  """The key files of every other published run of this model version under `output`."""
  folder = index_folder(output, model_name, model_version)
  indexes = FileSystems.match([FileSystems.join(folder, '*.json')])[0].metadata_list
  files = []
  for index in sorted(m.path for m in indexes):
    entry = publish.read_json(index)
    if entry is None or entry.get('run_id') == run_id:
      continue
    files += [m.path for m in FileSystems.match([entry['keys']])[0].metadata_list]
  return tuple(sorted(files))


def for_files(output: str, model_name: str, model_version: str, run_id: str,
              version_column: Optional[str]) -> Incremental:
  return Incremental(version_column, earlier_key_files(output, model_name, model_version, run_id),
                     FileSystems.join(index_folder(output, model_name, model_version), f'{run_id}.json'))


def record(plan) -> None:
  """After publishing: names this attempt's key files as the run's (a re-run replaces the entry)."""
  inc = plan.incremental
  if inc is None or inc.index is None:
    return
  publish.write_json(inc.index, {'run_id': plan.run_id, 'attempt': plan.attempt,
                                 'keys': FileSystems.join(plan.predictions.folder, f'{KEYS_BASE}-*.parquet')})


def unscored_query(input_table, output_table, *, key_column: str, version_column: Optional[str],
                   input_filter: Optional[str]) -> str:
  """Standard SQL for the input rows with no prediction from @model_name @model_version (in another run)."""
  on = f'CAST(i.`{key_column}` AS STRING) = o.k'
  inner = f'SELECT DISTINCT `{key_column}` AS k'
  if version_column:
    on += f' AND CAST(i.`{version_column}` AS STRING) = o.v'
    inner += f', CAST(`{version_column}` AS STRING) AS v'
  where = f' AND ({input_filter})' if input_filter else ''
  return (f'SELECT i.* FROM {input_table.sql} AS i LEFT JOIN ({inner} FROM {output_table.sql} '
          'WHERE model_name = @model_name AND model_version = @model_version AND run_id != @run_id) AS o '
          f'ON {on} WHERE o.k IS NULL{where}')


def count_query(input_table, input_filter: Optional[str]) -> str:
  return f'SELECT COUNT(*) AS n FROM {input_table.sql}' + (f' WHERE {input_filter}' if input_filter else '')
