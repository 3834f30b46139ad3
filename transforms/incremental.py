"""Incremental scoring in the job: skip rows whose key (and row version) this model version already scored.

`ReadScoredKeys` reads the key files earlier runs wrote (`pipelines.graph.incremental`)
into one Arrow array, a side input; `SkipScored` splits each batch read with
one vectorised `is_in` against it, before validation, and counts the rows it
skips so the run reconciles read = predicted + rejected + skipped.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms import counters

SKIPPED = 'skipped'
# The key files' columns: the row key as text, and its version as text (null without --row_version_column).
KEY, VERSION = 'key', 'row_version'
KEYS_SCHEMA = pa.schema([pa.field(KEY, pa.string(), nullable=False), pa.field(VERSION, pa.string())])
_SEP = '\x1f'


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
