"""How a bundle's images become its model's tensor: `images.json`, the image counterpart of features.json.

    {"tensor": "image",
     "color": "RGB",
     "resize": {"policy": "crop", "size": [224, 224], "shorter_side": 256},
     "dicom": {"window": {"center": 40, "width": 400}},
     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
     "layout": "NCHW", "dtype": "float32"}

Each image is decoded, turned upright (EXIF orientation), brought to `color` (RGB: 3
channels; BGR: the same, reversed, as OpenCV reads them; L: 1), resized by the policy, and its values scaled to [0, 1] whatever its bit
depth (8-bit ÷ 255, 16-bit ÷ 65535). A DICOM image goes through its modality LUT
(RescaleSlope and RescaleIntercept: Hounsfield units for CT) and then the window: the one
given here, the file's own (`"window": "file"`), or none (`"window": null`, the values
stay in HU and are not scaled). Then, per batch: `(x - mean) / std`, the layout, the dtype
(a uint8 tensor takes 0-255 and no mean or std).

Resize policies (`size` is [height, width]):
- `stretch`: to `size`, aspect ratio not kept;
- `crop`: the shorter side to `shorter_side` (default: fills `size`), then the centre `size`;
- `pad`: fit inside `size`, aspect kept, the rest filled with `pad_value` (letterbox);
- `none`: as decoded; batches then group images of the same shape, and the tensor's
  height and width in inputs.json are null.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

IMAGES = 'images.json'
COLORS = {'RGB': 3, 'BGR': 3, 'L': 1}
POLICIES = ('stretch', 'crop', 'pad', 'none')
LAYOUTS = ('NHWC', 'NCHW')
DTYPES = ('float32', 'float16', 'uint8')
# Pillow's own bound against decompression bombs (Image.MAX_IMAGE_PIXELS): about a 9459 × 9459 image.
MAX_PIXELS = 89_478_485
EXAMPLE = ('{"tensor": "image", "color": "RGB", "resize": {"policy": "crop", "size": [224, 224]}, '
           '"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "layout": "NCHW", "dtype": "float32"}')


class ImageSpecError(ValueError):
  """images.json is malformed, or disagrees with the tensor it fills."""


@dataclasses.dataclass(frozen=True)
class Resize:
  """How every image comes to the model's height and width (see the module docstring)."""
  policy: str = 'none'
  size: Optional[tuple[int, int]] = None  # [height, width]
  shorter_side: Optional[int] = None  # `crop`: the shorter side before the centre crop (ImageNet's 256 for 224)
  pad_value: float = 0.0  # `pad`: the fill, in the [0, 1] scale

  def __post_init__(self):
    if self.size is not None:
      object.__setattr__(self, 'size', tuple(self.size))
    if self.policy not in POLICIES:
      raise ImageSpecError(f'{IMAGES}: resize policy {self.policy!r} is not one of {", ".join(POLICIES)}')
    if self.policy != 'none' and (self.size is None or len(self.size) != 2
                                  or not all(isinstance(d, int) and d > 0 for d in self.size)):
      raise ImageSpecError(f'{IMAGES}: resize policy {self.policy!r} needs "size": [height, width], two positive '
                           f'integers; got {self.size!r}')
    if self.policy == 'none' and self.size is not None:
      raise ImageSpecError(f'{IMAGES}: resize policy "none" keeps each image\'s size; remove "size" or pick '
                           'stretch, crop or pad')
    if self.shorter_side is not None and (self.policy != 'crop' or self.shorter_side < min(self.size)):
      raise ImageSpecError(f'{IMAGES}: "shorter_side" belongs to the crop policy and is at least the crop\'s '
                           f'smaller side; got {self.shorter_side} for {self.policy} {self.size}')


@dataclasses.dataclass(frozen=True)
class Window:
  """A DICOM VOI window (centre and width, in the units after the modality LUT: HU for CT)."""
  center: float
  width: float

  def __post_init__(self):
    if not self.width >= 1:
      raise ImageSpecError(f'{IMAGES}: a DICOM window\'s width is at least 1, got {self.width}')


@dataclasses.dataclass(frozen=True)
class ImageSpec:
  """A bundle's image preprocessing (module docstring); `tensor` names the inputs.json tensor it fills."""
  tensor: str = 'image'
  color: str = 'RGB'
  resize: Resize = Resize()
  window: Union[Window, str, None] = 'file'  # DICOM: a given window, 'file' (the file's own, none if absent), None
  mean: tuple[float, ...] = ()
  std: tuple[float, ...] = ()
  layout: str = 'NHWC'
  dtype: str = 'float32'
  exif_orientation: bool = True
  max_pixels: int = MAX_PIXELS

  def __post_init__(self):
    object.__setattr__(self, 'mean', tuple(float(m) for m in self.mean))
    object.__setattr__(self, 'std', tuple(float(s) for s in self.std))
    if self.color not in COLORS:
      raise ImageSpecError(f'{IMAGES}: color is one of {", ".join(COLORS)}, got {self.color!r}')
    if self.layout not in LAYOUTS:
      raise ImageSpecError(f'{IMAGES}: layout is one of {", ".join(LAYOUTS)}, got {self.layout!r}')
    if self.dtype not in DTYPES:
      raise ImageSpecError(f'{IMAGES}: dtype is one of {", ".join(DTYPES)}, got {self.dtype!r}')
    for name, values in (('mean', self.mean), ('std', self.std)):
      if values and len(values) not in (1, self.channels):
        raise ImageSpecError(f'{IMAGES}: {name} has {len(values)} values; give one, or one per channel '
                             f'({self.channels} for {self.color})')
    if any(s <= 0 for s in self.std):
      raise ImageSpecError(f'{IMAGES}: every std is positive, got {list(self.std)}')
    if self.dtype == 'uint8' and (self.mean or self.std):
      raise ImageSpecError(f'{IMAGES}: a uint8 tensor takes pixel values 0-255; mean and std need a float dtype')
    if isinstance(self.window, str) and self.window != 'file':
      raise ImageSpecError(f'{IMAGES}: dicom window is {{"center": C, "width": W}}, "file" or null; '
                           f'got {self.window!r}')
    if self.max_pixels < 1:
      raise ImageSpecError(f'{IMAGES}: max_pixels is positive, got {self.max_pixels}')

  @property
  def channels(self) -> int:
    return COLORS[self.color]

  @property
  def decoded_color(self) -> str:
    """The colour images decode to: RGB or L. BGR (OpenCV's order, which many models were trained on) is
    RGB with its channels reversed per batch (`transforms.images.tensors`)."""
    return 'L' if self.color == 'L' else 'RGB'

  def tensor_shape(self) -> tuple[Optional[int], ...]:
    """The tensor's shape this spec produces: [null, H, W, C] or [null, C, H, W] (H, W null for `none`)."""
    height, width = self.resize.size or (None, None)
    if self.layout == 'NCHW':
      return (None, self.channels, height, width)
    return (None, height, width, self.channels)

  def to_dict(self) -> dict[str, Any]:
    resize = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self.resize).items()
              if v is not None and not (k == 'pad_value' and v == 0.0)}
    window = dataclasses.asdict(self.window) if isinstance(self.window, Window) else self.window
    out = {'tensor': self.tensor, 'color': self.color, 'resize': resize, 'dicom': {'window': window},
           'layout': self.layout, 'dtype': self.dtype}
    if self.mean:
      out['mean'] = list(self.mean)
    if self.std:
      out['std'] = list(self.std)
    if not self.exif_orientation:
      out['exif_orientation'] = False
    if self.max_pixels != MAX_PIXELS:
      out['max_pixels'] = self.max_pixels
    return out

  @classmethod
  def from_dict(cls, data: Any) -> 'ImageSpec':
    if not isinstance(data, dict):
      raise ImageSpecError(f'{IMAGES} is a JSON object, e.g. {EXAMPLE}; got {data!r}')
    known = {'tensor', 'color', 'resize', 'dicom', 'mean', 'std', 'layout', 'dtype', 'exif_orientation', 'max_pixels'}
    unknown = sorted(set(data) - known)
    if unknown:
      raise ImageSpecError(f'{IMAGES}: no key {", ".join(map(repr, unknown))}; it takes {", ".join(sorted(known))}, '
                           f'e.g. {EXAMPLE}')
    fields = {k: v for k, v in data.items() if k not in ('resize', 'dicom')}
    try:
      resize = Resize(**data.get('resize', {}))
      dicom = data.get('dicom', {})
      window = dicom.get('window', 'file') if isinstance(dicom, dict) else dicom
      if isinstance(window, dict):
        window = Window(**window)
      return cls(resize=resize, window=window, **fields)
    except TypeError as e:
      raise ImageSpecError(f'{IMAGES}: {e}; e.g. {EXAMPLE}') from None


def json_shape(shape) -> str:
  """A shape as inputs.json writes it: [null, 3, 224, 224]."""
  return '[' + ', '.join('null' if d is None else str(d) for d in shape) + ']'
