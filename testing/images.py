"""Images and image models for tests and benchmarks: files written from known arrays, and small CNNs.

Every image is made here from a seeded array (or from scikit-learn's digits, real scans
it ships offline), so a test knows each pixel; every model is built with random or
freshly trained weights and exported the way its framework exports, never downloaded.
"""

from __future__ import annotations

import io
import os
from typing import Optional, Sequence

import numpy as np


def natural_image(height: int, width: int, seed: int, channels: int = 3) -> np.ndarray:
  """A uint8 image with gradients and noise, so JPEG's work is what a photo costs, not a flat field's."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  phase = rng.uniform(0, 6.28, channels)
  base = np.stack([127 + 100 * np.sin(x / (7 + 5 * c) + y / (11 + 3 * c) + phase[c]) for c in range(channels)], -1)
  return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str = 'JPEG', **options) -> bytes:
  """An array as the bytes of an image file (JPEG quality 90 unless told)."""
  from PIL import Image
  if fmt == 'JPEG':
    options.setdefault('quality', 90)
  image = Image.fromarray(array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array)
  buffer = io.BytesIO()
  image.save(buffer, fmt, **options)
  return buffer.getvalue()


def write_images(folder: str, sizes: Sequence[tuple[int, int]], count: int, *, fmt: str = 'JPEG',
                 seed: int = 0, prefix: str = 'img') -> list[str]:
  """`count` images cycling through `sizes` ([height, width]) into `folder`; their paths, in order."""
  os.makedirs(folder, exist_ok=True)
  ext = {'JPEG': '.jpg', 'PNG': '.png'}[fmt]
  paths = []
  for i in range(count):
    height, width = sizes[i % len(sizes)]
    path = os.path.join(folder, f'{prefix}-{i:06d}{ext}')
    with open(path, 'wb') as f:
      f.write(encode(natural_image(height, width, seed + i), fmt))
    paths.append(path)
  return paths


def digits(count: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's handwritten digits (8 × 8 scans, 1,797 of them): uint8 images 0-255, and labels."""
  from sklearn.datasets import load_digits
  data = load_digits()
  images = np.clip(np.rint(data.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
  return images[:count], data.target[:count]


def small_cnn(channels: int, classes: int, *, seed: int = 0, width: int = 8):
  """A seeded PyTorch CNN over NCHW float images of any size: conv, ReLU, global average pool, softmax."""
  import torch
  torch.manual_seed(seed)
  return torch.nn.Sequential(
      torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.ReLU(),
      torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU(),
      torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(width, classes),
      torch.nn.Softmax(dim=1)).eval()


def export_torch(model, path: str, example: np.ndarray, *, dynamic_size: bool = False) -> str:
  """`model` saved with torch.export as a user would (`image` its argument, the rows dynamic); `path`."""
  import torch

  class Named(torch.nn.Module):
    def __init__(self, inner):
      super().__init__()
      self.inner = inner

    def forward(self, image):
      return self.inner(image)

  batch = torch.export.Dim('batch', min=1, max=4096)
  shapes = {0: batch}
  if dynamic_size:
    shapes.update({2: torch.export.Dim('height', min=4, max=4096), 3: torch.export.Dim('width', min=4, max=4096)})
  tensor = torch.from_numpy(np.repeat(example, 2, axis=0))
  program = torch.export.export(Named(model).eval(), (tensor,), dynamic_shapes={'image': shapes})
  torch.export.save(program, path)
  return path


def predict_torch(model, images: np.ndarray) -> np.ndarray:
  """The model's own answers for a tensor, outside the job: what a test compares the job's with."""
  import torch
  with torch.no_grad():
    return model(torch.from_numpy(np.ascontiguousarray(images))).numpy()


def dicom_bytes(pixels: np.ndarray, *, slope: float = 1.0, intercept: float = 0.0,
                window: Optional[tuple[float, float]] = None, photometric: str = 'MONOCHROME2',
                pixel_data: bool = True, transfer_syntax: Optional[str] = None) -> bytes:
  """A single-frame DICOM file of int16 or uint16 `pixels` with the given modality LUT and window."""
  from pydicom.dataset import FileDataset, FileMetaDataset
  from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = CTImageStorage
  meta.MediaStorageSOPInstanceUID = generate_uid()
  meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
  ds = FileDataset(None, {}, file_meta=meta, preamble=b'\0' * 128)
  ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, 'CT'
  ds.PatientID, ds.StudyInstanceUID = 'TEST-0001', generate_uid()
  if pixel_data:
    signed = pixels.dtype == np.int16
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, int(signed)
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
      ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
  buffer = io.BytesIO()
  ds.save_as(buffer, enforce_file_format=True)
  return buffer.getvalue()


def torch_image_bundle(path: str, spec, shape: Sequence[Optional[int]], classes: Sequence[str], *, seed: int = 3,
                       dynamic_size: bool = False):
  """A classifier bundle of `small_cnn` exported with torch.export, taking the one tensor `spec` makes:
  (the loaded bundle, the model itself, to predict outside the job)."""
  from models.bundle import Outputs, write_bundle
  from models.inputs import InputContract, Tensor
  channels = shape[1] if spec.layout == 'NCHW' else shape[3]
  model = small_cnn(channels, len(classes), seed=seed)
  os.makedirs(path, exist_ok=True)
  export_torch(model, os.path.join(path, 'model.pt2'), np.zeros((1, channels, 32, 32), np.float32),
               dynamic_size=dynamic_size)
  bundle = write_bundle(path, features=None, outputs=Outputs('classification', classes=tuple(classes)), name='cnn',
                        version='1', inputs=InputContract('tensors', tensors=(Tensor(spec.tensor, spec.dtype,
                                                                                     tuple(shape)),)),
                        images=spec, format='torch', model_file='model.pt2')
  return bundle, model
