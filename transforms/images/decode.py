"""One image file's bytes → an upright array in the spec's colour, resized by its policy.

Which decoder, and why: JPEG through simplejpeg (libjpeg-turbo, no Python per pixel and
the GIL released): 3,548 images/s per core on 224 × 224 against Pillow's 2,218 on the
same files and core, whose per-image overhead is larger (docs/guides/images.md). Pillow
decodes the rest (PNG, and GIF, BMP, TIFF, WebP) and the JPEGs simplejpeg does not
(CMYK); pydicom decodes DICOM. Resizing is Pillow's antialiased resampling, in C.

The array returned keeps the image's own range, which `transforms.images.tensors` scales
per batch: uint8 (0-255), uint16 (16-bit, 0-65535), or float32 for DICOM (after the
modality LUT: windowed to [0, 1], or Hounsfield units when the spec has no window).
Every failure raises `ImageError` with a reason code and a reason for the dead letter.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from transforms.images import dicom
from transforms.images.errors import ImageError
from transforms.images.spec import ImageSpec
from transforms.rows.dead_letters import CORRUPT_IMAGE, NOT_AN_IMAGE, TOO_MANY_PIXELS


_JPEG, _PNG = b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n'
_EXIF_ORIENTATION = 0x0112
Image.MAX_IMAGE_PIXELS = None  # the spec's max_pixels bounds every image, checked before decoding


def is_dicom(data: bytes) -> bool:
  return len(data) >= 132 and data[128:132] == b'DICM'


def decode(data: bytes, spec: ImageSpec) -> np.ndarray:
  """The image as [height, width, channels] in the spec's colour, upright, resized; raises ImageError."""
  if is_dicom(data):
    return resize(_to_color(dicom.decode(data, spec.window, spec.max_pixels), spec.decoded_color), spec)
  if data[:3] == _JPEG:
    try:
      return resize(_decode_jpeg(data, spec), spec)
    except _NotForSimplejpeg:
      pass  # Pillow below
  return resize(_decode_pillow(data, spec), spec)


class _NotForSimplejpeg(Exception):
  """A JPEG simplejpeg does not convert (CMYK, YCCK): Pillow decodes it."""


def _check_pixels(height: int, width: int, spec: ImageSpec) -> None:
  if height * width > spec.max_pixels:
    raise ImageError(TOO_MANY_PIXELS, f'the image is {width} × {height} = {height * width:,} pixels, over the bound '
                     f'of {spec.max_pixels:,} (images.json max_pixels): a decompression bomb or a scan too large '
                     'to decode safely')


def _decode_jpeg(data: bytes, spec: ImageSpec) -> np.ndarray:
  import simplejpeg
  try:
    height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
  except ValueError as e:
    raise ImageError(CORRUPT_IMAGE, f'corrupt JPEG: {e}') from None
  if colorspace in ('CMYK', 'YCCK'):
    raise _NotForSimplejpeg()
  _check_pixels(height, width, spec)
  try:
    array = simplejpeg.decode_jpeg(data, colorspace='GRAY' if spec.decoded_color == 'L' else 'RGB', strict=True)
  except ValueError as e:
    raise ImageError(CORRUPT_IMAGE, f'corrupt or truncated JPEG: {e}') from None
  if array.ndim == 2:
    array = array[:, :, None]
  if spec.exif_orientation and b'Exif\x00\x00' in data[:65536]:
    array = _orient(array, _exif_orientation(data))
  return array


def _exif_orientation(data: bytes) -> int:
  try:  # Image.open reads the header only
    return int(Image.open(io.BytesIO(data)).getexif().get(_EXIF_ORIENTATION, 1))
  except Exception:  # pylint: disable=broad-except  # a broken EXIF block leaves the image as stored
    return 1


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
  """The EXIF orientation (1-8) applied, as Pillow's ImageOps.exif_transpose does, without a copy."""
  transposed = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
                5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 1)[::-1],
                8: lambda a: np.rot90(a, 1)}
  return transposed[orientation](array) if orientation in transposed else array


def _decode_pillow(data: bytes, spec: ImageSpec) -> np.ndarray:
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # Pillow warns on odd EXIF and palette transparency; the result is the same
    try:
      image = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
      raise ImageError(NOT_AN_IMAGE, f'not an image: the file starts with {data[:8]!r} (JPEG, PNG, DICOM, GIF, '
                       'BMP, TIFF and WebP are read)') from None
    except Exception as e:  # pylint: disable=broad-except  # each plugin raises its own
      raise ImageError(CORRUPT_IMAGE, f'corrupt {_format_name(data)}: {e}') from None
    _check_pixels(image.height, image.width, spec)
    try:
      image.load()
      if spec.exif_orientation:
        image = ImageOps.exif_transpose(image)
    except Exception as e:  # pylint: disable=broad-except  # truncated data, bad CRC, broken stream
      raise ImageError(CORRUPT_IMAGE, f'corrupt or truncated {image.format or "image"}: {e}') from None
  return _pillow_array(image, spec.decoded_color)


def _pillow_array(image: Image.Image, color: str) -> np.ndarray:
  """Pillow's image as an array in `color`: 16-bit stays 16-bit; palette, CMYK, alpha and the rest convert."""
  if image.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
    array = np.asarray(image)
    array = np.clip(array, 0, 65535).astype(np.uint16) if array.dtype != np.uint16 else array
    return _to_color(array[:, :, None], color)
  if image.mode == 'F':
    return _to_color(np.asarray(image, dtype=np.float32)[:, :, None], color)
  if image.mode != color:
    image = image.convert('RGBA').convert(color) if image.mode == 'P' and color == 'L' else image.convert(color)
  array = np.asarray(image)
  return array[:, :, None] if array.ndim == 2 else array


def _to_color(array: np.ndarray, color: str) -> np.ndarray:
  """A 1- or 3-channel array in `color`: grey repeats to RGB, RGB to grey by ITU-R 601-2 luma, as Pillow's 'L'."""
  channels = array.shape[2]
  if color == 'RGB' and channels == 1:
    return np.repeat(array, 3, axis=2)
  if color == 'L' and channels >= 3:
    luma = array[:, :, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if array.dtype.kind == 'u':
      luma = np.clip(np.rint(luma), 0, np.iinfo(array.dtype).max).astype(array.dtype)
    return luma[:, :, None]
  return array


def _format_name(data: bytes) -> str:
  return 'PNG' if data[:8] == _PNG else 'JPEG' if data[:3] == _JPEG else 'image'


def resize(array: np.ndarray, spec: ImageSpec) -> np.ndarray:
  """The image at the spec's size by its policy: `stretch`, `crop` (shorter side, then centre) or `pad`."""
  policy, size = spec.resize.policy, spec.resize.size
  if policy == 'none':
    return array
  height, width = array.shape[:2]
  target_h, target_w = size
  if policy == 'stretch':
    return _resample(array, target_h, target_w)
  if policy == 'crop':
    short = spec.resize.shorter_side
    scale = short / min(height, width) if short else max(target_h / height, target_w / width)
    new_h, new_w = max(target_h, round(height * scale)), max(target_w, round(width * scale))
    scaled = _resample(array, new_h, new_w)
    top, left = int(round((new_h - target_h) / 2.0)), int(round((new_w - target_w) / 2.0))
    return scaled[top:top + target_h, left:left + target_w]
  scale = min(target_h / height, target_w / width)  # pad
  new_h, new_w = min(target_h, max(1, round(height * scale))), min(target_w, max(1, round(width * scale)))
  scaled = _resample(array, new_h, new_w)
  fill = spec.resize.pad_value * (np.iinfo(array.dtype).max if array.dtype.kind == 'u' else 1.0)
  out = np.full((target_h, target_w, array.shape[2]), fill, dtype=array.dtype)
  top, left = (target_h - new_h) // 2, (target_w - new_w) // 2
  out[top:top + new_h, left:left + new_w] = scaled
  return out


def _resample(array: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear, antialiased (Pillow's resize, as torchvision's antialias=True): uint8 images whole, other
  depths one float channel at a time."""
  if array.shape[:2] == (height, width):
    return array
  if array.dtype == np.uint8 and array.shape[2] in (1, 3):
    image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else np.ascontiguousarray(array))
    out = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
    return out[:, :, None] if out.ndim == 2 else out
  channels = [np.asarray(Image.fromarray(np.ascontiguousarray(array[:, :, c], dtype=np.float32), mode='F').resize(
      (width, height), Image.Resampling.BILINEAR)) for c in range(array.shape[2])]
  out = np.stack(channels, axis=2)
  if array.dtype.kind == 'u':
    out = np.clip(np.rint(out), 0, np.iinfo(array.dtype).max).astype(array.dtype)
  return out


