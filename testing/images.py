"""Synthetic JPEGs that cost what photographs cost to decode, made once per folder and reused.

A flat or purely random image would mislead a decode benchmark: a flat one
compresses to almost nothing, white noise to far more than a photograph. These
have a photograph's mix: smooth colour gradients and soft blobs (the low
frequencies JPEG keeps cheaply) under a little sensor-like noise (the high
frequencies that fill the entropy-coded stream), saved at quality 90 with 4:2:0
chroma subsampling, as cameras and web images are. A 224×224 one is about
15 KB, a 1024×1024 one about 300 KB.

    make_jpegs(folder, {224: 50_000, 1024: 2_000})

writes `folder/s0224-000000.jpg` ... and a manifest.json listing every file; a
folder whose manifest already lists the same counts is left as it is.
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Optional

import numpy as np

MANIFEST = 'manifest.json'
QUALITY = 90
SEED = 0


def synthetic_image(size: int, seed: int) -> np.ndarray:
  """A `size`×`size` RGB uint8 image: gradients, soft blobs and noise, different for every `seed`."""
  from PIL import Image
  rng = np.random.default_rng(seed)
  axis = np.linspace(0.0, 1.0, size, dtype=np.float32)
  y, x = np.meshgrid(axis, axis, indexing='ij')
  base = rng.uniform(40, 215, 3).astype(np.float32)
  slope = rng.uniform(-90, 90, (3, 2)).astype(np.float32)
  image = base + slope[:, 0] * x[..., None] + slope[:, 1] * y[..., None]
  blobs = rng.uniform(-60, 60, (6, 6, 3)).astype(np.float32)  # a coarse grid, smoothly upsampled
  image += np.stack([np.asarray(Image.fromarray(blobs[..., c], mode='F').resize((size, size), Image.BICUBIC))
                     for c in range(3)], axis=-1)
  image += rng.normal(0.0, 9.0, (size, size, 3)).astype(np.float32)
  return np.clip(image, 0, 255).astype(np.uint8)


def encode_jpeg(image: np.ndarray, quality: int = QUALITY) -> bytes:
  from PIL import Image
  out = io.BytesIO()
  Image.fromarray(image).save(out, format='JPEG', quality=quality, subsampling='4:2:0')
  return out.getvalue()


def file_name(size: int, index: int) -> str:
  return f's{size:04d}-{index:06d}.jpg'


def _write(job: tuple[str, int, int, int]) -> str:
  folder, size, index, seed = job
  name = file_name(size, index)
  with open(os.path.join(folder, name), 'wb') as f:
    f.write(encode_jpeg(synthetic_image(size, seed)))
  return name


def make_jpegs(folder: str, counts: dict[int, int], *, seed: int = SEED, workers: Optional[int] = None) -> dict:
  """`counts[size]` square JPEGs of each size in `folder` (made once); returns the manifest.

  The manifest holds `counts` and `files`, the sorted file names. Images are made in `workers`
  processes (default: every core); each image's content depends only on its size, index and `seed`.
  """
  counts = {int(size): int(n) for size, n in counts.items() if n > 0}
  path = os.path.join(folder, MANIFEST)
  want = {str(size): n for size, n in sorted(counts.items())}
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      manifest = json.load(f)
    if manifest.get('counts') == want and manifest.get('seed') == seed:
      return manifest
  os.makedirs(folder, exist_ok=True)
  for name in os.listdir(folder):  # another size mix was here: start clean, so a glob sees only these
    if name.endswith('.jpg') or name == MANIFEST:
      os.remove(os.path.join(folder, name))
  jobs = [(folder, size, i, seed * 1_000_003 + size * 100_003 + i) for size, n in sorted(counts.items())
          for i in range(n)]
  with ProcessPoolExecutor(workers or os.cpu_count()) as pool:
    files = sorted(pool.map(_write, jobs, chunksize=64))
  manifest = {'counts': want, 'seed': seed, 'quality': QUALITY, 'files': files,
              'bytes': sum(os.path.getsize(os.path.join(folder, f)) for f in files)}
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(manifest, f)
  return manifest
