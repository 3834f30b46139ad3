"""The vector store and its search: a job's Parquet predictions into the store, lookups against numpy's exact
nearest neighbours, readers keeping their version while the next is published, and a text through a real
text bundle end to end."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.bundle import Outputs
from models.inference import embedding_array
from pipelines import run as run_job
from pipelines.search import query, store
from testing import text as tt
from transforms.text.spec import TextSpec

DIMENSION = 24


def _vectors(n: int, seed: int) -> np.ndarray:
  x = np.random.default_rng(seed).standard_normal((n, DIMENSION)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _published(folder, vectors: np.ndarray, files: int = 2) -> str:
  """Predictions as the job publishes them: a run's folder of predictions-*.parquet, and a file that is not one."""
  out = folder / 'run-1' / 'attempt-1'
  out.mkdir(parents=True)
  keys = [f'doc-{i // 4}.pdf#{i % 4}' for i in range(len(vectors))]
  for f, rows in enumerate(np.array_split(np.arange(len(vectors)), files)):
    pq.write_table(pa.table({'key': [keys[i] for i in rows], 'chunk': pa.array(rows % 4, pa.int32()),
                             'embedding': embedding_array(vectors[rows]), 'model_name': ['bert'] * len(rows)}),
                   out / f'predictions-{f:05d}-of-{files:05d}.parquet')
  pq.write_table(pa.table({'key': ['x'], 'reason': ['not a prediction']}), out / 'dead_letters.parquet')
  return str(folder)


def _exact(vectors: np.ndarray, q: np.ndarray, k: int) -> list[int]:
  return np.argsort(-(vectors @ q / np.linalg.norm(q)), kind='stable')[:k].tolist()


def test_from_predictions__lookups_return_numpys_exact_nearest_with_their_cosine_distances(tmp_path, capsys):
  vectors = _vectors(400, seed=1)
  uri = str(tmp_path / 'store')
  assert query.main([f'--store={uri}', f'--from_predictions={_published(tmp_path / "out", vectors)}']) == 0
  assert 'version 1 published, 400 rows, no index' in capsys.readouterr().err

  for q in _vectors(5, seed=2) * 3:  # not unit length: cosine ranks them all the same
    capsys.readouterr()
    assert query.main([f'--store={uri}', f'--vector={json.dumps(q.tolist())}', '-k', '10']) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = _exact(vectors, q, 10)
    assert [r['key'] for r in rows] == [f'doc-{i // 4}.pdf#{i % 4}' for i in expected]
    assert [r['chunk'] for r in rows] == [i % 4 for i in expected]
    cosine = vectors[expected] @ q / np.linalg.norm(q)
    assert np.allclose([r['distance'] for r in rows], 1 - cosine, atol=1e-5)
    assert set(rows[0]) == {'key', 'chunk', 'distance'}


def test_indexed_store__finds_the_exact_nearest_of_most_queries(tmp_path):
  vectors = _vectors(600, seed=3)
  dataset = store.write_store(pa.table({'id': np.arange(600), 'embedding': embedding_array(vectors)}),
                              str(tmp_path / 'store'), index_min_rows=500)
  assert [(i.index_type, i.num_rows_indexed) for i in dataset.describe_indices()] == [('IVF_PQ', 600)]
  queries = _vectors(20, seed=4)
  found = [store.nearest(store.open_store(str(tmp_path / 'store')), q, 10).column('id').to_pylist() for q in queries]
  recall = np.mean([len(set(f) & set(_exact(vectors, q, 10))) / 10 for f, q in zip(found, queries)])
  assert recall >= 0.9  # PQ codes pick 100 candidates, re-ranked by their full vectors


def test_a_reader_keeps_its_version_while_the_next_is_published(tmp_path):
  uri = str(tmp_path / 'store')
  first, second = _vectors(50, seed=5), _vectors(80, seed=6)
  store.write_store(pa.table({'night': [1] * 50, 'embedding': embedding_array(first)}), uri)
  reader = store.open_store(uri)
  store.write_store(pa.table({'night': [2] * 80, 'embedding': embedding_array(second)}), uri)

  assert set(store.nearest(reader, first[0], 50).column('night').to_pylist()) == {1}
  assert reader.count_rows() == 50
  assert set(store.nearest(store.open_store(uri), first[0], 80).column('night').to_pylist()) == {2}


def test_nights_before_last_are_cleaned_up_last_nights_stays_for_its_readers(tmp_path):
  uri = str(tmp_path / 'store')
  readers = []
  for night in range(1, 5):
    store.write_store(pa.table({'night': [night] * 300, 'embedding': embedding_array(_vectors(300, night))}), uri,
                      index_min_rows=300)  # two versions a night: rows, then index
    readers.append(store.open_store(uri))
  assert [v['version'] for v in readers[-1].versions()] == [5, 6, 7, 8]
  assert set(store.nearest(readers[-2], _vectors(1, 9)[0], 300).column('night').to_pylist()) == {3}


def test_bad_input__errors_name_what_is_wrong(tmp_path, capsys):
  with pytest.raises(store.StoreError, match="no 'embedding' column .*kind \"embedding\""):
    store.as_vectors(pa.table({'key': ['a'], 'score': [0.5]}))
  ragged = pa.table({'embedding': pa.array([[1.0, 0.0], [1.0, 0.0, 0.0]], pa.list_(pa.float32()))})
  with pytest.raises(store.StoreError, match=r'lengths \[2, 3\]'):
    store.as_vectors(ragged)
  with pytest.raises(store.StoreError, match='1 rows have a null embedding'):
    store.as_vectors(pa.table({'embedding': pa.array([[1.0], None], pa.list_(pa.float32()))}))
  (tmp_path / 'empty').mkdir()
  assert query.main([f'--store={tmp_path}/s', f'--from_predictions={tmp_path}/empty']) == 2
  assert 'holds no predictions-*.parquet files' in capsys.readouterr().err
  assert query.main([f'--store={tmp_path}/none', '--vector=[1, 0]']) == 2
  assert 'no published vector store there' in capsys.readouterr().err
  store.write_store(pa.table({'embedding': embedding_array(_vectors(3, seed=7))}), str(tmp_path / 's'))
  assert query.main([f'--store={tmp_path}/s', '--vector=[1, 0]']) == 2
  assert f'the query has 2 dimensions, the store at {tmp_path}/s holds {DIMENSION}' in capsys.readouterr().err


def test_text_query__through_the_bundle_the_job_ran_finds_the_same_texts_chunks_first(tmp_path, capsys):
  texts = list(dict.fromkeys(tt.corpus(80, seed=21)))
  spec = TextSpec(max_tokens=32, pooling='mean')
  bundle, _ = tt.text_bundle(str(tmp_path / 'bundle'), spec, Outputs('embedding', dimension=32), texts)
  pq.write_table(pa.table({'id': [f't{i}' for i in range(len(texts))], 'text': texts}), tmp_path / 'in.parquet')
  result = run_job.run([f'--input={tmp_path}/in.parquet', f'--model={bundle.path}', f'--output={tmp_path}/out',
                        '--key_column=id'])
  uri = str(tmp_path / 'store')
  assert query.main([f'--store={uri}', f'--from_predictions={result.output}']) == 0

  for i in (0, 7, 33):
    capsys.readouterr()
    assert query.main([f'--store={uri}', f'--model={bundle.path}', f'--text={texts[i]}', '-k', '3']) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and rows[0]['id'] == f't{i}' and rows[0]['distance'] < 1e-5
