"""How a bundle's texts become its model's tensors, and its outputs an answer: `text.json`, the text
counterpart of images.json.

    {"tokenizer": "tokenizer.json", "max_tokens": 128, "truncation": "end",
     "tensors": {"input_ids": "input_ids", "attention_mask": "attention_mask"}, "dtype": "int64",
     "tokens_per_batch": 16384, "sort_window": 1024, "max_bytes": 1000000,
     "softmax": true}

Each text is tokenised by the bundle's Hugging Face `tokenizers` file (special tokens
added as the file says). A text of more than `max_tokens` tokens is cut, not rejected,
and counted (`text_truncated`): `"end"` keeps its first `max_tokens` tokens (the usual
choice: a title and opening say most), `"start"` its last ones. A text over `max_bytes`
of UTF-8 is a dead letter (`text_too_long`) before the tokenizer spends time on it, and
an empty or whitespace-only one too (`empty_text`).

Model calls are cut by tokens, not rows: within `sort_window` rows, texts are sorted by
length and cut into calls whose padded size (rows × the call's longest) stays within
`tokens_per_batch`, each padded to its own longest, so short texts are not padded to
the longest of the batch, let alone to `max_tokens`.

`tensors` maps each tensor the tokenizer fills (`input_ids`, `attention_mask`, and
optionally `token_type_ids`) to the model's name for it; each is `dtype` (int64 or
int32) of shape [null, null] in inputs.json.

What the model returns becomes the answer outputs.json describes:
- `"softmax": true`: a sequence classifier's logits [rows, classes] → probabilities;
- `"pooling": "mean"` or `"cls"`: an encoder's last_hidden_state [rows, tokens, dim] →
  one vector per text (the mean over its real tokens, by the attention mask, or its
  first token's), L2-normalised unless `"normalize": false`: the embedding;
- outputs.json kind `"entities"`: a token classifier's logits [rows, tokens, labels] →
  each text's entities, by `"aggregation": "simple"` (the default, and the only policy
  so far; `transforms.text.entities`). Neither softmax nor pooling: the tags' softmax is
  part of it.

Document files (`transforms.text.documents`) are cut into chunks of `"chunk": {"tokens":
256, "overlap": 32}` tokens (special tokens not counted; tokens + the tokenizer's special
tokens fit max_tokens, checked when the bundle loads); without it, a chunk is as long as
max_tokens allows and chunks do not overlap. A document over `max_document_bytes` is a
dead letter (`document_too_large`), unread.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

TEXT = 'text.json'
TOKENIZER = 'tokenizer.json'
ROLES = ('input_ids', 'attention_mask', 'token_type_ids')
TRUNCATIONS = ('end', 'start')
DTYPES = ('int64', 'int32')
POOLINGS = ('mean', 'cls')
AGGREGATIONS = ('simple',)
# The name a token classifier's call carries its tokens' character spans under (`transforms.text.tokens`),
# taken out before the model call: no model tensor may have it.
OFFSETS = '__offsets__'
# A text's bytes past which it is refused unread: a megabyte is a short book, far past any model's
# context, and a bound on what one row may cost the tokenizer.
MAX_BYTES = 1_000_000
# Padded tokens per model call: 128 texts of 128 tokens, a BERT-base call that fills a GPU without
# holding gigabytes of activations.
TOKENS_PER_BATCH = 16384
# Rows sorted together by length before they are cut into model calls: enough that lengths cluster,
# few enough that a window's texts and tensors stay small.
SORT_WINDOW = 1024
# A document file's bytes past which it is refused unread: 20 MB holds a long report's PDF with its figures;
# past it the file is more likely a scan or a dump than a document to embed.
MAX_DOCUMENT_BYTES = 20_000_000
EXAMPLE = ('{"tokenizer": "tokenizer.json", "max_tokens": 128, "tensors": {"input_ids": "input_ids", '
           '"attention_mask": "attention_mask"}, "softmax": true}')


class TextSpecError(ValueError):
  """text.json is malformed, or disagrees with the tensors it fills or the outputs it makes."""


@dataclasses.dataclass(frozen=True)
class Chunking:
  """How a document is cut: chunks of `tokens` tokens, each sharing `overlap` tokens with the one before."""
  tokens: int
  overlap: int = 0

  def __post_init__(self):
    if not isinstance(self.tokens, int) or self.tokens < 1:
      raise TextSpecError(f'{TEXT}: chunk.tokens is a chunk\'s length in tokens, a positive integer; got {self.tokens!r}')
    if not isinstance(self.overlap, int) or not 0 <= self.overlap < self.tokens:
      raise TextSpecError(f'{TEXT}: chunk.overlap is the tokens a chunk shares with the one before, 0 or more and '
                          f'fewer than chunk.tokens ({self.tokens}); got {self.overlap!r}')


@dataclasses.dataclass(frozen=True)
class TextSpec:
  """A bundle's tokenisation and output post-processing (module docstring)."""
  max_tokens: int
  tokenizer: str = TOKENIZER
  truncation: str = 'end'
  tensors: tuple[tuple[str, str], ...] = (('input_ids', 'input_ids'), ('attention_mask', 'attention_mask'))
  dtype: str = 'int64'
  tokens_per_batch: int = TOKENS_PER_BATCH
  sort_window: int = SORT_WINDOW
  max_bytes: int = MAX_BYTES
  softmax: bool = False
  pooling: Optional[str] = None
  normalize: bool = True
  aggregation: Optional[str] = None  # a token classifier's: how its tags become entities ('simple' when None)
  chunk: Optional[Chunking] = None  # document files: see the module docstring
  max_document_bytes: int = MAX_DOCUMENT_BYTES

  def __post_init__(self):
    tensors = self.tensors.items() if isinstance(self.tensors, dict) else self.tensors
    object.__setattr__(self, 'tensors', tuple((str(r), str(n)) for r, n in tensors))
    if isinstance(self.chunk, dict):
      unknown = sorted(set(self.chunk) - {'tokens', 'overlap'})
      if unknown or 'tokens' not in self.chunk:
        raise TextSpecError(f'{TEXT}: chunk is {{"tokens": N, "overlap": M}}; got {self.chunk!r}')
      object.__setattr__(self, 'chunk', Chunking(**self.chunk))
    elif self.chunk is not None and not isinstance(self.chunk, Chunking):
      raise TextSpecError(f'{TEXT}: chunk is {{"tokens": N, "overlap": M}}; got {self.chunk!r}')
    roles = [r for r, _ in self.tensors]
    if not isinstance(self.max_tokens, int) or self.max_tokens < 2:
      raise TextSpecError(f'{TEXT}: max_tokens is the model\'s length in tokens, an integer of at least 2; '
                          f'got {self.max_tokens!r}')
    if self.truncation not in TRUNCATIONS:
      raise TextSpecError(f'{TEXT}: truncation is "end" (keep the first max_tokens tokens) or "start" (keep the '
                          f'last); got {self.truncation!r}')
    unknown = [r for r in roles if r not in ROLES]
    if unknown or 'input_ids' not in roles or 'attention_mask' not in roles or len(set(roles)) != len(roles):
      raise TextSpecError(f'{TEXT}: tensors maps input_ids, attention_mask and optionally token_type_ids to the '
                          f'model\'s names for them; got {dict(self.tensors)}')
    names = [n for _, n in self.tensors]
    if len(set(names)) != len(names) or OFFSETS in names:
      raise TextSpecError(f'{TEXT}: each tensor has its own name, not {OFFSETS} (the job\'s own); got '
                          f'{dict(self.tensors)}')
    if self.dtype not in DTYPES:
      raise TextSpecError(f'{TEXT}: dtype is one of {", ".join(DTYPES)}, got {self.dtype!r}')
    if not isinstance(self.tokens_per_batch, int) or self.tokens_per_batch < self.max_tokens:
      raise TextSpecError(f'{TEXT}: tokens_per_batch caps a model call\'s padded tokens and holds at least one '
                          f'text of max_tokens ({self.max_tokens}); got {self.tokens_per_batch!r}')
    for name in ('sort_window', 'max_bytes', 'max_document_bytes'):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise TextSpecError(f'{TEXT}: {name} is a positive integer, got {value!r}')
    if self.pooling is not None and self.pooling not in POOLINGS:
      raise TextSpecError(f'{TEXT}: pooling is "mean" (over the attention mask) or "cls" (the first token), or '
                          f'absent for a model that returns one row per text; got {self.pooling!r}')
    if self.aggregation is not None and self.aggregation not in AGGREGATIONS:
      raise TextSpecError(f'{TEXT}: aggregation is how a token classifier\'s tags become entities: "simple" (a B- '
                          f'tag starts one, I- of its type continues it); got {self.aggregation!r}')
    if self.softmax and self.pooling is not None:
      raise TextSpecError(f'{TEXT}: softmax turns a classifier\'s logits into probabilities; pooling makes an '
                          'encoder\'s embedding; a model is one or the other')

  def name(self, role: str) -> Optional[str]:
    """The model's tensor for `role` (input_ids, attention_mask, token_type_ids); None if it takes none."""
    return dict(self.tensors).get(role)

  @property
  def names(self) -> list[str]:
    return [n for _, n in self.tensors]

  def check_tensors(self, declared: dict[str, tuple[str, tuple]]) -> None:
    """Raises TextSpecError unless inputs.json's tensors (`declared`: name → (dtype, shape)) are exactly the
    ones this spec fills, each of its dtype and shape [null, null]."""
    example = ', '.join(f'{{"name": "{n}", "dtype": "{self.dtype}", "shape": [null, null]}}' for n in self.names)
    if sorted(declared) != sorted(self.names):
      raise TextSpecError(f'{TEXT} fills the tensors {", ".join(self.names)}; inputs.json declares '
                          f'{", ".join(declared) or "none"}: declare exactly those, e.g. {{"shape": "tensors", '
                          f'"tensors": [{example}]}}')
    for name, (dtype, shape) in declared.items():
      if dtype != self.dtype or tuple(shape) != (None, None):
        raise TextSpecError(f'{TEXT} makes {name!r} {self.dtype} [null, null] (rows, tokens: each call padded to '
                            f'its own longest); inputs.json declares {dtype} [{", ".join("null" if d is None else str(d) for d in shape)}]')

  def check_outputs(self, kind: str) -> None:
    """Raises TextSpecError when the post-processing cannot make outputs.json's `kind`."""
    if kind == 'entities' and (self.softmax or self.pooling is not None):
      raise TextSpecError(f'{TEXT}: a token classifier\'s logits [rows, tokens, labels] become entities (their '
                          'softmax included); drop softmax and pooling')
    if self.aggregation is not None and kind != 'entities':
      raise TextSpecError(f'{TEXT}: aggregation makes entities of a token classifier\'s tags; outputs.json\'s kind '
                          f'is {kind!r}, not entities')
    if self.softmax and kind != 'classification':
      raise TextSpecError(f'{TEXT}: softmax makes class probabilities; outputs.json\'s kind is {kind!r}, not '
                          'classification')
    if self.pooling is not None and kind != 'embedding':
      raise TextSpecError(f'{TEXT}: pooling makes an embedding; outputs.json\'s kind is {kind!r}: make it '
                          '{"kind": "embedding", "dimension": D}, or, for a sequence classifier, drop pooling (and set '
                          '"softmax": true if it returns logits)')

  def to_dict(self) -> dict[str, Any]:
    out = {'tokenizer': self.tokenizer, 'max_tokens': self.max_tokens, 'truncation': self.truncation,
           'tensors': dict(self.tensors), 'dtype': self.dtype, 'tokens_per_batch': self.tokens_per_batch,
           'sort_window': self.sort_window, 'max_bytes': self.max_bytes,
           'max_document_bytes': self.max_document_bytes}
    if self.softmax:
      out['softmax'] = True
    if self.pooling is not None:
      out.update(pooling=self.pooling, normalize=self.normalize)
    if self.aggregation is not None:
      out['aggregation'] = self.aggregation
    if self.chunk is not None:
      out['chunk'] = dataclasses.asdict(self.chunk)
    return out

  def chunking(self, special_tokens: int) -> Chunking:
    """The chunks of a document, for a tokenizer that adds `special_tokens` to each text; TextSpecError when
    text.json's chunk does not fit max_tokens with them."""
    room = self.max_tokens - special_tokens
    if self.chunk is None:
      return Chunking(max(room, 1))
    if self.chunk.tokens > room:
      raise TextSpecError(f'{TEXT}: chunk.tokens {self.chunk.tokens} and the tokenizer\'s {special_tokens} special '
                          f'tokens do not fit max_tokens {self.max_tokens}: make chunk.tokens at most {room}')
    return self.chunk

  @classmethod
  def from_dict(cls, data: Any) -> 'TextSpec':
    if not isinstance(data, dict):
      raise TextSpecError(f'{TEXT} is a JSON object, e.g. {EXAMPLE}; got {data!r}')
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
      raise TextSpecError(f'{TEXT}: no key {", ".join(map(repr, unknown))}; it takes {", ".join(sorted(known))}, '
                          f'e.g. {EXAMPLE}')
    if 'max_tokens' not in data:
      raise TextSpecError(f'{TEXT}: max_tokens, the model\'s length in tokens, is required; e.g. {EXAMPLE}')
    if 'tensors' in data and not isinstance(data['tensors'], dict):
      raise TextSpecError(f'{TEXT}: tensors is an object of role to tensor name, e.g. {EXAMPLE}')
    return cls(**data)
