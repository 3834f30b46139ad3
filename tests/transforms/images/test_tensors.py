"""A batch of decoded images → the model's tensor: scale by bit depth, normalise, layout, dtype; groups by shape."""

import numpy as np

from transforms.images.spec import ImageSpec
from transforms.images.tensors import shape_groups, to_tensor


def test_to_tensor__scales_normalises_and_lays_out_the_whole_batch():
  images = [np.full((2, 3, 3), v, np.uint8) for v in (0, 51, 255)]
  spec = ImageSpec(mean=(0.5, 0.4, 0.3), std=(0.5, 0.25, 0.1), layout='NCHW')
  out = to_tensor(images, spec)
  assert out.shape == (3, 3, 2, 3) and out.dtype == np.float32 and out.flags['C_CONTIGUOUS']
  assert np.allclose(out[1, :, 0, 0], [(0.2 - 0.5) / 0.5, (0.2 - 0.4) / 0.25, (0.2 - 0.3) / 0.1])
  assert np.allclose(out[2, 0], 1.0)


def test_to_tensor__sixteen_bit_is_scaled_by_its_own_top_and_uint8_models_get_0_to_255():
  deep = [np.full((2, 2, 1), 65535, np.uint16)]
  assert np.allclose(to_tensor(deep, ImageSpec(color='L')), 1.0)
  assert to_tensor(deep, ImageSpec(color='L', dtype='uint8')).max() == 255
  windowed = [np.full((2, 2, 1), 0.5, np.float32)]  # DICOM after its window
  assert to_tensor(windowed, ImageSpec(color='L', dtype='uint8')).max() == 128
  assert np.allclose(to_tensor(windowed, ImageSpec(color='L')), 0.5)


def test_shape_groups__keep_first_seen_order_and_split_by_size_and_depth():
  images = [np.zeros((4, 4, 3), np.uint8), np.zeros((8, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8),
            np.zeros((4, 4, 3), np.uint16)]
  assert shape_groups(images) == [[0, 2], [1], [3]]


def test_bgr__reverses_the_channels_and_the_mean_follows_the_models_order():
  image = np.zeros((1, 1, 3), np.uint8)
  image[0, 0] = (255, 0, 51)  # decoded as RGB
  out = to_tensor([image], ImageSpec(color='BGR', mean=(0.1, 0.0, 0.0)))
  assert np.allclose(out[0, 0, 0], [0.2 - 0.1, 0.0, 1.0])
