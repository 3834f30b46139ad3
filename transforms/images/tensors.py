"""Decoded images → the model's tensor, a whole batch at a time: scale, normalise, layout, dtype.

Images of one shape are stacked into one array, and every step after that is one numpy
operation over the batch, never a Python loop over pixels. Images of different shapes
(`"resize": {"policy": "none"}`) make one tensor per shape: a batch never mixes them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from transforms.images.spec import ImageSpec

_TOP = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def shape_groups(images: Sequence[np.ndarray]) -> list[list[int]]:
  """Indices of the images, grouped by shape (and value type), in first-seen order."""
  groups: dict[tuple, list[int]] = {}
  for i, image in enumerate(images):
    groups.setdefault((image.shape, image.dtype.str), []).append(i)
  return list(groups.values())


def to_tensor(images: Sequence[np.ndarray], spec: ImageSpec) -> np.ndarray:
  """One tensor of images of one shape and value type, as the spec says (module docstring)."""
  stacked = np.stack(images)  # [n, h, w, c]
  if spec.color == 'BGR':
    stacked = stacked[..., ::-1]
  top = _TOP.get(stacked.dtype)
  if spec.dtype == 'uint8':
    if stacked.dtype == np.uint16:
      stacked = (stacked >> 8).astype(np.uint8)
    elif stacked.dtype != np.uint8:  # DICOM, windowed to [0, 1]
      stacked = np.clip(np.rint(stacked * 255.0), 0, 255).astype(np.uint8)
  else:
    stacked = stacked.astype(np.float32)
    if top is not None:
      stacked *= np.float32(1.0 / top)
    if spec.mean:
      stacked -= np.asarray(spec.mean, np.float32)
    if spec.std:
      stacked *= np.asarray([1.0 / s for s in spec.std], np.float32)
  if spec.layout == 'NCHW':
    stacked = stacked.transpose(0, 3, 1, 2)
  return np.ascontiguousarray(stacked, dtype=spec.dtype)
