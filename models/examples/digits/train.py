"""Trains the example image model, a handwritten-digit classifier, and imports it as a user would.

    python -m models.examples.digits.train --output build/bundles/digits --files build/digits

The images are scikit-learn's digits: 1,797 scans of handwritten digits, 8 × 8
pixels in 16 grey levels, which the package ships. Each is written as a 32 × 32
greyscale PNG file (`FILES/train/`, and a seeded fifth held out in
`FILES/holdout/`, with `labels.jsonl` holding each file's true digit). A small
PyTorch CNN is trained on the training files (seeded, a few seconds on a CPU),
exported with torch.export, and brought in by the import command with the files a
user brings: the model, images.json, outputs.json and, as `--expected`, the
model's own predictions on the held-out files from this script's own
preprocessing (Pillow and numpy, not the job's code). The import proves that the
job decodes the files into the same tensor; the held-out accuracy is kept in the
bundle as a training metric.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Optional, Sequence

import numpy as np

from models.bundle import ModelBundle
from models.importer.command import import_model

CLASSES = tuple(str(d) for d in range(10))
SIZE = 32
# The user's preprocessing, as images.json says it: grey, 32 × 32, (x / 255 - 0.5) / 0.5, channels first.
IMAGES = {'tensor': 'image', 'color': 'L', 'resize': {'policy': 'stretch', 'size': [SIZE, SIZE]},
          'mean': [0.5], 'std': [0.5], 'layout': 'NCHW', 'dtype': 'float32'}


def write_files(folder: str, *, holdout_fraction: float = 0.2, seed: int = 7) -> dict[str, list]:
  """The digit scans as PNG files in `folder`/train and `folder`/holdout; each split's paths and labels."""
  from PIL import Image
  from sklearn.datasets import load_digits
  data = load_digits()
  scans = np.clip(np.rint(data.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # 16 grey levels → 0-255
  order = np.random.default_rng(seed).permutation(len(scans))
  cut = int(round(len(scans) * holdout_fraction))
  splits = {'holdout': np.sort(order[:cut]), 'train': np.sort(order[cut:])}
  found: dict[str, list] = {}
  for split, indices in splits.items():
    os.makedirs(os.path.join(folder, split), exist_ok=True)
    paths = []
    for i in indices:
      path = os.path.abspath(os.path.join(folder, split, f'digit-{i:04d}.png'))
      Image.fromarray(scans[i], mode='L').resize((SIZE, SIZE), Image.Resampling.BILINEAR).save(path)
      paths.append(path)
    labels = [CLASSES[data.target[i]] for i in indices]
    with open(os.path.join(folder, split, 'labels.jsonl'), 'w', encoding='utf-8') as f:
      f.writelines(json.dumps({'uri': p, 'label': label}) + '\n' for p, label in zip(paths, labels))
    found[split] = [paths, labels]
  return found


def user_tensor(paths: Sequence[str]) -> np.ndarray:
  """The training code's own preprocessing (not the job's): Pillow reads each file, numpy scales it."""
  from PIL import Image
  pixels = np.stack([np.asarray(Image.open(p).convert('L'), np.float32) for p in paths])
  return ((pixels / 255.0 - 0.5) / 0.5)[:, None, :, :].astype(np.float32)


def digit_net():
  """Two convolutions and a linear layer over [n, 1, 32, 32]: about 24,000 weights; returns probabilities."""
  import torch

  class DigitNet(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.features = torch.nn.Sequential(
          torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
          torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
          torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, len(CLASSES)))

    def logits(self, image):
      return self.features(image)

    def forward(self, image):
      return torch.softmax(self.features(image), dim=1)

  return DigitNet()


def fit(x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int):
  """The network trained on `x` (user tensors) and `y` (class indices) with Adam, seeded."""
  import torch
  torch.manual_seed(seed)
  model = digit_net()
  optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
  x_all, y_all = torch.from_numpy(x), torch.from_numpy(y)
  generator = torch.Generator().manual_seed(seed)
  for _ in range(epochs):
    for batch in torch.randperm(len(x_all), generator=generator).split(64):
      optimizer.zero_grad()
      torch.nn.functional.cross_entropy(model.logits(x_all[batch]), y_all[batch]).backward()
      optimizer.step()
  return model.eval()


def train(output: str, files: str, *, version: str = '1', epochs: int = 6, seed: int = 7) -> ModelBundle:
  """Writes the files, trains, exports and imports the model into the bundle `output`; returns it."""
  import torch
  splits = write_files(files, seed=seed)
  (train_paths, train_labels), (holdout_paths, holdout_labels) = splits['train'], splits['holdout']
  y_train = np.array([CLASSES.index(c) for c in train_labels])
  model = fit(user_tensor(train_paths), y_train, epochs=epochs, seed=seed)
  with torch.no_grad():
    own = model(torch.from_numpy(user_tensor(holdout_paths))).numpy()
  accuracy = float(np.mean(own.argmax(axis=1) == np.array([CLASSES.index(c) for c in holdout_labels])))
  logging.info('digits: held-out accuracy %.3f (%d train, %d held-out files)', accuracy, len(train_paths),
               len(holdout_paths))

  user = os.path.join(files, 'model')  # what a user brings to the import
  os.makedirs(user, exist_ok=True)
  batch = torch.export.Dim('batch', min=1, max=4096)
  program = torch.export.export(model, (torch.zeros(2, 1, SIZE, SIZE),), dynamic_shapes={'image': {0: batch}})
  torch.export.save(program, os.path.join(user, 'model.pt2'))
  with open(os.path.join(user, 'images.json'), 'w', encoding='utf-8') as f:
    json.dump(IMAGES, f, indent=2)
  with open(os.path.join(user, 'outputs.json'), 'w', encoding='utf-8') as f:
    json.dump({'kind': 'classification', 'classes': list(CLASSES)}, f)
  with open(os.path.join(user, 'expected.jsonl'), 'w', encoding='utf-8') as f:
    for path, row in zip(holdout_paths, own):
      f.write(json.dumps({'uri': path, **{f'probability_{c}': float(p) for c, p in zip(CLASSES, row)}}) + '\n')
  return import_model(model=os.path.join(user, 'model.pt2'), images=os.path.join(user, 'images.json'),
                      features=None, outputs=os.path.join(user, 'outputs.json'), name='digits', version=version,
                      output=output, expected=os.path.join(user, 'expected.jsonl'),
                      metrics=[f'holdout_accuracy={accuracy:.4f}'])


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--output', required=True, help='Bundle directory to write (it must not hold one yet).')
  parser.add_argument('--files', required=True, help='Folder for the PNG files (train/, holdout/) and the '
                      'model files the import reads (model/).')
  parser.add_argument('--version', default='1')
  parser.add_argument('--epochs', type=int, default=6)
  parser.add_argument('--seed', type=int, default=7)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(message)s')
  bundle = train(args.output, args.files, version=args.version, epochs=args.epochs, seed=args.seed)
  print(f'wrote {bundle.path}: held-out accuracy {bundle.metadata["training_metrics"]["holdout_accuracy"]:.3f}; '
        f'predict the held-out files with\n  python -m pipelines.run --input=\'{args.files}/holdout/*.png\' '
        f'--model={bundle.path} --output=OUTPUT')


if __name__ == '__main__':
  main()
