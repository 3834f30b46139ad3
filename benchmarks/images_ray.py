"""The `ray-data` image variant: Ray Data reads the files, decodes in one `map_batches`, predicts in another.

    python -m benchmarks.images_ray --input 'DIR/*.jpg' --model BUNDLE --output DIR

`read_binary_files` (with paths) → `map_batches(decode)`: tasks (fused with the
read) that decode and preprocess each batch's images with the same code as the other variants
(benchmarks/images_recipe.py) → `map_batches(Classify)`: one actor that loads
the bundle's exported program once and predicts 64 images a call →
`write_parquet`. The actor takes one CPU of Ray's accounting so the decode
tasks run beside it, and lets torch use every core, as the other variants'
models do. Runs in its own virtualenv (build/bench/ray-venv, made by
`./launch.sh bench`), so Ray's dependencies never touch the pinned stack.
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np

from benchmarks import images_recipe as recipe

BATCH = 64


def decode(batch: dict, spec: dict, decoder: str) -> dict:
  """Bytes and paths to preprocessed float32 images and paths."""
  images = [recipe.preprocess(recipe.decode(data, decoder), spec) for data in batch['bytes']]
  return {'image': np.stack(images), 'path': batch['path']}


class Classify:
  """A Ray Data actor: the exported program, loaded once; each batch to its top class."""

  def __init__(self, bundle: str):
    import torch
    torch.set_num_threads(os.cpu_count())  # Ray limits an actor to its CPUs' threads; the model gets every core
    self._module = torch.export.load(os.path.join(bundle, 'model.pt2')).module()
    self._classes = recipe.load_classes(bundle)

  def __call__(self, batch: dict) -> dict:
    import torch
    with torch.inference_mode():
      scores = self._module(torch.from_numpy(batch['image'])).numpy()
    best = scores.argmax(axis=1)
    return {'path': batch['path'], 'predicted_class': np.asarray([self._classes[i] for i in best]),
            'predicted_probability': scores[np.arange(len(best)), best]}


def main(argv=None) -> None:
  import ray
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', required=True, help='A glob of JPEG files.')
  parser.add_argument('--model', required=True, help='An image bundle with model.pt2 and images.json.')
  parser.add_argument('--output', required=True)
  parser.add_argument('--batch', type=int, default=BATCH)
  parser.add_argument('--decoder', default='simplejpeg', choices=recipe.DECODERS)
  args = parser.parse_args(argv)
  ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
  files = sorted(glob.glob(args.input))
  ds = ray.data.read_binary_files(files, include_paths=True)
  ds = ds.map_batches(decode, fn_kwargs={'spec': recipe.load_spec(args.model), 'decoder': args.decoder},
                      batch_size=args.batch, batch_format='numpy')
  ds = ds.map_batches(Classify, fn_constructor_args=(args.model,), batch_size=args.batch, batch_format='numpy',
                      concurrency=1, num_cpus=1)
  ds.write_parquet(args.output)
  ray.shutdown()
  print(json.dumps({'variant': 'ray-data', 'files': len(files)}))


if __name__ == '__main__':
  main()
