"""Top-K rankings: the K best items per row, and their row-per-rank layout."""

import numpy as np
import pyarrow as pa
import pytest

from transforms.rows import ranking


@pytest.mark.parametrize('k', [1, 3, 7, 12])
def test_top_k__equals_a_full_sort(k):
  scores = np.random.default_rng(k).random((50, 7)).astype(np.float32)
  best = ranking.top_k(scores, k)
  assert best.shape == (50, min(k, 7))
  np.testing.assert_array_equal(best, np.argsort(-scores, axis=1, kind='stable')[:, :min(k, 7)])


def test_ranking_arrays__items_and_scores_best_first():
  scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.9]], np.float32)
  items, values = ranking.ranking_arrays(scores, ['a', 'b', 'c'], 2)
  assert items.to_pylist() == [['b', 'c'], ['c', 'a']]
  np.testing.assert_allclose(values.to_pylist(), [[0.7, 0.2], [0.9, 0.5]], rtol=1e-6)


def test_rank_rows__one_row_per_key_and_rank_other_columns_repeated():
  batch = pa.RecordBatch.from_pydict({
      'user_id': ['u1', 'u2', 'u3'],
      ranking.ITEMS: pa.array([['x', 'y'], ['z'], []], pa.list_(pa.string())),
      ranking.SCORES: pa.array([[0.9, 0.1], [0.5], []], pa.list_(pa.float32())),
      'run_id': ['r', 'r', 'r']})
  rows = ranking.rank_rows(batch)
  assert rows.schema.names == ['user_id', 'rank', 'item_id', 'score', 'run_id']
  assert rows.to_pydict() == {'user_id': ['u1', 'u1', 'u2'], 'rank': [1, 2, 1], 'item_id': ['x', 'y', 'z'],
                              'score': pytest.approx([0.9, 0.1, 0.5]), 'run_id': ['r', 'r', 'r']}


def test_bigquery_schema__ranking_lists_are_repeated_columns():
  from transforms.bigquery.tables import table_schema
  schema = pa.schema([pa.field('user_id', pa.string(), nullable=False),
                      pa.field(ranking.ITEMS, pa.list_(pa.string())), pa.field(ranking.SCORES, pa.list_(pa.float32()))])
  assert table_schema(schema)['fields'] == [
      {'name': 'user_id', 'type': 'STRING', 'mode': 'REQUIRED'},
      {'name': ranking.ITEMS, 'type': 'STRING', 'mode': 'REPEATED'},
      {'name': ranking.SCORES, 'type': 'FLOAT64', 'mode': 'REPEATED'}]
