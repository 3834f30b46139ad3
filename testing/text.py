"""Text models for tests, built here without downloads: a WordPiece tokenizer trained on a generated corpus,
small BERTs of seeded random weights (`transformers`), exported with torch.export or to ONNX into bundles,
and their own answers (transformers' forward pass, pooled as a user's code pools) to compare the job's with."""

from __future__ import annotations

import os
import random
from typing import Optional, Sequence

import numpy as np

WORDS = ('the a cat dog sat on mat ran fast slow over under river bank money loan rate report model data '
         'quick brown fox jumps lazy bright night morning paper review great terrible service food price '
         'delivery late early refund order again never always recommend friendly staff city train ticket').split()
SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']


def corpus(n: int, *, seed: int = 0, longest: int = 300) -> list[str]:
  """`n` sentences of widely mixed lengths (1 to `longest` words, most short, a few long), some punctuation
  and a word the tokenizer never saw, as real reviews or tickets mix them."""
  rng = random.Random(seed)
  texts = []
  for _ in range(n):
    words = max(1, min(longest, int(rng.lognormvariate(2.3, 1.0))))
    text = ' '.join(rng.choice(WORDS) for _ in range(words))
    if rng.random() < 0.2:
      text = text.capitalize() + rng.choice(['.', '!', '?', ', zebracorn.'])
    texts.append(text)
  return texts


def train_tokenizer(texts: Sequence[str], path: str, *, vocab_size: int = 300) -> str:
  """A BERT-style WordPiece tokenizer ([CLS] text [SEP], lower case) trained on `texts`, saved as a
  tokenizer.json at `path`."""
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
  tokenizer = Tokenizer(models.WordPiece(unk_token='[UNK]'))
  tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS))
  cls, sep = tokenizer.token_to_id('[CLS]'), tokenizer.token_to_id('[SEP]')
  tokenizer.post_processor = processors.TemplateProcessing(single='[CLS] $A [SEP]', special_tokens=[
      ('[CLS]', cls), ('[SEP]', sep)])
  tokenizer.save(path)
  return path


def small_bert(vocab_size: int, max_tokens: int, *, classes: Optional[int] = None, tags: Optional[int] = None,
               seed: int = 5, layers: int = 2, hidden: int = 32, heads: int = 2):
  """A BERT of fixed random weights (2 layers of 32 wide unless asked): `BertForSequenceClassification` with
  `classes`, `BertForTokenClassification` with `tags`, else `BertModel`."""
  import torch
  from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification, BertModel
  config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=2 * hidden if hidden == 32 else 4 * hidden,
                      max_position_embeddings=max_tokens, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, num_labels=classes or tags or 2)
  torch.manual_seed(seed)
  if tags:
    model = BertForTokenClassification(config)
    with torch.no_grad():  # logits spread wide enough that each token's tag is clear, not a near tie
      model.classifier.weight.mul_(20.0)
    return model.eval()
  model = BertForSequenceClassification(config) if classes else BertModel(config, add_pooling_layer=False)
  return model.eval()


def _named(model, token_types: bool):
  """The model as a module of named tensor arguments returning one tensor: logits or last_hidden_state."""
  import torch

  class Named(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.inner = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
      out = self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
      return out.logits if hasattr(out, 'logits') else out.last_hidden_state

  if token_types:
    return Named().eval()

  class TwoInputs(Named):
    def forward(self, input_ids, attention_mask):  # pylint: disable=arguments-differ
      return super().forward(input_ids, attention_mask)

  return TwoInputs().eval()


def export(model, path: str, fmt: str, max_tokens: int, *, token_types: bool = False) -> str:
  """The model saved at `path` as a torch.export program (`torch`) or an ONNX graph (`onnx`), taking
  input_ids and attention_mask (and token_type_ids) of any rows and tokens up to `max_tokens`."""
  import torch
  names = ['input_ids', 'attention_mask'] + (['token_type_ids'] if token_types else [])
  example = tuple(torch.ones((3, 7), dtype=torch.int64) for _ in names)
  module = _named(model, token_types)
  if fmt == 'torch':
    rows, tokens = torch.export.Dim('rows', min=1, max=65536), torch.export.Dim('tokens', min=2, max=max_tokens)
    program = torch.export.export(module, example, dynamic_shapes={n: {0: rows, 1: tokens} for n in names})
    torch.export.save(program, path)
  else:
    torch.onnx.export(module, example, path, input_names=names, output_names=['output'], dynamo=False,
                      dynamic_axes={n: {0: 'rows', 1: 'tokens'} for n in names + ['output']})
  return path


def text_bundle(path: str, spec, outputs, texts: Sequence[str], *, fmt: str = 'torch', seed: int = 5,
                vocab_size: int = 300, **shape):
  """A bundle of a small BERT (a classifier for a classification `outputs`, a token classifier for entities,
  else an encoder) taking what `spec` (a TextSpec) fills, its tokenizer trained on `texts`: (the loaded
  bundle, the model). `shape` (layers, hidden, heads) goes to `small_bert`."""
  from models.bundle import write_bundle
  from models.inputs import InputContract, Tensor
  os.makedirs(path, exist_ok=True)
  tokenizer = train_tokenizer(texts, os.path.join(path, spec.tokenizer), vocab_size=vocab_size)
  from tokenizers import Tokenizer
  vocab = Tokenizer.from_file(tokenizer).get_vocab_size()
  model = small_bert(vocab, spec.max_tokens, classes=outputs.width if outputs.kind == 'classification' else None,
                     tags=len(outputs.labels) or None, seed=seed, **shape)
  model_file = 'model.pt2' if fmt == 'torch' else 'model.onnx'
  export(model, os.path.join(path, model_file), fmt, spec.max_tokens, token_types=bool(spec.name('token_type_ids')))
  inputs = InputContract('tensors', tensors=tuple(Tensor(n, spec.dtype, (None, None)) for n in spec.names))
  bundle = write_bundle(path, features=None, outputs=outputs, name='bert', version='1', inputs=inputs, text=spec,
                        format=fmt, model_file=model_file)
  return bundle, model


def reference(model, tokenizer_path: str, texts: Sequence[str], max_tokens: int, *, pooling: Optional[str] = None,
              softmax: bool = False) -> np.ndarray:
  """The model's answers as a user computes them: transformers' forward pass over each text alone (no
  padding), then softmax, or pooling (mean or CLS) and L2 normalising."""
  import torch
  from tokenizers import Tokenizer
  tokenizer = Tokenizer.from_file(tokenizer_path)
  tokenizer.enable_truncation(max_length=max_tokens)
  answers = []
  with torch.no_grad():
    for text in texts:
      ids = torch.tensor([tokenizer.encode(text).ids])
      out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
      if softmax:
        answers.append(torch.softmax(out.logits, -1)[0].numpy())
        continue
      hidden = out.last_hidden_state[0]
      vector = hidden.mean(0) if pooling == 'mean' else hidden[0]
      answers.append(torch.nn.functional.normalize(vector, dim=0).numpy())
  return np.stack(answers)


def reference_entities(model, tokenizer_path: str, texts: Sequence[str], max_tokens: int,
                       labels: Sequence[str]) -> list[list[dict]]:
  """Each text's entities as a user's code finds them: transformers' forward pass over the text alone, each
  token's most probable BIO tag, then runs of B-X, I-X, ... (special tokens skipped) joined into one entity
  from its first token's first character to its last token's last, scored by the mean tag probability
  (and, for tests to count, its `tokens`)."""
  import torch
  from tokenizers import Tokenizer
  tokenizer = Tokenizer.from_file(tokenizer_path)
  tokenizer.enable_truncation(max_length=max_tokens)
  found = []
  with torch.no_grad():
    for text in texts:
      encoding = tokenizer.encode(text)
      ids = torch.tensor([encoding.ids])
      probabilities = torch.softmax(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0], -1)
      runs = []  # [label, [(start, end, probability), ...]]
      for special, (start, end), p in zip(encoding.special_tokens_mask, encoding.offsets, probabilities):
        if special:
          continue
        tag = labels[int(p.argmax())]
        if tag.startswith('I-') and runs and runs[-1] is not None and runs[-1][0] == tag[2:]:
          runs[-1][1].append((start, end, float(p.max())))
        else:
          runs.append([tag[2:], [(start, end, float(p.max()))]] if tag.startswith('B-') else None)
      found.append([{'text': text[r[1][0][0]:r[1][-1][1]], 'label': r[0], 'start': r[1][0][0], 'end': r[1][-1][1],
                     'score': float(np.mean([t[2] for t in r[1]])), 'tokens': len(r[1])} for r in runs if r is not None])
  return found
