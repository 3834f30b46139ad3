"""A token classifier's output → each text's entities (outputs.json kind "entities", text.json "aggregation").

A token classifier (BertForTokenClassification and its kin) returns logits
[rows, tokens, labels] over BIO tags: "O" outside any entity, "B-TYPE" at an entity's
first token, "I-TYPE" inside it. Users want the entities, not the tags: "Acme Corp"
as an ORG at characters 10 to 19. Two steps:

- `token_tags`, on the whole call in numpy: softmax over the labels, each token's
  best tag and its probability, and its character span (from the tokenizer's
  offsets, `transforms.text.tokens.OFFSETS`); special tokens and padding get tag -1.
  It is a (rows, tokens × 4) float32 matrix, so it travels the handler's row
  matrix path (row-by-row retry, non-finite check) like any model's answer.
- `aggregate`, per row, the "simple" policy: a B- tag starts an entity, an I- tag of
  the same type continues it, anything else (O, B-, an I- of another type, or an I-
  with no entity open) ends it; a stray I- starts nothing. An entity spans its first
  token's start to its last token's end, its text is that slice of the row's text,
  its score the mean of its tokens' tag probabilities.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

from transforms.text.outputs import softmax

ENTITY = pa.struct([pa.field('text', pa.string()), pa.field('label', pa.string()), pa.field('start', pa.int32()),
                    pa.field('end', pa.int32()), pa.field('score', pa.float32())])
ENTITIES = pa.list_(ENTITY)
# Per token in `token_tags`'s matrix: the tag's index (-1: no tag), its probability, the span's start and end.
FIELDS = 4


def token_tags(logits: np.ndarray, mask: np.ndarray, offsets: Optional[np.ndarray], labels: int) -> np.ndarray:
  """One call's logits [rows, tokens, labels] → (rows, tokens × 4): each token's tag, probability and span.

  A ValueError naming the shape when the model returns anything else. Without offsets (the
  bundle check's sample) every real token has span (0, 0)."""
  logits = np.asarray(logits, np.float32)
  if logits.ndim != 3 or logits.shape[:2] != mask.shape or logits.shape[2] != labels:
    raise ValueError(f'outputs.json\'s entities come from a token classifier\'s logits [rows, tokens, labels] '
                     f'({mask.shape[0]} rows, {mask.shape[1]} tokens, {labels} labels); the model returned '
                     f'{list(logits.shape)}')
  if offsets is None:
    offsets = np.where(mask[:, :, None] > 0, 0, -1)
  probabilities = softmax(logits)
  ignored = offsets[:, :, 0] < 0  # special tokens and padding
  tags = np.where(ignored, -1, probabilities.argmax(axis=-1))
  scores = np.where(ignored, 0.0, probabilities.max(axis=-1))  # a padded position's NaN is no row's failure
  out = np.stack([tags, scores, offsets[:, :, 0], offsets[:, :, 1]], axis=-1).astype(np.float32)
  return out.reshape(len(out), -1)


def aggregate(tags: np.ndarray, labels: Sequence[str], text: str) -> list[dict]:
  """One row's `token_tags` (tokens × 4) → its entities, by the simple policy (module docstring)."""
  tags = tags.reshape(-1, FIELDS)
  entities, current = [], None  # current: [type, start, end, scores]

  def close():
    if current is not None:
      start, end = current[1], current[2]
      entities.append({'text': text[start:end], 'label': current[0], 'start': start, 'end': end,
                       'score': float(np.mean(current[3], dtype=np.float64))})

  for tag, score, start, end in tags[tags[:, 0] >= 0]:
    label = labels[int(tag)]
    kind, name = label[:2], label[2:]
    if kind == 'I-' and current is not None and current[0] == name:
      current[2] = int(end)
      current[3].append(score)
      continue
    close()
    current = [name, int(start), int(end), [score]] if kind == 'B-' else None
  close()
  return entities


def entities_array(tags: np.ndarray, labels: Sequence[str], texts: Sequence[str]) -> pa.ListArray:
  """A call's `token_tags` matrix and each row's text → the rows' entity lists."""
  return pa.array([aggregate(row, labels, text) for row, text in zip(tags, texts)], ENTITIES)
