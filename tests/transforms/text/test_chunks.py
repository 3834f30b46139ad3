"""Documents cut into chunks by tokens: exact boundaries and overlap on a known text, words never cut in two,
pages never crossed, offsets into the document's own characters."""

import pytest

from testing import text as tt
from transforms.text import chunks
from transforms.text.documents import Document, Page
from transforms.text.spec import Chunking, TextSpec, TextSpecError

WORDS = tt.WORDS[:30]


@pytest.fixture(scope='module')
def tokenizer(tmp_path_factory):
  path = tt.train_tokenizer(tt.corpus(300, seed=2), str(tmp_path_factory.mktemp('tok') / 'tokenizer.json'))
  with open(path, encoding='utf-8') as f:
    return chunks.chunking_tokenizer(f.read())


def _starts(text):
  at, out = 0, []
  for word in text.split(' '):
    out.append(at)
    at += len(word) + 1
  return out


def test_chunks__known_text_cut_at_exact_tokens_with_exact_overlap(tokenizer):
  text = ' '.join(WORDS)  # every word one token of the vocabulary
  assert len(tokenizer.encode(text, add_special_tokens=False).ids) == 30
  got = list(chunks.chunks(tokenizer, Document(text, (Page(None, 0, len(text)),)), Chunking(10, 3)))
  starts = _starts(text)
  ends = [s + len(w) for s, w in zip(starts, WORDS)]
  assert [(c.number, c.start, c.end, c.tokens, c.page) for c in got] == [
      (0, starts[0], ends[9], 10, None), (1, starts[7], ends[16], 10, None), (2, starts[14], ends[23], 10, None),
      (3, starts[21], ends[29], 9, None)]
  assert text[got[1].start:got[1].end] == ' '.join(WORDS[7:17])


def test_chunks__no_overlap_chunks_tile_the_text(tokenizer):
  text = ' '.join(WORDS[:25])
  got = list(chunks.chunks(tokenizer, Document(text, (Page(None, 0, len(text)),)), Chunking(10)))
  assert [text[c.start:c.end] for c in got] == [' '.join(WORDS[i:i + 10]) for i in (0, 10, 20)][:2] + [
      ' '.join(WORDS[20:25])]


def test_spans__a_word_of_several_tokens_is_never_cut_unless_longer_than_a_chunk():
  assert chunks.spans([0, 1, 1, 1, 2, 3], Chunking(3)) == [(0, 1), (1, 4), (4, 6)]
  assert chunks.spans([0, 0, 0, 0, 0], Chunking(2)) == [(0, 2), (2, 4), (4, 5)]
  assert chunks.spans([], Chunking(4)) == []


def test_spans__overlap_rounded_back_to_a_word_start_and_always_moves_on():
  assert chunks.spans([0, 1, 1, 2, 3, 4], Chunking(4, 2)) == [(0, 4), (1, 5), (3, 6)]
  assert chunks.spans([0, 0, 0, 1, 1, 1], Chunking(3, 2)) == [(0, 3), (3, 6)]


def test_chunks__never_cross_a_page_numbers_run_through_the_document_offsets_into_its_text(tokenizer):
  first, second = ' '.join(WORDS[:6]), 'Café ' + ' '.join(WORDS[6:10])
  text = first + '\f' + second
  document = Document(text, (Page(1, 0, len(first)), Page(2, len(first) + 1, len(text))))
  got = list(chunks.chunks(tokenizer, document, Chunking(4, 1)))
  assert [(c.number, c.page) for c in got] == [(0, 1), (1, 1), (2, 2), (3, 2)]
  # 'Café' is three tokens (c ##af ##e), offsets still on the accented characters
  assert [text[c.start:c.end] for c in got] == [
      ' '.join(WORDS[:4]), ' '.join(WORDS[3:6]), 'Café ' + WORDS[6], ' '.join(WORDS[6:10])]
  assert [c.tokens for c in got] == [4, 3, 4, 4]


def test_chunking__text_json_chunk_must_fit_max_tokens_with_the_special_tokens():
  spec = TextSpec.from_dict({'max_tokens': 16, 'chunk': {'tokens': 15, 'overlap': 2}})
  with pytest.raises(TextSpecError, match='at most 14'):
    spec.chunking(2)
  assert TextSpec(max_tokens=16).chunking(2) == Chunking(14, 0)
  assert TextSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize('chunk', [{'tokens': 0}, {'tokens': 8, 'overlap': 8}, {'overlap': 2}, {'tokens': 8, 'x': 1}, 5])
def test_chunking__malformed_chunk_refused_naming_it(chunk):
  with pytest.raises(TextSpecError, match='chunk'):
    TextSpec.from_dict({'max_tokens': 16, 'chunk': chunk})
