"""DICOM: the modality LUT to Hounsfield units and the window, exactly, on files written from known arrays;
real files pydicom ships; and the DICOM that cannot be predicted, each with its reason."""

import numpy as np
import pydicom.examples
import pytest
from pydicom.data import get_testdata_file

from testing.images import dicom_bytes
from transforms.images.decode import ImageError, decode
from transforms.images.dicom import window
from transforms.images.spec import ImageSpec, Window

STORED = np.array([[0, 1000, 1024, 1064], [1424, 2000, 3000, 4095]], dtype=np.int16)  # CT stored values
HU = STORED.astype(np.float64) - 1024.0  # slope 1, intercept -1024


def test_modality_lut__gives_hounsfield_units_exactly_when_there_is_no_window():
  data = dicom_bytes(STORED, slope=1.0, intercept=-1024.0)
  out = decode(data, ImageSpec(color='L', window=None))
  assert out.dtype == np.float32 and np.array_equal(out[:, :, 0], HU.astype(np.float32))
  scaled = decode(dicom_bytes(STORED, slope=0.5, intercept=-100.0), ImageSpec(color='L', window=None))
  assert np.array_equal(scaled[:, :, 0], (STORED * 0.5 - 100.0).astype(np.float32))


def test_bundle_window__maps_hu_by_the_standards_linear_function():
  data = dicom_bytes(STORED, slope=1.0, intercept=-1024.0, window=(0, 1))  # the file's own window is ignored
  out = decode(data, ImageSpec(color='L', window=Window(center=40, width=400)))[:, :, 0]
  expected = np.clip((HU - (40 - 0.5)) / (400 - 1) + 0.5, 0, 1)
  assert np.allclose(out, expected, atol=1e-6)
  assert out[0, 0] == 0.0 and out[1, 3] == 1.0  # air, and bone past the window
  assert out[0, 3] == pytest.approx((40 - 39.5) / 399 + 0.5)  # 40 HU, the centre


def test_file_window__is_the_files_own_and_monochrome1_is_inverted():
  data = dicom_bytes(STORED, slope=1.0, intercept=-1024.0, window=(400, 1800))
  out = decode(data, ImageSpec(color='L', window='file'))[:, :, 0]
  assert np.allclose(out, window(HU, 400, 1800))
  inverted = decode(dicom_bytes(STORED, slope=1.0, intercept=-1024.0, window=(400, 1800), photometric='MONOCHROME1'),
                    ImageSpec(color='L', window='file'))[:, :, 0]
  assert np.allclose(inverted, 1.0 - out)
  no_window = decode(dicom_bytes(STORED, slope=1.0, intercept=-1024.0), ImageSpec(color='L', window='file'))
  assert np.array_equal(no_window[:, :, 0], HU.astype(np.float32))  # the file has none: units kept


def test_real_files__ct_mr_colour_and_jpeg2000_decode():
  ct = decode(open(pydicom.examples.ct.filename, 'rb').read(), ImageSpec(color='L', window=None))
  ds = pydicom.examples.ct
  assert ct.shape == (128, 128, 1)
  assert np.allclose(ct[:, :, 0], ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
  mr = decode(open(pydicom.examples.mr.filename, 'rb').read(), ImageSpec(color='L'))
  assert mr.shape == (64, 64, 1) and 0.0 <= mr.min() and mr.max() <= 1.0  # its own window, 600/1600
  rgb = decode(open(pydicom.examples.rgb_color.filename, 'rb').read(), ImageSpec())
  assert rgb.shape == (240, 320, 3) and rgb.dtype == np.uint8
  jpeg2k = decode(open(pydicom.examples.jpeg2k.filename, 'rb').read(), ImageSpec())
  assert jpeg2k.shape == (480, 640, 3)


def test_dicom_that_cannot_be_predicted__each_gives_its_reason():
  def reason(data, spec=ImageSpec(color='L')):
    with pytest.raises(ImageError) as raised:
      decode(data, spec)
    return raised.value.code, str(raised.value)

  code, text = reason(dicom_bytes(STORED, pixel_data=False))
  assert code == 'unsupported_image' and 'without pixel data' in text
  code, text = reason(open(get_testdata_file('MR_small_jpeg_ls_lossless.dcm'), 'rb').read())
  assert code == 'unsupported_image' and 'JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80)' in text
  code, text = reason(open(pydicom.examples.rt_dose.filename, 'rb').read())
  assert code == 'unsupported_image' and 'multi-frame' in text
  code, _ = reason(dicom_bytes(STORED), ImageSpec(color='L', max_pixels=4))
  assert code == 'too_many_pixels'
  code, _ = reason(dicom_bytes(STORED)[:-6])  # pixel data cut short
  assert code == 'corrupt_image'
