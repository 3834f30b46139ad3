"""A DICOM file's pixels as the model sees them: the modality LUT, then the VOI window (PS3.3 C.11).

The modality LUT (RescaleSlope and RescaleIntercept, or a Modality LUT Sequence) turns stored
values into the modality's units: Hounsfield units for CT. The window then maps a range of
those units to [0, 1] by the standard's linear function (C.11.2.1.2.1):

    y = clip(((x - (c - 0.5)) / (w - 1) + 0.5), 0, 1)

with the bundle's centre and width, or the file's own first WindowCenter/WindowWidth
(`"window": "file"`; a file that has none keeps its units, as with `"window": null`).
MONOCHROME1 (white is low) is inverted after the window. Colour DICOM (RGB, YBR, palette)
comes out as RGB in 0-255. pydicom decodes the pixels, with the plugins installed beside it
(Pillow: JPEG baseline and JPEG 2000); any other transfer syntax is a dead letter that names it.
"""

from __future__ import annotations

import io
from typing import Optional, Union

import numpy as np

from transforms.images.errors import ImageError
from transforms.rows.dead_letters import CORRUPT_IMAGE, NOT_AN_IMAGE, TOO_MANY_PIXELS, UNSUPPORTED_IMAGE
from transforms.images.spec import Window


def window(values: np.ndarray, center: float, width: float) -> np.ndarray:
  """The DICOM linear window: units → [0, 1], float32."""
  out = (values.astype(np.float32) - np.float32(center - 0.5)) / np.float32(max(width - 1.0, 1e-6)) + np.float32(0.5)
  return np.clip(out, 0.0, 1.0, out=out)


def decode(data: bytes, spec_window: Union[Window, str, None], max_pixels: int) -> np.ndarray:
  """[rows, columns, channels]: float32 for greyscale (windowed to [0, 1], or in its units), uint8 RGB for colour."""
  import pydicom
  from pydicom.errors import InvalidDicomError
  from pydicom.pixels import apply_color_lut, apply_modality_lut
  try:
    ds = pydicom.dcmread(io.BytesIO(data))
  except InvalidDicomError as e:
    raise ImageError(NOT_AN_IMAGE, f'not a DICOM file: {e}') from None
  except Exception as e:  # pylint: disable=broad-except  # truncated or malformed data elements
    raise ImageError(CORRUPT_IMAGE, f'corrupt DICOM: {type(e).__name__}: {e}') from None
  if not any(tag in ds for tag in ('PixelData', 'FloatPixelData', 'DoubleFloatPixelData')):
    kind = getattr(ds, 'Modality', None) or getattr(ds, 'SOPClassUID', None)
    raise ImageError(UNSUPPORTED_IMAGE, f'DICOM without pixel data ({kind or "no modality"}: e.g. a structured '
                     'report, RT plan or DICOMDIR): nothing to predict on')
  rows, columns = int(getattr(ds, 'Rows', 0)), int(getattr(ds, 'Columns', 0))
  frames = int(getattr(ds, 'NumberOfFrames', 1) or 1)
  if rows * columns * frames > max_pixels:
    raise ImageError(TOO_MANY_PIXELS, f'the DICOM image is {columns} × {rows} × {frames} frame(s) = '
                     f'{rows * columns * frames:,} pixels, over the bound of {max_pixels:,} (images.json max_pixels)')
  if frames > 1:
    raise ImageError(UNSUPPORTED_IMAGE, f'a multi-frame DICOM ({frames} frames): the job predicts one image per '
                     'file; split the frames into files, one per slice')
  syntax = ds.file_meta.get('TransferSyntaxUID') if hasattr(ds, 'file_meta') else None
  try:
    pixels = ds.pixel_array
  except Exception as e:  # pylint: disable=broad-except  # no decoder plugin, or corrupt compressed data
    name = f'{syntax.name} ({syntax})' if syntax is not None else 'unknown transfer syntax'
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    code = UNSUPPORTED_IMAGE if isinstance(e, (NotImplementedError, RuntimeError)) else CORRUPT_IMAGE
    raise ImageError(code, f'cannot decode the DICOM pixels, transfer syntax {name}: {text}') from None
  photometric = str(getattr(ds, 'PhotometricInterpretation', 'MONOCHROME2'))
  if photometric == 'PALETTE COLOR':
    rgb = apply_color_lut(pixels, ds)
    bits = int(ds.RedPaletteColorLookupTableDescriptor[2])  # 8 or 16 bits per entry
    return rgb if rgb.dtype == np.uint8 else _to_uint8(rgb, bits)
  if pixels.ndim == 3:  # RGB, or YBR that pydicom converted to RGB
    return pixels if pixels.dtype == np.uint8 else _to_uint8(pixels, int(ds.BitsStored))
  units = apply_modality_lut(pixels, ds)
  chosen = _window_of(ds, spec_window)
  if chosen is None:
    return units.astype(np.float32)[:, :, None]
  out = window(units, *chosen)
  if photometric == 'MONOCHROME1':
    out = np.subtract(1.0, out, out=out)
  return out[:, :, None]


def _window_of(ds, spec_window: Union[Window, str, None]) -> Optional[tuple[float, float]]:
  if isinstance(spec_window, Window):
    return spec_window.center, spec_window.width
  if spec_window != 'file' or 'WindowCenter' not in ds or 'WindowWidth' not in ds:
    return None
  return _first(ds.WindowCenter), _first(ds.WindowWidth)


def _first(value) -> float:
  """The first of a multi-valued element (a file may list several windows), or the one value."""
  from pydicom.multival import MultiValue
  return float(value[0] if isinstance(value, MultiValue) else value)


def _to_uint8(array: np.ndarray, bits: int) -> np.ndarray:
  """Colour values of `bits` bits as 0-255."""
  return np.clip(np.rint(array * (255.0 / (2 ** bits - 1))), 0, 255).astype(np.uint8)
