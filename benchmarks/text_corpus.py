"""The text benchmark's inputs: seeded texts as Parquet, and a BERT-shaped encoder bundle trained on them.

Two sets of the same vocabulary (testing/text.py's words): `mixed`, lengths long-tailed
from 5 to 500 words (most short, a few long, as chunks of real documents come), and
`uniform`, every text within a few words of the same length, where sorting by length
has nothing to gain. The model is a `transformers` BERT (4 layers, 256 wide, seeded
random weights) with a WordPiece tokenizer trained on the texts, exported with
torch.export into a bundle that mean-pools and normalises, and saved again as a
Hugging Face folder for the libraries that load one. Everything is made once per size.
"""

from __future__ import annotations

import json
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq

SETS = ('mixed', 'uniform')
SHORTEST, LONGEST = 5, 500  # words
UNIFORM_WORDS = (45, 55)
MAX_TOKENS = 256
SHAPE = {'layers': 4, 'hidden': 256, 'heads': 4}
VOCAB = 2000


def lengths(name: str, n: int, *, seed: int = 0) -> list[int]:
  """Words per text: long-tailed over SHORTEST..LONGEST (`mixed`) or within UNIFORM_WORDS (`uniform`)."""
  rng = random.Random(f'{name}-{seed}')
  if name == 'mixed':
    return [max(SHORTEST, min(LONGEST, int(rng.lognormvariate(3.6, 0.9)))) for _ in range(n)]
  if name == 'uniform':
    return [rng.randint(*UNIFORM_WORDS) for _ in range(n)]
  raise ValueError(f'unknown text set {name!r}; choose from {SETS}')


def texts(name: str, n: int, *, seed: int = 0) -> list[str]:
  """`n` texts of the set's lengths: words drawn from the test vocabulary, with numbers and made-up words
  so the tokenizer splits some into pieces."""
  from testing.text import WORDS
  rng = random.Random(f'words-{name}-{seed}')
  made_up = [f'{rng.choice(WORDS)}{rng.choice(WORDS)[:3]}{i}' for i in range(500)]
  pool = list(WORDS) * 8 + made_up
  return [' '.join(rng.choice(pool) for _ in range(words)) for words in lengths(name, n, seed=seed)]


def write_set(path: str, name: str, n: int) -> str:
  """The set as Parquet with an `id` and a `text` column, unless it is there already."""
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.table({'id': pa.array(range(n), pa.int64()), 'text': texts(name, n)}), path + '.tmp')
    os.replace(path + '.tmp', path)
  return path


def make_bundle(directory: str, corpus: list[str]) -> dict:
  """The encoder bundle at DIRECTORY/bundle and its Hugging Face folder at DIRECTORY/hf, unless made:
  {'bundle', 'hf', 'dimension'}."""
  made = os.path.join(directory, 'made.json')
  if os.path.exists(made):
    with open(made, encoding='utf-8') as f:
      return json.load(f)
  from models.bundle import Outputs
  from testing.text import text_bundle
  from transforms.text.spec import TextSpec
  spec = TextSpec(max_tokens=MAX_TOKENS, pooling='mean', normalize=True)
  bundle, model = text_bundle(os.path.join(directory, 'bundle'), spec, Outputs('embedding', dimension=SHAPE['hidden']),
                              corpus, vocab_size=VOCAB, **SHAPE)
  hf = os.path.join(directory, 'hf')
  save_hf_folder(model, bundle.tokenizer_path, hf)
  result = {'bundle': bundle.path, 'hf': hf, 'dimension': SHAPE['hidden']}
  with open(made, 'w', encoding='utf-8') as f:
    json.dump(result, f)
  return result


def save_hf_folder(model, tokenizer_path: str, folder: str) -> None:
  """The model and its tokenizer as `save_pretrained` writes them, which `AutoModel`/`AutoTokenizer` load."""
  from transformers import PreTrainedTokenizerFast
  model.save_pretrained(folder)
  tokenizer = PreTrainedTokenizerFast(tokenizer_file=tokenizer_path, unk_token='[UNK]', pad_token='[PAD]',
                                      cls_token='[CLS]', sep_token='[SEP]', mask_token='[MASK]',
                                      model_max_length=MAX_TOKENS)
  tokenizer.save_pretrained(folder)
