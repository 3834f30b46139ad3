"""Duplicate keys, found before anything is written: counted, shown by example, and rejected, kept one
per key by a stated order, or the run failed (`--on_duplicate_key`).

Two rows with one key are two answers for one key: files would hold both, and a keyed table would
keep whichever its publish met first. So the job counts every key of the whole input before a row
goes on, and decides once, from all of them.

It stays columnar at any scale: each batch's keys are split into `SHARDS` by a hash of their bytes
(numpy; no Python object per row), each bundle sends on one table of key rows per shard, a
`GroupByKey` brings a shard's tables together, and pyarrow's hash count (`value_counts`, or a
group-by with an order) finds the keys on more than one row: a shard holds 1/SHARDS of the distinct
keys on one worker. Only those keys leave it, as a side input of the step that splits each batch
with `is_in`. For a ranking the keys are the input's keys, counted before the model ranks anything.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Optional

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue
import pyarrow as pa
import pyarrow.compute as pc

from transforms.rows import coders as _coders  # noqa: F401  (registers the RecordBatch coder)
from transforms.rows import dead_letters as dl

# Shards of the key count: each combines a 1/SHARDS share of the distinct keys on one worker.
SHARDS = 32
# Bytes from each end of a key that pick its shard.
_ENDS = 8
# The columns of a key count: the key's text, its rows, and with an order the extreme order value
# (`latest`: the highest for keep_last_by, the lowest for keep_first_by) and the rows that hold it.
KEY, ROWS, LATEST, AT_LATEST = 'key', 'rows', 'latest', 'at_latest'
# How many repeated keys the summary and the messages show.
EXAMPLES = 5
ACTIONS = ('reject', 'fail', 'keep_last_by', 'keep_first_by')


class DuplicateKeysError(RuntimeError):
  """The input holds a key more than once and `--on_duplicate_key=fail`; nothing was written."""


@dataclasses.dataclass(frozen=True)
class DuplicatePolicy:
  """What a run does with the rows of a key the input holds more than once (`--on_duplicate_key`)."""
  action: str = 'reject'  # reject every row | fail the run | keep_last_by / keep_first_by `column`
  column: Optional[str] = None  # the order that picks the row kept

  @classmethod
  def parse(cls, text: str) -> 'DuplicatePolicy':
    """`reject`, `fail`, `keep_last_by:COLUMN` or `keep_first_by:COLUMN`; ValueError otherwise."""
    action, _, column = (text or '').strip().partition(':')
    if action in ('reject', 'fail') and not column:
      return cls(action)
    if action in ('keep_last_by', 'keep_first_by') and column.strip():
      return cls(action, column.strip())
    raise ValueError(f'--on_duplicate_key {text!r} is not reject, fail, keep_last_by:COLUMN or keep_first_by:COLUMN')

  @property
  def keeps_one(self) -> bool:
    return self.column is not None

  @property
  def highest(self) -> bool:
    return self.action == 'keep_last_by'

  def __str__(self) -> str:
    return f'{self.action}:{self.column}' if self.column else self.action


def _mix(x: np.ndarray) -> np.ndarray:
  """splitmix64's finaliser: every bit of the input reaches every bit of the output (uint64, wrapping)."""
  x = x ^ (x >> np.uint64(30))
  x = x * np.uint64(0xBF58476D1CE4E5B9)
  x = x ^ (x >> np.uint64(27))
  x = x * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def shard_of(keys: pa.Array, shards: int = SHARDS) -> np.ndarray:
  """A shard for each key text, the same on every worker: a hash of its length and its first and last
  `_ENDS` bytes, gathered with numpy (no Python object per row; keys that differ only in the middle of
  long texts share a shard, which only weighs on balance)."""
  keys = keys.cast(pa.string())
  n = len(keys)
  offsets = np.frombuffer(keys.buffers()[1], dtype=np.int32)[keys.offset:keys.offset + n + 1].astype(np.int64)
  data = keys.buffers()[2]
  data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
  starts, ends = offsets[:-1], offsets[1:]
  hashed = _mix((ends - starts).astype(np.uint64))
  for i in range(_ENDS):
    for at, inside in ((starts + i, starts + i < ends), (ends - 1 - i, ends - 1 - i >= starts)):
      byte = np.where(inside, data[np.clip(at, 0, max(len(data) - 1, 0))] if len(data) else 0, 0)
      hashed = _mix(hashed ^ (byte.astype(np.uint64) + np.uint64(i * 512 + 256)))
  return (hashed % np.uint64(shards)).astype(np.int64)


def key_rows(batch: pa.RecordBatch, policy: DuplicatePolicy) -> pa.RecordBatch:
  """A batch's keys as rows of a key count, one each (a row counts 1), with their order value where the
  policy has one."""
  if not policy.keeps_one:
    return pa.RecordBatch.from_arrays([batch.column(dl.KEY)], names=[KEY])
  return pa.RecordBatch.from_arrays([batch.column(dl.KEY), _order(batch, policy)], names=[KEY, LATEST])


def _order(batch: pa.RecordBatch, policy: DuplicatePolicy) -> pa.Array:
  if policy.column not in batch.schema.names:
    raise ValueError(f'--on_duplicate_key={policy}: the input has no column {policy.column!r} to order rows by')
  column = batch.column(policy.column)
  return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column


def by_shard(batch: pa.RecordBatch, policy: DuplicatePolicy, shards: int = SHARDS) -> Iterable[tuple[int, pa.RecordBatch]]:
  """(shard, that shard's key rows) for each shard the batch's keys fall in: one sort, then slices."""
  rows = key_rows(batch, policy)
  shard = shard_of(rows.column(KEY), shards)
  order = np.argsort(shard, kind='stable')
  rows = rows.take(pa.array(order))
  counts = np.bincount(shard, minlength=shards)
  start = 0
  for s in np.flatnonzero(counts):
    yield int(s), rows.slice(start, int(counts[s]))
    start += int(counts[s])


def _counted(part: pa.Table) -> pa.Table:
  """Key rows as a key count (each row 1), or a key count as it is."""
  if ROWS in part.column_names:
    return part
  ones = pa.array(np.ones(part.num_rows, np.int64))
  columns = {KEY: part[KEY], ROWS: ones}
  if LATEST in part.column_names:
    columns.update({LATEST: part[LATEST], AT_LATEST: ones})
  return pa.table(columns)


def compact(parts: list[pa.Table], policy: DuplicatePolicy) -> pa.Table:
  """Key rows and key counts added up: one row per distinct key, with its rows (and order) in all of them."""
  if not policy.keeps_one and all(ROWS not in p.column_names for p in parts):
    # Only key rows: one hash pass counts them (pyarrow's value_counts, without a group-by's set-up).
    counts = pc.value_counts(pa.chunked_array([p[KEY] for p in parts], pa.string()))
    return pa.table({KEY: counts.field('values'), ROWS: counts.field('counts')})
  table = pa.concat_tables([_counted(p) for p in parts])
  if not policy.keeps_one:
    summed = table.group_by(KEY).aggregate([(ROWS, 'sum')])
    return pa.table({KEY: summed[KEY], ROWS: summed[f'{ROWS}_sum']})
  # Rows per (key, order value); then, per key, the extreme value (nulls last: a row with no value is
  # never the one kept while another has one), the rows holding it, and the key's rows.
  per_value = table.group_by([KEY, LATEST]).aggregate([(ROWS, 'sum'), (AT_LATEST, 'sum')])
  per_value = per_value.sort_by([(KEY, 'ascending', 'at_end'),
                                 (LATEST, 'descending' if policy.highest else 'ascending', 'at_end')])
  per_key = per_value.group_by(KEY, use_threads=False).aggregate(
      [(f'{ROWS}_sum', 'sum'), (LATEST, 'first'), (f'{AT_LATEST}_sum', 'first')])
  return pa.table({KEY: per_key[KEY], ROWS: per_key[f'{ROWS}_sum_sum'], LATEST: per_key[f'{LATEST}_first'],
                   AT_LATEST: per_key[f'{AT_LATEST}_sum_first']})


def _gather(tables: list[Optional[pa.Table]]) -> Optional[pa.Table]:
  """Every shard's repeated keys in one table, or None when no key repeats."""
  found = [t for t in tables if t is not None and t.num_rows]
  return pa.concat_tables(found).combine_chunks() if found else None


def describe(duplicates: Optional[pa.Table], policy: DuplicatePolicy) -> dict[str, Any]:
  """What the run summary says of repeated keys: how many, on how many rows, the most repeated as examples."""
  if duplicates is None:
    return {'keys': 0, 'rows': 0, 'examples': {}, 'on_duplicate_key': str(policy)}
  top = duplicates.sort_by([(ROWS, 'descending'), (KEY, 'ascending')]).slice(0, EXAMPLES)
  return {'keys': duplicates.num_rows, 'rows': pc.sum(duplicates[ROWS]).as_py(),
          'examples': dict(zip(top[KEY].to_pylist(), top[ROWS].to_pylist())), 'on_duplicate_key': str(policy)}


def examples_text(found: dict[str, Any]) -> str:
  """`'a' ×3, 'b' ×2`: the examples of `describe`."""
  return ', '.join(f'{key!r} ×{rows}' for key, rows in found['examples'].items())


def fail_message(found: dict[str, Any]) -> str:
  several = found['keys'] != 1
  return (f'{found["keys"]:,} {"keys appear" if several else "key appears"} more than once in the input '
          f'({found["rows"]:,} rows), e.g. '
          f'{examples_text(found)}; --on_duplicate_key=fail stops the run before anything is written. '
          'Fix the input, or pass --on_duplicate_key=reject (every row of a repeated key becomes a dead letter) '
          'or --on_duplicate_key=keep_last_by:COLUMN (the row with the highest COLUMN is kept)')


def split_batch(batch: pa.RecordBatch, duplicates: pa.Table,
                policy: DuplicatePolicy) -> tuple[pa.RecordBatch, Optional[pa.RecordBatch]]:
  """A batch without the rows the policy drops, and their dead letters (None when it drops none)."""
  where = pc.index_in(batch.column(dl.KEY), value_set=duplicates[KEY])
  repeated = where.is_valid().to_numpy(zero_copy_only=False)
  if not repeated.any():
    return batch, None
  rows = duplicates[ROWS].take(where).to_numpy(zero_copy_only=False)
  if policy.keeps_one:
    latest = duplicates[LATEST].take(where)
    order = _order(batch, policy)
    same = pc.fill_null(pc.equal(order, latest), False)
    both_null = pc.and_(order.is_null(), latest.is_null())
    is_latest = pc.or_(same, both_null).to_numpy(zero_copy_only=False)
    tied = duplicates[AT_LATEST].take(where).to_numpy(zero_copy_only=False) > 1
    dropped = repeated & ~(is_latest & ~tied)
  else:
    tied, dropped = repeated, repeated
  keys = batch.column(dl.KEY)
  codes, reasons = [], []
  for i in np.flatnonzero(dropped):
    key, n = keys[i].as_py(), int(rows[i])
    if not policy.keeps_one:
      codes.append(dl.DUPLICATE_KEY)
      reasons.append(f'key {key!r} is on {n} rows of the input; every row of a repeated key is rejected '
                     '(--on_duplicate_key=reject)')
    elif tied[i]:
      codes.append(dl.DUPLICATE_KEY)
      reasons.append(f'key {key!r} is on {n} rows of the input and several share its '
                     f'{"highest" if policy.highest else "lowest"} {policy.column}, so none can be kept; every row '
                     'of the key is rejected')
    else:
      codes.append(dl.SUPERSEDED)
      reasons.append(f'key {key!r} is on {n} rows of the input; the one with the '
                     f'{"highest" if policy.highest else "lowest"} {policy.column} was kept '
                     f'(--on_duplicate_key={policy})')
  letters = dl.from_batch(batch, dropped, stage='deduplicate', codes=codes, reasons=reasons)
  return batch.filter(pa.array(~dropped)), letters


class _KeysByShardFn(beam.DoFn):
  """A bundle's key rows, gathered per shard and sent on once the bundle ends: one element per shard a
  bundle touched, not one per batch, so the shuffle carries a few large tables."""

  def __init__(self, policy: DuplicatePolicy, shards: int):
    self._policy = policy
    self._shards = shards
    self._parts: dict[int, list[pa.RecordBatch]] = {}

  def start_bundle(self):
    self._parts = {}

  def process(self, batch: pa.RecordBatch):
    for shard, rows in by_shard(batch, self._policy, self._shards):
      self._parts.setdefault(shard, []).append(rows)

  def finish_bundle(self):
    for shard, parts in self._parts.items():
      yield WindowedValue((shard, pa.concat_batches(parts)), MIN_TIMESTAMP, [GlobalWindow()])
    self._parts = {}


def repeated_keys(shard_parts: tuple[int, Iterable[pa.RecordBatch]], policy: DuplicatePolicy) -> Optional[pa.Table]:
  """One shard's key rows from every bundle → its keys on more than one row (a key count), or None."""
  parts = [pa.Table.from_batches([b]) for b in shard_parts[1]]
  if not parts:
    return None
  counted = compact(parts, policy)
  return counted.filter(pc.greater(counted[ROWS], 1))


class _SplitFn(beam.DoFn):

  def __init__(self, policy: DuplicatePolicy):
    self._policy = policy

  def process(self, batch: pa.RecordBatch, duplicates: Optional[pa.Table], found: dict[str, Any]):
    if duplicates is None:
      yield batch
      return
    if self._policy.action == 'fail':
      raise DuplicateKeysError(fail_message(found))
    kept, letters = split_batch(batch, duplicates, self._policy)
    if kept.num_rows:
      yield kept
    if letters is not None:
      dl.count_rejections(letters)
      yield beam.pvalue.TaggedOutput(dl.DEAD_LETTERS, letters)


@dataclasses.dataclass(eq=False)
class HandleDuplicateKeys(beam.PTransform):
  """Validated batches (with their `KEY`) → `{'batches': the rows that go on, DEAD_LETTERS: the rows the
  policy dropped, 'found': one dict (`describe`)}`.

  Every key is counted before any batch goes on: the split takes the repeated keys as a side input,
  so with `fail` it raises before a row reaches the writes.
  """
  policy: DuplicatePolicy = DuplicatePolicy()
  shards: int = SHARDS

  def __post_init__(self):
    super().__init__()

  def expand(self, batches: beam.PCollection) -> dict[str, beam.PCollection]:
    policy = self.policy
    duplicates = (batches
                  | 'KeysByShard' >> beam.ParDo(_KeysByShardFn(policy, self.shards)).with_output_types(
                      tuple[int, pa.RecordBatch])  # Arrow IPC through the shuffle (transforms.rows.coders)
                  | 'GroupShards' >> beam.GroupByKey()
                  | 'RepeatedKeys' >> beam.Map(repeated_keys, policy)
                  | 'AllShards' >> beam.combiners.ToList()
                  | 'Gather' >> beam.Map(_gather))
    found = duplicates | 'Describe' >> beam.Map(describe, policy)
    split = batches | 'Split' >> beam.ParDo(
        _SplitFn(policy), duplicates=beam.pvalue.AsSingleton(duplicates),
        found=beam.pvalue.AsSingleton(found)).with_output_types(pa.RecordBatch).with_outputs(
            dl.DEAD_LETTERS, main='batches')  # typed, so Beam encodes and sizes batches by the Arrow coder
    return {'batches': split['batches'], dl.DEAD_LETTERS: split[dl.DEAD_LETTERS], 'found': found}
