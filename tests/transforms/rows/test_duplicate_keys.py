"""Repeated keys: the shard hash, the columnar key count, the split, and the composite through a pipeline."""

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.rows import dead_letters as dl
from transforms.rows import duplicate_keys as dk


def _batch(keys, updated=None) -> pa.RecordBatch:
  columns = {dl.KEY: pa.array(keys, pa.string()), 'x': pa.array(np.arange(len(keys), dtype=np.float64))}
  if updated is not None:
    columns['updated_at'] = pa.array(updated, pa.int64())
  return pa.RecordBatch.from_pydict(columns)


def test_shard_of__is_the_same_for_a_key_wherever_it_sits_and_spreads_keys_evenly():
  keys = pa.array(['a', '', 'user-00000001', 'é', 'a' * 40, 'user-00000001'])
  shards = dk.shard_of(keys, 8)
  assert shards[2] == shards[5] and list(dk.shard_of(keys.slice(2), 8)) == list(shards[2:])
  counts = np.bincount(dk.shard_of(pa.array([f'{i}' for i in range(100_000)]), 32), minlength=32)
  assert counts.min() > 0.9 * 100_000 / 32


def test_compact__adds_counts_up_and_keeps_the_highest_order_and_how_many_rows_hold_it():
  policy = dk.DuplicatePolicy('keep_last_by', 'updated_at')
  parts = [pa.Table.from_batches([dk.key_rows(_batch(['a', 'b', 'a'], [1, 5, 3]), policy)]),
           pa.Table.from_batches([dk.key_rows(_batch(['a', 'b', 'c'], [3, None, 2]), policy)])]
  counted = dk.compact(parts, policy).sort_by('key').to_pylist()
  assert counted == [{'key': 'a', 'rows': 3, 'latest': 3, 'at_latest': 2},  # a tie at the highest
                     {'key': 'b', 'rows': 2, 'latest': 5, 'at_latest': 1},  # no value never wins
                     {'key': 'c', 'rows': 1, 'latest': 2, 'at_latest': 1}]


def test_policy__parses_the_flag_and_refuses_what_it_does_not_know():
  assert dk.DuplicatePolicy.parse('keep_first_by: ts ') == dk.DuplicatePolicy('keep_first_by', 'ts')
  assert str(dk.DuplicatePolicy.parse('reject')) == 'reject'
  for bad in ('keep', 'keep_last_by:', 'fail:x', ''):
    with pytest.raises(ValueError, match='is not reject, fail'):
      dk.DuplicatePolicy.parse(bad)


def _run(batches, policy):
  with TestPipeline() as p:
    out = p | beam.Create(batches) | dk.HandleDuplicateKeys(policy, shards=4)
    kept = out['batches'] | 'KeptKeys' >> beam.FlatMap(lambda b: b.column(dl.KEY).to_pylist())
    letters = out[dl.DEAD_LETTERS] | 'Letters' >> beam.FlatMap(
        lambda b: list(zip(b.column('key').to_pylist(), b.column('reason_code').to_pylist())))
    yield kept, letters, out['found']


def test_handle_duplicate_keys__rejects_every_row_of_a_key_repeated_across_batches():
  batches = [_batch(['a', 'b', 'c']), _batch(['d', 'a']), _batch(['a', 'e', 'e'])]
  for kept, letters, found in _run(batches, dk.DuplicatePolicy()):
    assert_that(kept, equal_to(['b', 'c', 'd']), label='Kept')
    assert_that(letters, equal_to([('a', 'duplicate_key')] * 3 + [('e', 'duplicate_key')] * 2), label='Rejected')
    assert_that(found, equal_to([{'keys': 2, 'rows': 5, 'examples': {'a': 3, 'e': 2},
                                  'on_duplicate_key': 'reject'}]), label='Found')


def test_handle_duplicate_keys__keeps_the_latest_row_and_supersedes_the_others():
  batches = [_batch(['a', 'b'], [1, 7]), _batch(['a', 'c'], [9, 1]), _batch(['a'], [4])]
  for kept, letters, _ in _run(batches, dk.DuplicatePolicy('keep_last_by', 'updated_at')):
    assert_that(kept, equal_to(['a', 'b', 'c']), label='Kept')
    assert_that(letters, equal_to([('a', 'superseded')] * 2), label='Superseded')


def test_handle_duplicate_keys__with_no_repeat_passes_batches_as_they_are():
  for kept, letters, found in _run([_batch(['a', 'b']), _batch(['c'])], dk.DuplicatePolicy('fail')):
    assert_that(kept, equal_to(['a', 'b', 'c']), label='Kept')
    assert_that(letters, equal_to([]), label='None')
    assert_that(found, equal_to([{'keys': 0, 'rows': 0, 'examples': {}, 'on_duplicate_key': 'fail'}]), label='Found')


def test_handle_duplicate_keys__fail_raises_naming_the_keys():
  with pytest.raises(Exception, match=r"1 key appears more than once in the input \(2 rows\), e.g. 'a' ×2"):
    for _ in _run([_batch(['a', 'b']), _batch(['a'])], dk.DuplicatePolicy('fail')):
      pass
