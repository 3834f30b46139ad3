"""A text model's part of the bundle: text.json checked against the tensors it fills, the model's format
and its tokenizer, when the bundle loads (`models.bundle.ModelBundle.load`), so a bad one fails on the
launcher, not on every worker."""

from __future__ import annotations

import json
from typing import Optional

import numpy as np
from apache_beam.io.filesystems import FileSystems

from models.inputs import Column, InputContract, _Column
from transforms.features.spec import FeatureSpec
from transforms.text import tokens
from transforms.text.prepare import read_tokenizer
from transforms.text.spec import TEXT, TextSpec, TextSpecError

# The column of a text model's input holding each text, unless --text_column says otherwise.
TEXT_COLUMN = 'text'
# The formats whose predictors hand back the model's raw output for text.json's pooling or softmax.
TEXT_FORMATS = ('onnx', 'torch')


def load_text(path: str, inputs: InputContract, fmt: str) -> Optional[TextSpec]:
  """The bundle's text.json, checked (TextSpecError, naming the file, otherwise); None for a model that takes
  no texts."""
  where = FileSystems.join(path, TEXT)
  if not FileSystems.exists(where):
    return None
  try:
    with FileSystems.open(where) as f:
      data = json.loads(f.read().decode('utf-8'))
  except ValueError as e:
    raise TextSpecError(f'{where} is not valid JSON: {e}') from None
  try:
    spec = TextSpec.from_dict(data)
    if inputs.shape != 'tensors':
      raise TextSpecError(f'{TEXT} fills tensors, but inputs.json says the model takes {inputs.describe()}')
    spec.check_tensors({t.name: (t.dtype, t.shape) for t in inputs.tensors})
  except TextSpecError as e:
    raise TextSpecError(f'{path}/{e}') from None
  if fmt not in TEXT_FORMATS:
    raise TextSpecError(f'{where}: the job tokenises texts for an ONNX or PyTorch model (format onnx or torch); '
                        f'this bundle\'s format is {fmt}: export the model to ONNX or with torch.export')
  tokenizer = FileSystems.join(path, spec.tokenizer)
  if not FileSystems.exists(tokenizer):
    raise TextSpecError(f'{where} names the tokenizer {spec.tokenizer}, which the bundle does not hold; save the '
                        'Hugging Face tokenizer there (tokenizer.save(path), its tokenizer.json)')
  try:
    loaded = read_tokenizer(tokenizer, spec)
    spec.chunking(loaded.num_special_tokens_to_add(False))  # document chunks fit the model with its special tokens
  except TextSpecError as e:
    raise TextSpecError(f'{path}/{e}') from None
  except ImportError as e:
    raise TextSpecError(f'{where}: a text model needs tokenizers ({e}); pip install ".[text]"') from None
  except ValueError as e:
    raise TextSpecError(f'{tokenizer}: {e}') from None
  return spec


def text_sample(tokenizer_path: str, spec: TextSpec, *, offsets: bool = False) -> dict[str, np.ndarray]:
  """Two short texts as the job tokenises them: one model call, for the check that the model takes it (with
  each token's character offsets for a token classifier)."""
  tokenizer = read_tokenizer(tokenizer_path, spec)
  encoded = tokens.encode(tokenizer, ['a', 'a short text'], offsets=offsets)
  return tokens.pad(encoded, np.arange(2), spec, tokens.pad_id(tokenizer))


def text_features(column: str) -> FeatureSpec:
  """What the job validates of a text model's rows: the column holding each text, required (a null is a
  missing value), blanks kept for the text step to reject as empty_text."""
  return FeatureSpec((_Column(Column(column, 'text', nullable=False)),))
