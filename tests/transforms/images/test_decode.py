"""Decoding one image: formats, colour, bit depth, orientation, resize policies, and every bad kind's reason."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from testing.images import encode, natural_image
from transforms.images.decode import ImageError, decode, resize
from transforms.images.prepare import read_bytes
from transforms.images.spec import ImageSpec, Resize

KEEP = ImageSpec()  # RGB, no resize


def test_jpeg__decodes_as_pillow_does_the_same_file():
  data = encode(natural_image(48, 64, seed=1))
  ours = decode(data, KEEP)
  assert ours.shape == (48, 64, 3) and ours.dtype == np.uint8
  assert np.abs(ours.astype(int) - np.asarray(Image.open(io.BytesIO(data)).convert('RGB')).astype(int)).max() <= 1


def test_png__is_lossless_and_grey_repeats_to_rgb():
  pixels = natural_image(20, 30, seed=2)
  assert np.array_equal(decode(encode(pixels, 'PNG'), KEEP), pixels)
  grey = pixels[:, :, :1]
  rgb = decode(encode(grey, 'PNG'), KEEP)
  assert rgb.shape == (20, 30, 3) and np.array_equal(rgb[:, :, 2], grey[:, :, 0])


def test_color_l__converts_rgb_with_pillows_luma():
  pixels = natural_image(16, 16, seed=3)
  grey = decode(encode(pixels, 'PNG'), ImageSpec(color='L'))
  expected = np.asarray(Image.fromarray(pixels).convert('L'))
  assert grey.shape == (16, 16, 1) and np.abs(grey[:, :, 0].astype(int) - expected.astype(int)).max() <= 1


def test_sixteen_bit_png__keeps_its_depth():
  pixels = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 500)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, 'PNG')
  decoded = decode(buffer.getvalue(), ImageSpec(color='L'))
  assert decoded.dtype == np.uint16 and np.array_equal(decoded[:, :, 0], pixels)


def test_palette_and_cmyk__come_out_rgb():
  pixels = natural_image(24, 24, seed=4)
  palette = Image.fromarray(pixels).convert('P', palette=Image.Palette.ADAPTIVE, colors=16)
  buffer = io.BytesIO()
  palette.save(buffer, 'PNG')
  assert np.array_equal(decode(buffer.getvalue(), KEEP), np.asarray(palette.convert('RGB')))
  cmyk = io.BytesIO()
  Image.fromarray(pixels).convert('CMYK').save(cmyk, 'JPEG', quality=95)
  out = decode(cmyk.getvalue(), KEEP)
  assert out.shape == (24, 24, 3) and np.abs(out.astype(int) - pixels.astype(int)).mean() < 12


@pytest.mark.parametrize('orientation', [3, 6, 8])
def test_exif_orientation__turns_the_image_upright_as_pillow_does(orientation):
  pixels = natural_image(20, 40, seed=5)
  image = Image.fromarray(pixels)
  exif = image.getexif()
  exif[0x0112] = orientation
  buffer = io.BytesIO()
  image.save(buffer, 'JPEG', quality=95, exif=exif.tobytes())
  expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert('RGB').transpose(
      {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}[orientation]))
  ours = decode(buffer.getvalue(), KEEP)
  assert ours.shape == expected.shape == ((20, 40, 3) if orientation == 3 else (40, 20, 3))
  assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1
  assert decode(buffer.getvalue(), ImageSpec(exif_orientation=False)).shape == (20, 40, 3)


def test_resize_policies__give_the_size_asked_and_keep_what_each_keeps():
  pixels = np.zeros((40, 80, 3), np.uint8)
  pixels[:, 20:60] = 255  # a white band in the middle of a wide image
  crop = resize(pixels, ImageSpec(resize=Resize('crop', (20, 20))))
  assert crop.shape == (20, 20, 3) and crop[:, 1:-1].min() == 255  # the centre, scaled: the band (edges blend)
  pad = resize(pixels, ImageSpec(resize=Resize('pad', (40, 40))))
  assert pad.shape == (40, 40, 3) and pad[:10].max() == 0 and pad[-10:].max() == 0 and pad[20, 20, 0] == 255
  stretch = resize(pixels, ImageSpec(resize=Resize('stretch', (10, 30))))
  assert stretch.shape == (10, 30, 3)
  imagenet = resize(natural_image(300, 400, seed=6), ImageSpec(resize=Resize('crop', (224, 224), shorter_side=256)))
  assert imagenet.shape == (224, 224, 3)


def test_bad_files__raise_their_reason_codes():
  jpeg = encode(natural_image(64, 64, seed=7))
  png = encode(natural_image(64, 64, seed=7), 'PNG')
  cases = {
      'not_an_image': b'%PDF-1.7 not an image at all',
      'corrupt_image': jpeg[:len(jpeg) // 2],
  }
  for code, data in cases.items():
    with pytest.raises(ImageError) as raised:
      decode(data, KEEP)
    assert raised.value.code == code, str(raised.value)
  with pytest.raises(ImageError, match='truncated|corrupt') as raised:
    decode(png[:len(png) // 2], KEEP)
  assert raised.value.code == 'corrupt_image'


def test_decompression_bomb__is_refused_from_the_header_before_decoding():
  buffer = io.BytesIO()
  Image.new('1', (20000, 20000)).save(buffer, 'PNG')  # 400 M pixels in a few kilobytes
  assert len(buffer.getvalue()) < 200_000
  with pytest.raises(ImageError, match='20000 × 20000 = 400,000,000 pixels') as raised:
    decode(buffer.getvalue(), KEEP)
  assert raised.value.code == 'too_many_pixels'
  with pytest.raises(ImageError) as raised:
    decode(encode(natural_image(64, 64, seed=8)), ImageSpec(max_pixels=1000))
  assert raised.value.code == 'too_many_pixels'


def test_a_file_the_worker_may_not_read__is_unreadable_with_permission_denied(tmp_path):
  secret = tmp_path / 'secret.jpg'
  secret.write_bytes(encode(natural_image(8, 8, seed=1)))
  secret.chmod(0)
  root = os.geteuid() == 0
  if root:  # root reads any file: act as an unprivileged user, as a worker without the grant would be
    os.seteuid(65534)
  try:
    with pytest.raises(ImageError) as raised:
      read_bytes(str(secret))
  finally:
    if root:
      os.seteuid(0)
  assert raised.value.code == 'unreadable_file' and 'permission denied' in str(raised.value)
  assert str(secret) in str(raised.value)
