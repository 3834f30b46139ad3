"""The text model's feature step: rows holding a text → `(rows, {input_ids, attention_mask[, token_type_ids]})`
per model call, cut by tokens (`transforms.text.tokens`).

A batch is taken a window at a time: texts that cannot be used (empty or only
whitespace; more bytes than text.json's bound) become dead letters keyed by their row,
the rest are tokenised in one call, sorted by length, and cut into model calls each
padded to its own longest. Counters say what that saved: `text_tokens` (real tokens),
`text_padded_tokens` (what the model was given, padding included) and `text_truncated`
(texts cut to max_tokens); padding every row to max_tokens would have given the model
rows × max_tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from transforms.rows import counters
from transforms.rows import dead_letters as dl
from transforms.rows.dead_letters import DEAD_LETTERS, EMPTY_TEXT, TEXT_TOO_LONG, count_rejections
from transforms.text import tokens
from transforms.text.spec import TextSpec

# Rows per model call at most, unless --max_batch_rows says otherwise: a cap that only very short
# texts reach; tokens_per_batch is what bounds a call.
TEXT_BATCH_ROWS = 1024


def read_tokenizer(path: str, spec: TextSpec):
  """The bundle's tokenizer (`path` is the tokenizer file, local or gs://), set up as the spec says."""
  with FileSystems.open(path, compression_type='uncompressed') as f:
    return tokens.load_tokenizer(f.read().decode('utf-8'), spec)


def unusable(texts: pa.Array, max_bytes: int) -> tuple[np.ndarray, np.ndarray]:
  """Masks of the texts that are empty or only whitespace (or null), and of those over `max_bytes`."""
  empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(texts), ''), True).to_numpy(zero_copy_only=False)
  too_long = pc.fill_null(pc.greater(pc.binary_length(texts), max_bytes), False).to_numpy(zero_copy_only=False)
  return empty, too_long & ~empty


class _PrepareTextFn(beam.DoFn):
  """Rows → `(rows, tensors)` per model call; rows whose text cannot be used → dead letters."""

  def __init__(self, spec: TextSpec, tokenizer_path: str, column: str, max_rows: int, keep_column: bool,
               offsets: bool):
    self._spec = spec
    self._offsets = offsets
    self._path = tokenizer_path
    self._column = column
    self._max_rows = max_rows
    self._keep_column = keep_column
    self._tokenizer = None
    self._pad = 0
    self._texts = counters.counter('texts_tokenized')
    self._tokens = counters.counter('text_tokens')
    self._padded = counters.counter('text_padded_tokens')
    self._truncated = counters.counter('text_truncated')

  def setup(self):
    self._tokenizer = read_tokenizer(self._path, self._spec)
    self._pad = tokens.pad_id(self._tokenizer)

  def process(self, batch: pa.RecordBatch) -> Iterator:
    for start in range(0, batch.num_rows, self._spec.sort_window):
      yield from self._window(batch.slice(start, self._spec.sort_window))

  def _window(self, rows: pa.RecordBatch) -> Iterator:
    texts = rows.column(self._column)
    empty, too_long = unusable(texts, self._spec.max_bytes)
    failed = empty | too_long
    if failed.any():
      yield beam.pvalue.TaggedOutput(DEAD_LETTERS, self._dead_letters(rows, empty, too_long))
      rows = rows.filter(pa.array(~failed))
      texts = rows.column(self._column)
    if not rows.num_rows:
      return
    encoded = tokens.encode(self._tokenizer, texts.to_pylist(), offsets=self._offsets)
    lengths = encoded.lengths
    self._texts.inc(rows.num_rows)
    self._tokens.inc(int(lengths.sum()))
    self._truncated.inc(int(np.count_nonzero(encoded.truncated)))
    if not self._keep_column:  # the text travels no further: the predictions do not carry it
      rows = rows.drop_columns([self._column])
    for call in tokens.model_calls(lengths, self._spec.tokens_per_batch, self._max_rows):
      tensors = tokens.pad(encoded, call, self._spec, self._pad)
      self._padded.inc(int(tensors[self._spec.name('input_ids')].size))
      yield rows.take(pa.array(call)), tensors

  def _dead_letters(self, rows: pa.RecordBatch, empty: np.ndarray, too_long: np.ndarray) -> pa.RecordBatch:
    sizes = pc.fill_null(pc.binary_length(rows.column(self._column)), 0).to_numpy(zero_copy_only=False)
    failed = empty | too_long
    codes = [EMPTY_TEXT if empty[i] else TEXT_TOO_LONG for i in np.flatnonzero(failed)]
    reasons = [f'{self._column}: the text is empty or only whitespace; nothing to predict from' if c == EMPTY_TEXT
               else f'{self._column}: the text is {sizes[i]:,} bytes, over the {self._spec.max_bytes:,} bytes '
               'text.json allows (max_bytes)' for c, i in zip(codes, np.flatnonzero(failed))]
    if too_long.any():  # the record keeps the text's size, not a megabyte of it
      described = [f'<{n} bytes of text>' if long else None for n, long in zip(sizes, too_long)]
      column = pc.if_else(pa.array(too_long), pa.array(described, pa.string()), rows.column(self._column))
      rows = rows.set_column(rows.schema.get_field_index(self._column), self._column, column)
    letters = dl.from_batch(rows, failed, stage='tokenize', codes=codes, reasons=reasons)
    count_rejections(letters)
    return letters


@dataclasses.dataclass(eq=False)
class PrepareText(beam.PTransform):
  """Validated rows → `{'inputs': (rows, tensors) per model call, DEAD_LETTERS: rows whose text is empty or
  too long}`.

  Args:
    spec: the bundle's text.json.
    tokenizer_path: the bundle's tokenizer file, local or gs://.
    column: the column holding each row's text.
    max_rows: rows per model call at most (tokens_per_batch bounds them first for all but short texts).
    keep_column: carry the text on with its row (it is the key or a passthrough column, or a token
      classifier's entities are cut from it).
    offsets: give each call its tokens' character spans (`tokens.OFFSETS`), for a token classifier.
  """

  spec: TextSpec
  tokenizer_path: str
  column: str
  max_rows: int = TEXT_BATCH_ROWS
  keep_column: bool = False
  offsets: bool = False

  def __post_init__(self):
    super().__init__()

  def expand(self, batches: beam.PCollection[pa.RecordBatch]) -> dict[str, beam.PCollection]:
    prepared = batches | 'Tokenize' >> beam.ParDo(_PrepareTextFn(
        self.spec, self.tokenizer_path, self.column, self.max_rows, self.keep_column,
        self.offsets)).with_outputs(
            DEAD_LETTERS, main='inputs')
    return {'inputs': prepared['inputs'], DEAD_LETTERS: prepared[DEAD_LETTERS]}


def tokenizer_file(bundle_path: str, spec: TextSpec) -> str:
  """Where a bundle's tokenizer lies."""
  return FileSystems.join(bundle_path, spec.tokenizer)

