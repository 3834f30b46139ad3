"""A document's text → chunks of at most `chunk.tokens` tokens of the bundle's tokenizer, each sharing about
`chunk.overlap` tokens with the one before, as character offsets into the text.

Tokens are counted by the same tokenizer the model's step uses, without special tokens
(`TextSpec.chunking` leaves room for them), and their offsets map each chunk back to
the characters it holds. Policy:

- a chunk never crosses a page: each page of a PDF is cut on its own, so every chunk
  has one page number;
- a chunk ends, and the next starts, at a word's first token (the tokenizer's words),
  so no word is cut in two and a chunk's text tokenises again to the tokens counted;
  only a single word longer than a chunk is cut inside;
- the overlap is rounded back to a word's start, so it may be a few tokens longer; a
  chunk's end never passes `chunk.tokens`.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence

from transforms.text.documents import Document
from transforms.text.spec import Chunking, TextSpec


@dataclasses.dataclass(frozen=True)
class Chunk:
  """One chunk: `text[start:end]` of its document, on page `page` (None outside a PDF), `tokens` long."""
  number: int
  page: Optional[int]
  start: int
  end: int
  tokens: int


def chunking_tokenizer(data: str):
  """A tokenizer of a tokenizer.json's text that cuts nothing and adds no padding: it counts a whole page."""
  from tokenizers import Tokenizer  # the `text` extra
  tokenizer = Tokenizer.from_str(data)
  tokenizer.no_padding()
  tokenizer.no_truncation()
  return tokenizer


def spans(words: Sequence[Optional[int]], chunking: Chunking) -> list[tuple[int, int]]:
  """Token ranges [start, end) of the chunks of a text whose tokens belong to `words` (the tokenizer's word of
  each token, None for none): see the module docstring."""
  n = len(words)

  def word_start(i: int) -> int:  # the first token of the word holding token i
    while 0 < i < n and words[i] is not None and words[i - 1] == words[i]:
      i -= 1
    return i

  found: list[tuple[int, int]] = []
  start = 0
  while start < n:
    end = min(start + chunking.tokens, n)
    if end < n and word_start(end) > start:  # end inside a word: stop before it
      end = word_start(end)
    found.append((start, end))
    if end == n:
      break
    following = word_start(max(end - chunking.overlap, start + 1))
    start = following if following > start else end
  return found


def chunks(tokenizer, document: Document, chunking: Chunking) -> Iterator[Chunk]:
  """The chunks of a document, numbered from 0 through its pages; `tokenizer` from `chunking_tokenizer`."""
  pages = [p for p in document.pages if document.text[p.start:p.end].strip()]
  encodings = tokenizer.encode_batch([document.text[p.start:p.end] for p in pages], add_special_tokens=False)
  number = 0
  for page, encoding in zip(pages, encodings):
    offsets = encoding.offsets
    for first, last in spans(encoding.word_ids, chunking):
      yield Chunk(number, page.number, page.start + offsets[first][0], page.start + offsets[last - 1][1],
                  last - first)
      number += 1


def special_tokens(tokenizer) -> int:
  """The special tokens the tokenizer adds to one text ([CLS] and [SEP] for BERT)."""
  return tokenizer.num_special_tokens_to_add(False)


def chunking_of(spec: TextSpec, tokenizer) -> Chunking:
  return spec.chunking(special_tokens(tokenizer))
