"""Decoding alone: JPEG bytes already in memory to RGB arrays, one thread, per decoder and image size.

    python -m benchmarks.images_decode --input 'DIR/*.jpg'

The image variants' rates mix reading, decoding, resizing, the model and
writing; this separates the one step the decoder choice changes. Each decoder
(simplejpeg, Pillow) decodes the same files' bytes (read once, before the clock
starts) in this one process, round after round in alternating order; the rate
is images per second of one core, the median over rounds.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import time
from typing import Callable, Optional

from benchmarks import images_recipe as recipe


def _by_size(paths: list[str], limit: int) -> dict[str, list[bytes]]:
  """Up to `limit` files' bytes per image size (its height × width, read from the header)."""
  from PIL import Image
  groups: dict[str, list[bytes]] = {}
  for path in paths:
    with open(path, 'rb') as f:
      data = f.read()
    with Image.open(path) as image:
      size = f'{image.height}x{image.width}'
    if len(groups.setdefault(size, [])) < limit:
      groups[size].append(data)
  return groups


def measure(paths: list[str], *, decoders: tuple[str, ...] = recipe.DECODERS, rounds: int = 3, limit: int = 200,
            min_seconds: float = 0.5, ours: Optional[Callable[[bytes], object]] = None) -> list[dict]:
  """A row per (decoder, size): images decoded, and the median images/s of one core over `rounds`.

  Each round decodes the group's images at least once and for at least `min_seconds`. `ours`, when
  given, is one more decoder (bytes → array): the job's own, measured the same way.
  """
  decode = {name: (lambda data, name=name: recipe.decode(data, name)) for name in decoders}
  if ours is not None:
    decode['ours'] = ours
  rows = []
  for size, group in sorted(_by_size(paths, limit).items(), key=lambda kv: int(kv[0].split('x')[0])):
    rates: dict[str, list[float]] = {name: [] for name in decode}
    for round_no in range(rounds):
      names = list(decode) if round_no % 2 == 0 else list(reversed(decode))
      for name in names:
        count, start = 0, time.perf_counter()
        while count == 0 or time.perf_counter() - start < min_seconds:
          for data in group:
            decode[name](data)
          count += len(group)
        rates[name].append(count / (time.perf_counter() - start))
    rows += [{'decoder': name, 'size': size, 'images': len(group), 'rounds': rounds,
              'images_per_s_per_core': round(statistics.median(r), 1)} for name, r in rates.items()]
  return rows


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', required=True, help='A glob of JPEG files.')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--limit', type=int, default=200, help='Most images of each size.')
  args = parser.parse_args(argv)
  for row in measure(sorted(glob.glob(args.input)), rounds=args.rounds, limit=args.limit):
    print(json.dumps(row))


if __name__ == '__main__':
  main()
