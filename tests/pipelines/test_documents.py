"""Document files end to end: a folder of mixed documents (text, Markdown, HTML, PDF, and the bad ones) through
a tiny BERT encoder, one embedding per chunk keyed back to its document, chunk, page and characters."""

import os

import numpy as np
import pyarrow.dataset as pads
import pytest
from apache_beam.io.filesystems import FileSystems

from models.bundle import Outputs
from pipelines import run as run_job
from testing import documents as td
from testing import text as tt
from transforms.text import chunks, documents
from transforms.text.spec import TextSpec

MAX_TOKENS = 32


def _write(folder, name, data):
  path = os.path.join(folder, name)
  with open(path, 'wb') as f:
    f.write(data if isinstance(data, bytes) else data.encode('utf-8'))
  return path


def test_documents__every_chunk_embedded_keyed_by_document_chunk_page_bad_documents_dead_letters(
    tmp_path, read_dead_letters):
  texts = tt.corpus(200, seed=4)
  spec = TextSpec(max_tokens=MAX_TOKENS, pooling='mean', chunk={'tokens': 20, 'overlap': 4}, max_document_bytes=6000,
                  tokens_per_batch=256, sort_window=16)
  bundle, model = tt.text_bundle(str(tmp_path / 'bundle'), spec, Outputs('embedding', dimension=32), texts)
  folder = tmp_path / 'docs'
  folder.mkdir()
  good = {
      'notes.txt': ' '.join(texts[:12]),
      'readme.md': '# Loan report\n\nThe bank raised the **rate**.\n\n' + ' '.join(texts[12:20]),
      'page.html': td.HTML,
      'filing.pdf': td.pdf([' '.join(texts[20:26]), None, 'the river bank\n' + ' '.join(texts[26:30])]),
  }
  bad = {
      'locked.pdf': (td.pdf(['the cat sat'], password='secret'), 'encrypted_document'),
      'broken.pdf': (td.corrupt_pdf(), 'corrupt_document'),
      'scan.pdf': (td.pdf([None, None]), 'no_text'),
      'latin1.txt': ('café au lait'.encode('latin-1'), 'invalid_text'),
      'huge.txt': ('the cat sat on the mat ' * 400, 'document_too_large'),
      'blank.md': (' \n\t\n', 'empty_document'),
      'slides.pptx': (b'PK\x03\x04', 'unsupported_document'),
  }
  paths = {name: _write(folder, name, data) for name, data in good.items()}
  bad_paths = {_write(folder, name, data): code for name, (data, code) in bad.items()}

  result = run_job.run([f'--input={folder}/*', '--input_format=documents', f'--model={bundle.path}',
                        f'--output={tmp_path}/out', '--max_rejected_fraction=0.5'])

  tokenizer = chunks.chunking_tokenizer(open(bundle.tokenizer_path, encoding='utf-8').read())
  expected = {}
  for name, path in paths.items():
    with open(path, 'rb') as f:
      document = documents.extract(path, f.read())
    expected[path] = (document, list(chunks.chunks(tokenizer, document, spec.chunk)))
  made = sum(len(c) for _, c in expected.values())
  assert (result.rows_read, result.rows_predicted, result.rows_rejected) == (made + len(bad), made, len(bad))
  assert result.files_read == len(good) + len(bad)
  rows = pads.dataset(result.output, format='parquet').to_table().to_pylist()
  letters = read_dead_letters(result.dead_letter)
  assert {d['key']: d['reason_code'] for d in letters} == bad_paths
  assert all(d['stage'] == 'read' and d['source'] == d['key'] for d in letters)
  for path, (document, made_here) in expected.items():  # each document's chunks: every one written, as cut
    written = sorted((r for r in rows if r['document'] == path), key=lambda r: r['chunk'])
    assert len(written) == len(made_here) > 0
    assert [(r['key'], r['chunk'], r['page'], r['start'], r['end']) for r in written] == [
        (f'{path}#{c.number}', c.number, c.page, c.start, c.end) for c in made_here]
    got = np.array([r['embedding'] for r in written], np.float32)
    want = tt.reference(model, bundle.tokenizer_path, [document.text[r['start']:r['end']] for r in written],
                        MAX_TOKENS, pooling='mean')
    assert np.abs(got - want).max() < 1e-4
  pdf_pages = {r['page'] for r in rows if r['document'] == paths['filing.pdf']}
  assert pdf_pages == {1, 3}  # page 2 has no text layer: no chunk, and the page numbers stay the file's
  assert {r['page'] for r in rows if r['document'] != paths['filing.pdf']} == {None}
  with open(paths['notes.txt'], encoding='utf-8') as f:  # offsets point into the file's own characters
    notes = f.read()
  notes_rows = sorted((r for r in rows if r['document'] == paths['notes.txt']), key=lambda r: r['chunk'])
  assert notes_rows[0]['start'] == 0 and notes_rows[-1]['end'] == len(notes.rstrip())
  assert all(notes[r['start']:r['end']].split()[0] in notes[notes_rows[i]['start']:notes_rows[i]['end']]
             for i, r in enumerate(notes_rows[1:]))  # each chunk starts inside the one before: they overlap


@pytest.mark.slow
def test_documents_on_cloud_storage__listed_read_and_chunked_from_a_gs_glob(tmp_path, gcs_prefix):
  texts = tt.corpus(60, seed=5)
  spec = TextSpec(max_tokens=MAX_TOKENS, pooling='mean', chunk={'tokens': 20, 'overlap': 4})
  bundle, _ = tt.text_bundle(str(tmp_path / 'bundle'), spec, Outputs('embedding', dimension=32), texts)
  names = {'a.txt': ' '.join(texts[:10]), 'b.md': ' '.join(texts[10:14]), 'c.pdf': td.pdf([' '.join(texts[14:18])])}
  for name, data in names.items():
    with FileSystems.create(f'{gcs_prefix}/docs/{name}') as f:
      f.write(data if isinstance(data, bytes) else data.encode('utf-8'))
  result = run_job.run([f'--input={gcs_prefix}/docs/*', '--input_format=documents', f'--model={bundle.path}',
                        f'--output={tmp_path}/out'])
  table = pads.dataset(result.output, format='parquet').to_table(columns=['document', 'chunk'])
  assert result.rows_rejected == 0 and result.rows_read == result.rows_predicted == table.num_rows
  assert set(table.column('document').to_pylist()) == {f'{gcs_prefix}/docs/{n}' for n in names}


def test_table_only_flags__refused_for_document_files_in_one_clean_line(tmp_path, capsys):
  texts = tt.corpus(40, seed=6)
  bundle, _ = tt.text_bundle(str(tmp_path / 'bundle'), TextSpec(max_tokens=MAX_TOKENS, pooling='mean'),
                             Outputs('embedding', dimension=32), texts)
  _write(str(tmp_path), 'a.txt', ' '.join(texts[:5]))
  code = run_job.main([f'--input={tmp_path}/*.txt', f'--model={bundle.path}', f'--output={tmp_path}/out',
                       '--text_column=body', '--image_column=scan'])
  err = capsys.readouterr().err
  assert code != 0
  assert "--text_column body names a column of a table; document files give each chunk's text" in err
  assert '--image_column scan names the column of a table holding images' in err and 'takes no images' in err
