"""A document file's bytes → its text, page by page: plain text and Markdown as UTF-8, HTML's visible text, a
PDF's text layer.

A document is one text (what chunk offsets point into) and its pages: a PDF's pages,
numbered from 1, joined by a form feed (`PAGE_BREAK`, as pdftotext separates them);
any other document is one page without a number. What cannot be read raises
`DocumentError` with a dead letter's reason code:

- `invalid_text`: plain text, Markdown or HTML that is not UTF-8 (a byte-order mark is
  allowed; other encodings are not guessed);
- `encrypted_document`: a PDF that needs a password (one that opens with the empty
  password, locked only against editing, is read);
- `corrupt_document`: a PDF that pypdf cannot parse;
- `no_text`: a PDF without a text layer (scanned pages): OCR is not built;
- `empty_document`: a file with no text at all, or only whitespace;
- `unsupported_document`: a file whose extension names no format read here.

Markdown is kept as written: its marks (`#`, `*`) are few and a tokenizer takes them as
punctuation. HTML's `script`, `style`, `template` and `head` (its `title` excepted) are
not shown, so not kept; block elements end a line.
"""

from __future__ import annotations

import dataclasses
import html.parser
import io
import re
from typing import Optional

from transforms.rows.dead_letters import (CORRUPT_DOCUMENT, EMPTY_DOCUMENT, ENCRYPTED_DOCUMENT, INVALID_TEXT, NO_TEXT,
                                          UNSUPPORTED_DOCUMENT)
from transforms.images.listing import extension_of

# Each extension read, by the format that reads it.
FORMATS = {'.txt': 'text', '.text': 'text', '.md': 'markdown', '.markdown': 'markdown', '.html': 'html',
           '.htm': 'html', '.pdf': 'pdf'}
EXTENSIONS = frozenset(FORMATS)
PAGE_BREAK = '\f'
# Elements whose text a browser does not show.
_HIDDEN = frozenset({'script', 'style', 'template', 'head', 'noscript'})
# Elements that start and end a line.
_BLOCKS = frozenset({'p', 'div', 'br', 'li', 'ul', 'ol', 'tr', 'table', 'section', 'article', 'header', 'footer',
                     'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'pre', 'blockquote', 'title', 'hr', 'dt', 'dd', 'nav',
                     'main', 'aside', 'figure', 'figcaption', 'td', 'th'})


class DocumentError(ValueError):
  """A document that cannot become text; `code` is its dead letter's reason code."""

  def __init__(self, code: str, reason: str):
    super().__init__(reason)
    self.code = code


@dataclasses.dataclass(frozen=True)
class Page:
  """A page's place in its document's text: `text[start:end]`; `number` from 1 (PDF), else None."""
  number: Optional[int]
  start: int
  end: int


@dataclasses.dataclass(frozen=True)
class Document:
  """A document's text and its pages."""
  text: str
  pages: tuple[Page, ...]


def format_of(uri: str) -> Optional[str]:
  """The format a file's extension names, or None."""
  return FORMATS.get(extension_of(uri))


def extract(uri: str, data: bytes) -> Document:
  """The text of the document `data` (the file `uri`, whose extension says its format); DocumentError
  when it has none to give."""
  kind = format_of(uri)
  if kind is None:
    raise DocumentError(UNSUPPORTED_DOCUMENT, f'{uri}: the extension {extension_of(uri) or "(none)"} names no '
                        f'document format read here ({", ".join(sorted(EXTENSIONS))})')
  if kind == 'pdf':
    return _pages(uri, _pdf_pages(uri, data))
  text = _utf8(uri, data)
  if kind == 'html':
    text = visible_text(text)
  return _pages(uri, [(None, text)])


def _utf8(uri: str, data: bytes) -> str:
  try:
    return data.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    raise DocumentError(INVALID_TEXT, f'{uri}: not UTF-8 (byte {e.start:,} is {data[e.start:e.start + 1]!r}); '
                        'save it as UTF-8') from None


def _pages(uri: str, pages: list[tuple[Optional[int], str]]) -> Document:
  """One text of the pages, joined by PAGE_BREAK; DocumentError when none holds any."""
  if not any(text.strip() for _, text in pages):
    if pages and pages[0][0] is not None:
      raise DocumentError(NO_TEXT, f'{uri}: none of its {len(pages)} pages has a text layer (a scan?); OCR is not '
                          'built: run it first and give the job the text')
    raise DocumentError(EMPTY_DOCUMENT, f'{uri}: the document holds no text, or only whitespace')
  parts, placed, at = [], [], 0
  for number, text in pages:
    text = text.replace(PAGE_BREAK, '\n')
    if parts:
      parts.append(PAGE_BREAK)
      at += 1
    parts.append(text)
    placed.append(Page(number, at, at + len(text)))
    at += len(text)
  return Document(''.join(parts), tuple(placed))


def _pdf_pages(uri: str, data: bytes) -> list[tuple[int, str]]:
  import pypdf  # the `text` extra; only document files need it
  try:
    reader = pypdf.PdfReader(io.BytesIO(data))
    if reader.is_encrypted and not reader.decrypt(''):
      raise DocumentError(ENCRYPTED_DOCUMENT, f'{uri}: the PDF is encrypted with a password; give the job a copy '
                          'without one')
    return [(number, page.extract_text() or '') for number, page in enumerate(reader.pages, 1)]
  except DocumentError:
    raise
  except pypdf.errors.FileNotDecryptedError:
    raise DocumentError(ENCRYPTED_DOCUMENT, f'{uri}: the PDF is encrypted with a password; give the job a copy '
                        'without one') from None
  except Exception as e:  # pylint: disable=broad-except  # a damaged PDF raises anything from deep in the parser
    raise DocumentError(CORRUPT_DOCUMENT, f'{uri}: not a readable PDF: {type(e).__name__}: {str(e)[:200]}') from None


class _VisibleText(html.parser.HTMLParser):
  """Collects the text a browser shows."""

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.parts: list[str] = []
    self._hidden: list[str] = []

  def handle_starttag(self, tag, attrs):
    if tag in _HIDDEN:
      self._hidden.append(tag)
    if tag in _BLOCKS:
      self.parts.append('\n')

  def handle_startendtag(self, tag, attrs):
    if tag in _BLOCKS:
      self.parts.append('\n')

  def handle_endtag(self, tag):
    if tag in _HIDDEN and tag in self._hidden:
      while self._hidden and self._hidden.pop() != tag:
        pass
    if tag in _BLOCKS:
      self.parts.append('\n')

  def handle_data(self, data):
    if not self._hidden or self._hidden == ['head'] and self.lasttag == 'title':
      self.parts.append(data)


def visible_text(markup: str) -> str:
  """HTML's visible text: hidden elements dropped, a line per block, spaces collapsed."""
  parser = _VisibleText()
  parser.feed(markup)
  parser.close()
  lines = (re.sub(r'[ \t\r\u00a0]+', ' ', line).strip() for line in ''.join(parser.parts).split('\n'))
  return re.sub(r'\n{3,}', '\n\n', '\n'.join(lines)).strip()
