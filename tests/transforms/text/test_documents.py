"""Document files → text: each format read as a person reads it, and every document that gives no text
refused with the reason a dead letter carries."""

import pytest

from testing import documents as td
from transforms.text import documents
from transforms.text.document_files import is_document_glob


def test_extract__pdf_text_layer_page_by_page_numbers_kept_pages_joined_by_form_feed():
  document = documents.extract('gs://b/f.pdf', td.pdf(['first page (one)\nline two', None, 'third page']))
  assert [p.number for p in document.pages] == [1, 2, 3]
  assert [document.text[p.start:p.end] for p in document.pages] == ['first page (one)\nline two', '', 'third page']
  assert document.text == 'first page (one)\nline two\f\fthird page'


def test_extract__pdf_locked_only_against_editing_is_read_one_with_a_password_refused():
  assert documents.extract('a.pdf', td.pdf(['open me'], password='')).text == 'open me'
  with pytest.raises(documents.DocumentError) as e:
    documents.extract('a.pdf', td.pdf(['secret'], password='pw'))
  assert e.value.code == 'encrypted_document' and 'password' in str(e.value)


@pytest.mark.parametrize('name, data, code', [
    ('a.pdf', td.corrupt_pdf(), 'corrupt_document'),
    ('a.pdf', b'', 'corrupt_document'),
    ('a.pdf', td.pdf([None, None]), 'no_text'),
    ('a.txt', 'café'.encode('latin-1'), 'invalid_text'),
    ('a.html', b'<p>\xff</p>', 'invalid_text'),
    ('a.md', b'  \n\t ', 'empty_document'),
    ('a.txt', b'', 'empty_document'),
    ('a.html', b'<script>var x = 1;</script>', 'empty_document'),
    ('a.docx', b'PK', 'unsupported_document'),
    ('README', b'text', 'unsupported_document'),
])
def test_extract__documents_without_text_refused_with_their_reason_code(name, data, code):
  with pytest.raises(documents.DocumentError) as e:
    documents.extract(name, data)
  assert e.value.code == code and name in str(e.value)


def test_extract__no_text_says_ocr_is_not_built():
  with pytest.raises(documents.DocumentError, match='OCR is not built'):
    documents.extract('scan.pdf', td.pdf([None]))


def test_extract__html_visible_text_only_blocks_on_their_own_lines():
  text = documents.extract('p.htm', td.HTML.encode()).text
  assert text == 'Loan report\n\nRates\n\nThe bank raised the loan rate & the river rose.\n\nfirst item\n\nsecond item'
  assert 'secret' not in text and 'color' not in text and 'not shown' not in text


def test_extract__markdown_and_text_as_utf8_byte_order_mark_dropped_one_unnumbered_page():
  document = documents.extract('n.md', '\ufeff# Title\n\ncafé *au* lait\n'.encode('utf-8'))
  assert document.text == '# Title\n\ncafé *au* lait\n'
  assert document.pages == (documents.Page(None, 0, len(document.text)),)


def test_is_document_glob__by_extension_else_a_table():
  assert all(is_document_glob(p) for p in ('gs://b/d/*.pdf', '/x/**.md', 'a.txt', 'gs://b/*.HTML', 'x/*.htm'))
  assert not any(is_document_glob(p) for p in ('gs://b/d/*', 'x/*.parquet', 'x/*.jsonl', 'gs://b/d/'))
