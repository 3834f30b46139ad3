"""`--only_unscored` for a file output: predict only the rows this model version has not scored yet.

The job writes `ATTEMPT/scored_keys-*.parquet` (key, and row version with
`--row_version_column`) beside its predictions, and once it has published,
`OUTPUT/_scored/MODEL/VERSION/RUN_ID.json` naming them. The next run's
launcher lists those (never the run's own earlier attempts, which its
publishing replaces): `ReadScoredKeys` reads them into one Arrow array, a side
input, and `SkipScored` splits each batch read with one vectorised `is_in`
against it, before validation, counting the rows it skips so the run
reconciles read = predicted + rejected + skipped. A key is recorded only after
its run published, so a run killed in between re-scores its rows next time
rather than losing them.

A BigQuery input with a BigQuery output needs no key files: the launcher saves
the input's unscored rows with one anti-join on the server
(`transforms.bigquery.checks.unscored_query`).
"""


from __future__ import annotations

import dataclasses
import re
from typing import Optional, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.files import publish
from transforms.rows import counters

SKIPPED = 'skipped'
# The key files' columns: the row key as text, and its version as text (null without --row_version_column).
KEY, VERSION = 'key', 'row_version'
KEYS_SCHEMA = pa.schema([pa.field(KEY, pa.string(), nullable=False), pa.field(VERSION, pa.string())])
_SEP = '\x1f'
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



def identities(keys: pa.Array, versions: Optional[pa.Array]) -> pa.Array:
  """What makes a row 'already scored': its key, or its key and version, as one string per row."""
  keys = keys.cast(pa.string())
  if versions is None:
    return keys
  return pc.binary_join_element_wise(keys, pc.fill_null(versions.cast(pa.string()), ''), _SEP)


def scored_keys(predictions: pa.RecordBatch, key_name: str, version_column: Optional[str]) -> pa.RecordBatch:
  """The key file rows of a batch of predictions."""
  versions = (predictions.column(version_column).cast(pa.string()) if version_column
              else pa.nulls(predictions.num_rows, pa.string()))
  return pa.RecordBatch.from_arrays([predictions.column(key_name).cast(pa.string()), versions], schema=KEYS_SCHEMA)


def _read_keys(path: str, with_versions: bool) -> pa.Array:
  with FileSystems.open(path, compression_type='uncompressed') as f:
    table = pq.read_table(f, schema=KEYS_SCHEMA)
  return identities(table.column(KEY).combine_chunks(),
                    table.column(VERSION).combine_chunks() if with_versions else None)


class _UniqueFn(beam.CombineFn):
  """Concatenates identity arrays into one array of distinct values."""

  def create_accumulator(self) -> list[pa.Array]:
    return []

  def add_input(self, acc, array: pa.Array):
    acc.append(array)
    return acc

  def merge_accumulators(self, accumulators):
    return [a for acc in accumulators for a in acc]

  def extract_output(self, acc) -> pa.Array:
    if not acc:
      return pa.array([], pa.string())
    return pc.unique(pa.concat_arrays(acc))


@dataclasses.dataclass
class ReadScoredKeys(beam.PTransform):
  """One Arrow string array: the identities of every row the listed key files hold (empty for none)."""

  files: Sequence[str]
  _: dataclasses.KW_ONLY
  with_versions: bool

  def __post_init__(self):
    super().__init__()

  def expand(self, pbegin):
    return (pbegin
            | 'Files' >> beam.Create(self.files)
            | 'Read' >> beam.Map(_read_keys, with_versions=self.with_versions)
            | 'Unique' >> beam.CombineGlobally(_UniqueFn()))


class _SkipFn(beam.DoFn):

  def __init__(self, key_column: str, version_column: Optional[str]):
    self._key = key_column
    self._version = version_column
    self._skipped = counters.counter('rows_skipped')

  def process(self, batch: pa.RecordBatch, scored: pa.Array):
    if self._key not in batch.schema.names or not len(scored):
      yield batch
      return
    versions = None
    if self._version:
      versions = (batch.column(self._version) if self._version in batch.schema.names
                  else pa.nulls(batch.num_rows, pa.string()))
    seen = pc.fill_null(pc.is_in(identities(batch.column(self._key), versions), value_set=scored), False)
    skipped = int(pc.sum(seen).as_py() or 0)
    if skipped:
      self._skipped.inc(skipped)
      yield beam.pvalue.TaggedOutput(SKIPPED, skipped)
      batch = batch.filter(pc.invert(seen))
    if batch.num_rows:
      yield batch


@dataclasses.dataclass
class SkipScored(beam.PTransform):
  """Splits raw batches into those still to score (main output) and counts of skipped rows (`SKIPPED`).

  Args:
    scored: the side input of `ReadScoredKeys`.
    key_column: the input's key column.
    version_column: the input's row version column, or None to skip by key alone.
  """

  scored: beam.PCollection
  key_column: str
  version_column: Optional[str]

  def __post_init__(self):
    super().__init__()

  def expand(self, batches):
    return batches | 'Skip' >> beam.ParDo(
        _SkipFn(self.key_column, self.version_column), scored=beam.pvalue.AsSingleton(self.scored)).with_outputs(
            SKIPPED, main='unscored')
