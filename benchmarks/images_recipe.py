"""What a user writes to turn JPEG bytes into a ResNet's input, shared by the non-job image variants.

torchvision's ImageNet evaluation transform, without torchvision (it does not
import here): decode to RGB, the shorter side to 256 with Pillow's bilinear
filter, the centre 224×224, values to [0, 1], `(x - mean) / std`, channels first.
The same steps images.json asks of the job (testing/resnet.py `image_spec`), so
every variant does the same work; only who does it, and how, differs.
"""

from __future__ import annotations

import io
import os

import numpy as np

DECODERS = ('simplejpeg', 'pillow')


def decode(data: bytes, decoder: str = 'simplejpeg') -> np.ndarray:
  """JPEG bytes to an H×W×3 uint8 RGB array."""
  if decoder == 'simplejpeg':
    import simplejpeg
    return simplejpeg.decode_jpeg(data, colorspace='RGB')
  if decoder == 'pillow':
    from PIL import Image
    with Image.open(io.BytesIO(data)) as image:
      return np.asarray(image if image.mode == 'RGB' else image.convert('RGB'))
  raise ValueError(f'decoder is one of {DECODERS}, got {decoder!r}')


def preprocess(image: np.ndarray, spec: dict) -> np.ndarray:
  """An H×W×3 uint8 array to the model's 3×H×W float32 input, as images.json `spec` (policy crop) says."""
  from PIL import Image
  height, width = spec['resize']['size']
  shorter = spec['resize'].get('shorter_side') or max(height, width)
  h, w = image.shape[:2]
  scale = shorter / min(h, w)
  size = (max(width, round(w * scale)), max(height, round(h * scale)))  # Pillow's (width, height)
  resized = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
  top, left = int(round((resized.shape[0] - height) / 2)), int(round((resized.shape[1] - width) / 2))  # torchvision's
  crop = resized[top:top + height, left:left + width].astype(np.float32) * np.float32(1 / 255)
  crop -= np.asarray(spec['mean'], np.float32)
  crop /= np.asarray(spec['std'], np.float32)
  return np.ascontiguousarray(crop.transpose(2, 0, 1))


def load_spec(bundle: str) -> dict:
  import json
  with open(os.path.join(bundle, 'images.json'), encoding='utf-8') as f:
    return json.load(f)


def write_predictions(path: str, keys: list[str], probabilities: np.ndarray, classes: list[str]) -> None:
  """One Parquet file: each image's path, its most likely class and that class's probability."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  best = probabilities.argmax(axis=1)
  pq.write_table(pa.table({'path': pa.array(keys, pa.string()),
                           'predicted_class': pa.array([classes[i] for i in best], pa.string()),
                           'predicted_probability': pa.array(probabilities[np.arange(len(best)), best], pa.float32())}),
                 path)


def load_classes(bundle: str) -> list[str]:
  import json
  with open(os.path.join(bundle, 'outputs.json'), encoding='utf-8') as f:
    return list(json.load(f)['classes'])
