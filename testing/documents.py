"""Document files for tests, made here: PDFs with a text layer drawn in Helvetica (pypdf writes the page
objects; the content stream is written by hand, as pypdf draws no text), PDFs without one, encrypted and
damaged PDFs, and HTML with hidden parts."""

from __future__ import annotations

import io
from typing import Optional, Sequence


def _escape(line: str) -> bytes:
  return line.replace('\\', '\\\\').replace('(', '\\(').replace(')', '\\)').encode('latin-1')


def pdf(pages: Sequence[Optional[str]], *, password: Optional[str] = None) -> bytes:
  """A PDF of one page per item: its lines drawn as text, or, for None, a page with only a drawn box (a
  scan's page has an image and no text layer: no text either way). `password` encrypts it."""
  from pypdf import PdfWriter
  from pypdf.generic import DictionaryObject, NameObject, StreamObject
  writer = PdfWriter()
  font = writer._add_object(DictionaryObject({  # pylint: disable=protected-access
      NameObject('/Type'): NameObject('/Font'), NameObject('/Subtype'): NameObject('/Type1'),
      NameObject('/BaseFont'): NameObject('/Helvetica'), NameObject('/Encoding'): NameObject('/WinAnsiEncoding')}))
  for text in pages:
    page = writer.add_blank_page(612, 792)
    page[NameObject('/Resources')] = DictionaryObject({
        NameObject('/Font'): DictionaryObject({NameObject('/F1'): font})})
    if text is None:
      content = b'0.5 g 72 72 468 648 re f'
    else:
      lines = b' '.join(b'(' + _escape(line) + b") '" for line in text.split('\n'))
      content = b'BT /F1 11 Tf 14 TL 72 740 Td ' + lines + b' ET'
    stream = StreamObject()
    stream.set_data(content)
    page[NameObject('/Contents')] = writer._add_object(stream)  # pylint: disable=protected-access
  if password is not None:
    writer.encrypt(user_password=password, owner_password=password + '-owner', algorithm='RC4-128')
  out = io.BytesIO()
  writer.write(out)
  return out.getvalue()


def corrupt_pdf() -> bytes:
  """The header of a PDF and then noise: no cross-reference table, no objects, no end."""
  return b'%PDF-1.7\n' + bytes(range(256)) * 4


HTML = '''<!doctype html>
<html><head><title>Loan report</title><style>body { color: red }</style>
<script>var secret = "never shown";</script></head>
<body><h1>Rates</h1><p>The bank raised the loan rate &amp; the river rose.</p>
<ul><li>first item</li><li>second item</li></ul><template>not shown either</template></body></html>
'''
