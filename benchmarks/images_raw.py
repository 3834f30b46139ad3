"""The `raw-torch` image variant: the plain PyTorch loop a user writes, with no Beam.

    python -m benchmarks.images_raw --input 'DIR/*.jpg' --model BUNDLE --output DIR [--device cuda]

A `Dataset` of file paths whose items are read, decoded (simplejpeg) and
preprocessed (benchmarks/images_recipe.py) in `DataLoader` worker processes, one
per core, 64 images a batch; the main process runs the bundle's exported program
(`torch.export.load(model.pt2).module()`) under `inference_mode` and writes each
image's top class. The last line printed is a JSON object of counts.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

import numpy as np

from benchmarks import images_recipe as recipe

BATCH = 64


class JpegFiles:
  """A map-style dataset: item i is (the preprocessed image, its path)."""

  def __init__(self, paths: list[str], spec: dict, decoder: str):
    self.paths, self.spec, self.decoder = paths, spec, decoder

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, i: int):
    import torch
    with open(self.paths[i], 'rb') as f:
      image = recipe.preprocess(recipe.decode(f.read(), self.decoder), self.spec)
    return torch.from_numpy(image), self.paths[i]


def predict_files(pattern: str, bundle: str, output: str, *, device: str = 'cpu', workers: int = 0,
                  batch: int = BATCH, decoder: str = 'simplejpeg') -> dict:
  """Predicts every file matching `pattern`; returns counts and the seconds spent waiting on the model."""
  import torch
  paths = sorted(glob.glob(pattern))
  module = torch.export.load(os.path.join(bundle, 'model.pt2')).module().to(device)
  loader = torch.utils.data.DataLoader(JpegFiles(paths, recipe.load_spec(bundle), decoder), batch_size=batch,
                                       num_workers=workers, pin_memory=device.startswith('cuda'))
  keys, scores, model_s = [], [], 0.0
  with torch.inference_mode():
    for images, names in loader:
      start = time.perf_counter()
      scores.append(module(images.to(device, non_blocking=True)).cpu().numpy())
      model_s += time.perf_counter() - start
      keys += names
  os.makedirs(output, exist_ok=True)
  probabilities = np.concatenate(scores) if scores else np.zeros((0, 1), np.float32)
  recipe.write_predictions(os.path.join(output, 'predictions.parquet'), keys, probabilities,
                           recipe.load_classes(bundle))
  return {'images_read': len(paths), 'images_predicted': len(keys), 'model_s': round(model_s, 3)}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', required=True, help='A glob of JPEG files.')
  parser.add_argument('--model', required=True, help='An image bundle with model.pt2 and images.json.')
  parser.add_argument('--output', required=True)
  parser.add_argument('--device', default='cpu', help='A torch device: cpu, cuda.')
  parser.add_argument('--workers', type=int, default=os.cpu_count(), help='DataLoader worker processes.')
  parser.add_argument('--batch', type=int, default=BATCH)
  parser.add_argument('--decoder', default='simplejpeg', choices=recipe.DECODERS)
  args = parser.parse_args(argv)
  print(json.dumps(predict_files(args.input, args.model, args.output, device=args.device, workers=args.workers,
                                 batch=args.batch, decoder=args.decoder)))


if __name__ == '__main__':
  main()
