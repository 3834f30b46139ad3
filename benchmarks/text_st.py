"""The `sentence-transformers` text variant: `SentenceTransformer.encode` over the same model, saved as a
Hugging Face folder.

    python -m benchmarks.text_st --input IN.parquet --model HF_FOLDER --output DIR

The model is built from its modules, as for any BERT folder without a
sentence-transformers config: `models.Transformer(folder, max_seq_length=256)` and
mean `models.Pooling`, then `Normalize`. `encode` sorts the texts by length itself
and pads each batch (64 texts) to its longest. Runs in its own virtualenv
(build/bench/st-venv, made by `./launch.sh bench --text`), so the library's
dependencies never touch the pinned stack. The last line printed is a JSON object of counts.
"""

from __future__ import annotations

import argparse
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

BATCH = 64
MAX_TOKENS = 256


def main(argv=None) -> None:
  from sentence_transformers import SentenceTransformer, models
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', required=True, help='A Parquet file with `id` and `text` columns.')
  parser.add_argument('--model', required=True, help='A Hugging Face folder: BertModel and its tokenizer.')
  parser.add_argument('--output', required=True)
  parser.add_argument('--batch', type=int, default=BATCH)
  args = parser.parse_args(argv)
  transformer = models.Transformer(args.model, max_seq_length=MAX_TOKENS)
  pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode='mean')
  model = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device='cpu')
  table = pq.read_table(args.input, columns=['id', 'text'])
  embeddings = model.encode(table.column('text').to_pylist(), batch_size=args.batch, convert_to_numpy=True)
  os.makedirs(args.output, exist_ok=True)
  column = pa.FixedSizeListArray.from_arrays(embeddings.reshape(-1), embeddings.shape[1])
  pq.write_table(pa.table({'id': table.column('id'), 'embedding': column}),
                 os.path.join(args.output, 'embeddings.parquet'))
  print(json.dumps({'rows': table.num_rows, 'rows_embedded': len(embeddings)}))


if __name__ == '__main__':
  main()
