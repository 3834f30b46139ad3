"""The `plain-loop` text variant: the loop a user writes around the same tokenizer and exported model.

    python -m benchmarks.text_loop --input IN.parquet --model BUNDLE --output DIR

Reads the Parquet file's `id` and `text`, takes 64 rows at a time in input order,
tokenises them with the bundle's tokenizer (cut to max_tokens), pads each batch to its
own longest, runs the bundle's exported program (`torch.export.load(model.pt2).module()`)
under `inference_mode`, mean-pools over the attention mask and L2-normalises, and writes
`id` and `embedding` to Parquet. The last line printed is a JSON object of counts: rows,
real tokens and padded tokens (what the model was given).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BATCH = 64


def load_tokenizer(bundle: str):
  """The bundle's tokenizer, cut at text.json's max_tokens, padding each batch to its longest."""
  from tokenizers import Tokenizer
  with open(os.path.join(bundle, 'text.json'), encoding='utf-8') as f:
    spec = json.load(f)
  tokenizer = Tokenizer.from_file(os.path.join(bundle, spec.get('tokenizer', 'tokenizer.json')))
  tokenizer.enable_truncation(max_length=spec['max_tokens'])
  tokenizer.enable_padding(pad_id=tokenizer.token_to_id('[PAD]'), pad_token='[PAD]')
  return tokenizer


def mean_pool(hidden, mask):
  """Mean over the real tokens, then L2 norm 1: what sentence-transformers' mean pooling does."""
  import torch
  weights = mask.unsqueeze(-1).to(hidden.dtype)
  pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
  return torch.nn.functional.normalize(pooled, dim=1)


def embed_file(path: str, bundle: str, output: str, *, batch: int = BATCH) -> dict:
  """Embeds every row of `path`; returns the counts."""
  import torch
  table = pq.read_table(path, columns=['id', 'text'])
  texts = table.column('text').to_pylist()
  tokenizer = load_tokenizer(bundle)
  module = torch.export.load(os.path.join(bundle, 'model.pt2')).module()
  vectors, tokens, padded = [], 0, 0
  with torch.inference_mode():
    for start in range(0, len(texts), batch):
      encodings = tokenizer.encode_batch(texts[start:start + batch])
      ids = torch.tensor([e.ids for e in encodings])
      mask = torch.tensor([e.attention_mask for e in encodings])
      vectors.append(mean_pool(module(ids, mask), mask).numpy())
      tokens, padded = tokens + int(mask.sum()), padded + ids.numel()
  embeddings = np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)
  os.makedirs(output, exist_ok=True)
  column = pa.FixedSizeListArray.from_arrays(embeddings.reshape(-1), embeddings.shape[1]) if len(embeddings) else []
  pq.write_table(pa.table({'id': table.column('id'), 'embedding': column}),
                 os.path.join(output, 'embeddings.parquet'))
  return {'rows': len(texts), 'rows_embedded': len(embeddings), 'tokens': tokens, 'padded_tokens': padded}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', required=True, help='A Parquet file with `id` and `text` columns.')
  parser.add_argument('--model', required=True, help='A text bundle: model.pt2, tokenizer.json, text.json.')
  parser.add_argument('--output', required=True)
  parser.add_argument('--batch', type=int, default=BATCH, help='Rows per model call.')
  args = parser.parse_args(argv)
  print(json.dumps(embed_file(args.input, args.model, args.output, batch=args.batch)))


if __name__ == '__main__':
  main()
