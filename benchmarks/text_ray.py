"""The `ray-data` text variant: Ray Data reads the Parquet file and embeds it in one `map_batches` actor.

    python -m benchmarks.text_ray --input IN.parquet --model BUNDLE --output DIR

`read_parquet` → `map_batches(Embed)`: one actor that loads the bundle's tokenizer and
exported program once and embeds 64 rows a call in input order, as the plain loop does
(benchmarks/text_loop.py: each batch padded to its longest, mean pooling, L2 norm) →
`write_parquet`. The actor lets torch use every core, as the other variants' models do.
Runs in its own virtualenv (build/bench/ray-venv), so Ray's dependencies never touch the
pinned stack.
"""

from __future__ import annotations

import argparse
import json
import os

from benchmarks import text_loop

BATCH = text_loop.BATCH


class Embed:
  """A Ray Data actor: the tokenizer and exported program, loaded once; each batch to its embeddings."""

  def __init__(self, bundle: str):
    import torch
    torch.set_num_threads(os.cpu_count())  # Ray limits an actor to its CPUs' threads; the model gets every core
    self._tokenizer = text_loop.load_tokenizer(bundle)
    self._module = torch.export.load(os.path.join(bundle, 'model.pt2')).module()

  def __call__(self, batch: dict) -> dict:
    import torch
    encodings = self._tokenizer.encode_batch(list(batch['text']))
    ids = torch.tensor([e.ids for e in encodings])
    mask = torch.tensor([e.attention_mask for e in encodings])
    with torch.inference_mode():
      vectors = text_loop.mean_pool(self._module(ids, mask), mask).numpy()
    return {'id': batch['id'], 'embedding': list(vectors)}


def main(argv=None) -> None:
  import ray
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', required=True, help='A Parquet file with `id` and `text` columns.')
  parser.add_argument('--model', required=True, help='A text bundle: model.pt2, tokenizer.json, text.json.')
  parser.add_argument('--output', required=True)
  parser.add_argument('--batch', type=int, default=BATCH)
  args = parser.parse_args(argv)
  ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
  ds = ray.data.read_parquet(args.input, columns=['id', 'text'])
  ds = ds.map_batches(Embed, fn_constructor_args=(args.model,), batch_size=args.batch, batch_format='numpy',
                      concurrency=1, num_cpus=1)
  ds.write_parquet(args.output)
  ray.shutdown()
  print(json.dumps({'variant': 'ray-data', 'input': args.input}))


if __name__ == '__main__':
  main()
