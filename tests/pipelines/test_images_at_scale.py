"""20,000 images through the job at once: mixed sizes and formats, DICOM, and every bad kind, each accounted for."""

import io
import os

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image

from pipelines import run as run_job
from testing import images as ti
from transforms.images.spec import ImageSpec, Resize

pytestmark = pytest.mark.slow

GOOD_JPEG, GOOD_PNG, DICOM, EACH_BAD = 18_000, 1_500, 200, 60
SIZES = [(24, 24), (32, 48), (64, 40), (50, 50), (17, 90)]


def _bad_kinds(seed: int) -> dict[str, tuple[str, bytes]]:
  jpeg = ti.encode(ti.natural_image(40, 40, seed=seed))
  bomb = io.BytesIO()
  Image.new('1', (12000, 12000)).save(bomb, 'PNG')
  return {'truncated.jpg': ('corrupt_image', jpeg[:len(jpeg) // 3]),
          'text.png': ('not_an_image', b'not an image ' * 10),
          'bomb.png': ('too_many_pixels', bomb.getvalue()),
          'nopixels.dcm': ('unsupported_image', ti.dicom_bytes(np.zeros((4, 4), np.int16), pixel_data=False))}


def test_20000_images__every_good_one_predicted_every_bad_one_a_dead_letter_with_its_reason(
    tmp_path, read_dead_letters):
  spec = ImageSpec(color='L', resize=Resize('pad', (32, 32)), window=None, layout='NCHW')
  bundle, _ = ti.torch_image_bundle(str(tmp_path / 'bundle'), spec, (None, 1, 32, 32), ('normal', 'flag'))
  folder = tmp_path / 'scans'
  good = ti.write_images(str(folder / 'jpeg'), SIZES, GOOD_JPEG) + ti.write_images(
      str(folder / 'png'), SIZES, GOOD_PNG, fmt='PNG')
  os.makedirs(folder / 'dicom')
  for i in range(DICOM):
    path = folder / 'dicom' / f'ct-{i:04d}.dcm'
    path.write_bytes(ti.dicom_bytes(np.full((20 + i % 7, 30), i, np.int16), intercept=-1024.0))
    good.append(str(path))
  expected_letters = {}
  os.makedirs(folder / 'bad')
  for i in range(EACH_BAD):
    for name, (code, data) in _bad_kinds(i).items():
      path = folder / 'bad' / f'{i:03d}-{name}'
      path.write_bytes(data)
      expected_letters[str(path)] = code

  result = run_job.run([f'--input={folder}/**', f'--model={bundle.path}', f'--output={tmp_path}/out',
                        '--max_rejected_fraction=0.05'])

  total = len(good) + len(expected_letters)
  assert total == 19_940
  assert (result.rows_read, result.rows_predicted, result.rows_rejected) == (total, len(good), len(expected_letters))
  table = pads.dataset(result.output, format='parquet').to_table(columns=['uri', 'predicted_class'])
  assert sorted(table.column('uri').to_pylist()) == sorted(good)  # each once
  letters = read_dead_letters(result.dead_letter)
  assert {d['key']: d['reason_code'] for d in letters} == expected_letters
