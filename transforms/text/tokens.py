"""Texts → token tensors, a window at a time: encode, sort by length, cut model calls by tokens, pad each.

A batch padded to `max_tokens` spends most of a model call on padding when texts are
short and mixed (a review of 12 tokens beside one of 400). Sorted by length within a
window, neighbours have about the same length; each model call is padded only to its
own longest, and holds as many rows as fit `tokens_per_batch` padded tokens. The rows
come out reordered: each call carries its own rows, so nothing needs putting back.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from transforms.text.spec import OFFSETS, TextSpec

# Pad tokens tried, in order, when the tokenizer file sets no padding of its own (BERT's, then RoBERTa's).
PAD_TOKENS = ('[PAD]', '<pad>')
# A token classifier's call also carries each token's character span in its text, [rows, tokens, 2], under
# OFFSETS (no model's): the predictor takes it out before the model call (`models.handlers.TextPredictor`).
# A special token's span, and padding's, is (-1, -1): no character of the text.


def load_tokenizer(data: str, spec: TextSpec):
  """The `tokenizers.Tokenizer` of a tokenizer.json's text, cutting as `spec.truncation` says and padding
  nothing (the job pads each model call itself). ValueError when the file is not a tokenizer."""
  from tokenizers import Tokenizer  # the `text` extra; only a text model's workers need it
  try:
    tokenizer = Tokenizer.from_str(data)
  except Exception as e:  # pylint: disable=broad-except  # tokenizers raises its own Exception for any bad file
    raise ValueError(f'not a Hugging Face tokenizers file: {str(e)[:300]}') from None
  tokenizer.no_padding()
  tokenizer.enable_truncation(max_length=spec.max_tokens, direction='right' if spec.truncation == 'end' else 'left')
  return tokenizer


def pad_id(tokenizer) -> int:
  """The id that fills a call's shorter rows: the tokenizer file's own padding id, [PAD] or <pad>, else 0
  (masked out by the attention mask, so a model that honours it never sees it)."""
  padding = tokenizer.padding
  if padding:
    return int(padding['pad_id'])
  return next((tokenizer.token_to_id(t) for t in PAD_TOKENS if tokenizer.token_to_id(t) is not None), 0)


@dataclasses.dataclass(frozen=True)
class Encoded:
  """A window's texts as token ids, unpadded: `ids`, `types` (token type ids) per text, and which were cut."""
  ids: list[list[int]]
  types: list[list[int]]
  truncated: np.ndarray  # bool, one per text
  offsets: Optional[list[np.ndarray]] = None  # [tokens, 2] character spans per text, (-1, -1) for special ones

  @property
  def lengths(self) -> np.ndarray:
    return np.fromiter((len(i) for i in self.ids), np.int64, len(self.ids))


def encode(tokenizer, texts: Sequence[str], *, offsets: bool = False) -> Encoded:
  """Tokenises the texts in one `encode_batch` call (the Rust side spreads it over threads, outside the GIL);
  with `offsets`, keeps each token's character span in its text, for a token classifier's entities."""
  encodings = tokenizer.encode_batch(list(texts))
  spans = [_spans(e) for e in encodings] if offsets else None
  return Encoded([e.ids for e in encodings], [e.type_ids for e in encodings],
                 np.fromiter((bool(e.overflowing) for e in encodings), bool, len(encodings)), spans)


def _spans(encoding) -> np.ndarray:
  """An encoding's [tokens, 2] character spans, (-1, -1) for its special tokens ([CLS], [SEP])."""
  spans = np.asarray(encoding.offsets, np.int64).reshape(-1, 2)
  spans[np.asarray(encoding.special_tokens_mask, bool)] = -1
  return spans


def model_calls(lengths: np.ndarray, tokens_per_batch: int, max_rows: int) -> list[np.ndarray]:
  """Indices of the texts in each model call: sorted by length, cut so that rows × the call's longest stays
  within `tokens_per_batch` (and rows within `max_rows`). A text is never longer than tokens_per_batch
  (TextSpec holds tokens_per_batch ≥ max_tokens), so every call holds at least one."""
  order = np.argsort(lengths, kind='stable')
  calls, start = [], 0
  for end in range(1, len(order) + 1):
    longest = int(lengths[order[end - 1]])
    if end - start > 1 and ((end - start) * longest > tokens_per_batch or end - start > max_rows):
      calls.append(order[start:end - 1])
      start = end - 1
  if start < len(order):
    calls.append(order[start:])
  return calls


def pad(encoded: Encoded, rows: np.ndarray, spec: TextSpec, pad_token: int) -> dict[str, np.ndarray]:
  """One model call's tensors, by the model's names, padded to the call's longest text."""
  longest = max(len(encoded.ids[i]) for i in rows)
  dtype = np.dtype(spec.dtype)
  ids = np.full((len(rows), longest), pad_token, dtype)
  mask = np.zeros((len(rows), longest), dtype)
  types = np.zeros((len(rows), longest), dtype) if spec.name('token_type_ids') else None
  for r, i in enumerate(rows):
    n = len(encoded.ids[i])
    ids[r, :n] = encoded.ids[i]
    mask[r, :n] = 1
    if types is not None:
      types[r, :n] = encoded.types[i]
  tensors = {spec.name('input_ids'): ids, spec.name('attention_mask'): mask}
  if types is not None:
    tensors[spec.name('token_type_ids')] = types
  if encoded.offsets is not None:
    spans = np.full((len(rows), longest, 2), -1, np.int64)
    for r, i in enumerate(rows):
      spans[r, :len(encoded.offsets[i])] = encoded.offsets[i]
    tensors[OFFSETS] = spans
  return tensors
