"""Folders of synthetic JPEGs for the image benchmark, made once and reused.

    make_jpegs(folder, {224: 50_000, 1024: 2_000})

writes `folder/s0224-000000.jpg` ... (square images of each size, testing/images.py's
`natural_image`: gradients under noise, so decoding costs what a photograph's does, at
quality 90: about 22 KB at 224 × 224, 450 KB at 1024 × 1024) and a manifest.json
listing every file. A folder whose manifest already lists the same counts and seed is
left as it is; images are written by a process per core, as 50,000 of them take minutes.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Optional

from testing.images import encode, natural_image

MANIFEST = 'manifest.json'
SEED = 0


def file_name(size: int, index: int) -> str:
  return f's{size:04d}-{index:06d}.jpg'


def _write(job: tuple[str, int, int, int]) -> str:
  folder, size, index, seed = job
  name = file_name(size, index)
  with open(os.path.join(folder, name), 'wb') as f:
    f.write(encode(natural_image(size, size, seed)))
  return name


def make_jpegs(folder: str, counts: dict[int, int], *, seed: int = SEED, workers: Optional[int] = None) -> dict:
  """`counts[size]` square JPEGs of each size in `folder` (made once); returns the manifest.

  The manifest holds `counts`, `seed`, `files` (the sorted file names) and `bytes`. Each image's
  content depends only on its size, index and `seed`.
  """
  want = {str(size): int(n) for size, n in sorted(counts.items()) if n > 0}
  path = os.path.join(folder, MANIFEST)
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      manifest = json.load(f)
    if manifest.get('counts') == want and manifest.get('seed') == seed:
      return manifest
  os.makedirs(folder, exist_ok=True)
  for name in os.listdir(folder):  # another mix was here: start clean, so a glob sees only these
    if name.endswith('.jpg') or name == MANIFEST:
      os.remove(os.path.join(folder, name))
  jobs = [(folder, int(size), i, seed * 1_000_003 + int(size) * 100_003 + i) for size, n in want.items()
          for i in range(n)]
  with ProcessPoolExecutor(workers or os.cpu_count()) as pool:
    files = sorted(pool.map(_write, jobs, chunksize=64))
  manifest = {'counts': want, 'seed': seed, 'files': files,
              'bytes': sum(os.path.getsize(os.path.join(folder, f)) for f in files)}
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(manifest, f)
  return manifest
