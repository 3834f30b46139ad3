"""`ReadDocuments` through a TestPipeline: a folder's documents → chunk rows in batches, bad ones dead letters
keyed by their URI, and the documents and chunks counted, each document's chunks reconciled."""

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from testing import documents as td
from testing import text as tt
from transforms.rows.counters import NAMESPACE
from transforms.rows.dead_letters import DEAD_LETTERS, ROW, SOURCE
from transforms.text import chunks, documents
from transforms.text.document_files import FILES, SCHEMA, ReadDocuments
from transforms.text.spec import TextSpec


def test_read_documents__chunk_rows_batched_dead_letters_keyed_by_uri_documents_and_chunks_counted(tmp_path):
  tokenizer_path = tt.train_tokenizer(tt.corpus(300, seed=2), str(tmp_path / 'tokenizer.json'))
  spec = TextSpec(max_tokens=16, chunk={'tokens': 8, 'overlap': 2}, max_document_bytes=2000)
  folder = tmp_path / 'docs'
  folder.mkdir()
  good = {'a.txt': ' '.join(tt.corpus(40, seed=3)[:10]).encode(), 'b.pdf': td.pdf(['the cat sat on the mat'] * 3)}
  bad = {'c.txt': b'\xff\xfe', 'd.md': b'the dog ' * 300}
  for name, data in {**good, **bad}.items():
    (folder / name).write_bytes(data)
  with open(tokenizer_path, encoding='utf-8') as f:
    tokenizer = chunks.chunking_tokenizer(f.read())
  made = {str(folder / n): len(list(chunks.chunks(tokenizer, documents.extract(n, d), spec.chunk)))
          for n, d in good.items()}
  assert made[str(folder / 'b.pdf')] == 3  # a chunk per page: six words never reach 8 tokens across pages

  def check_rows(batches):
    assert all(b.num_rows <= 5 and b.schema.names == SCHEMA.names + [SOURCE, ROW] for b in batches)
    rows = pa.Table.from_batches(batches).to_pylist()
    per_document = {}
    for r in rows:
      per_document[r['document']] = per_document.get(r['document'], 0) + 1
      assert r['key'] == f'{r["document"]}#{r["chunk"]}' and r[SOURCE] == r['document']
    assert per_document == made

  def check_letters(letters):
    rows = pa.Table.from_batches(letters).to_pylist()
    assert sorted((r['key'], r['reason_code']) for r in rows) == [
        (str(folder / 'c.txt'), 'invalid_text'), (str(folder / 'd.md'), 'document_too_large')]

  pipeline = TestPipeline()
  out = pipeline | ReadDocuments(f'{folder}/*', spec, tokenizer_path, batch_rows=5)
  assert_that(out['batches'], check_rows, label='Rows')
  assert_that(out[DEAD_LETTERS], check_letters, label='Letters')
  assert_that(out[FILES] | beam.combiners.Count.Globally(), equal_to([4]), label='Files')
  result = pipeline.run()
  result.wait_until_finish()
  counts = {c.key.metric.name: c.committed
            for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))['counters']}
  assert (counts['documents_read'], counts['documents_rejected']) == (2, 2)
  assert counts['chunks_made'] == sum(made.values()) and counts['rows_read'] == sum(made.values()) + 2
  assert counts['rejected_invalid_text'] == counts['rejected_document_too_large'] == 1
