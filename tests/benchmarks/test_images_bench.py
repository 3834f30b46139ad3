"""The image benchmark end to end at a tiny size: every variant that can run here predicts every image, the
same way as raw-torch, and the table and results name each; and the parts it is built from."""

import json
import os

import numpy as np
import pytest

pytest.importorskip('torch')
pytest.importorskip('simplejpeg')

from benchmarks import images as bench  # noqa: E402
from benchmarks import images_recipe as recipe  # noqa: E402
from testing import image_sets, resnet  # noqa: E402


def test_resnet__both_depths_have_the_published_parameter_counts():
  """He et al.'s (and torchvision's) counts: 11,689,512 for ResNet-18, 25,557,032 for ResNet-50."""
  assert sum(p.numel() for p in resnet.ResNet(18).parameters()) == 11_689_512
  assert sum(p.numel() for p in resnet.ResNet(50).parameters()) == 25_557_032


def test_make_jpegs__made_once_then_reused(tmp_path):
  folder = str(tmp_path / 'jpegs')
  manifest = image_sets.make_jpegs(folder, {224: 3, 64: 2}, workers=1)
  assert manifest['files'] == sorted(f for f in os.listdir(folder) if f.endswith('.jpg'))
  assert manifest['counts'] == {'64': 2, '224': 3}
  assert recipe.decode(open(os.path.join(folder, 's0224-000000.jpg'), 'rb').read()).shape == (224, 224, 3)
  stamp = os.path.getmtime(os.path.join(folder, manifest['files'][0]))
  assert image_sets.make_jpegs(folder, {224: 3, 64: 2}) == manifest
  assert os.path.getmtime(os.path.join(folder, manifest['files'][0])) == stamp
  assert image_sets.make_jpegs(folder, {224: 1})['files'] == ['s0224-000000.jpg']  # another mix starts clean
  assert sorted(os.listdir(folder)) == ['manifest.json', 's0224-000000.jpg']


def test_recipe__preprocesses_as_the_job_does(tmp_path):
  """The user's torchvision-style steps and the job's images.json steps give the same tensor."""
  from transforms.images.decode import decode
  from transforms.images.spec import ImageSpec
  from transforms.images.tensors import to_tensor
  from testing.images import encode, natural_image
  spec = resnet.image_spec()
  data = encode(natural_image(300, 451, seed=5))
  ours = to_tensor([decode(data, ImageSpec.from_dict(spec))], ImageSpec.from_dict(spec))
  theirs = recipe.preprocess(recipe.decode(data), spec)
  np.testing.assert_allclose(np.asarray(ours)[0], theirs, atol=1e-5)


@pytest.mark.slow
def test_bench__every_variant_predicts_every_image_and_the_table_lists_each(tmp_path):
  work = str(tmp_path / 'work')
  args = ['--small=36', '--large=4', '--models=18', '--repeats=1', '--decode_rounds=1', f'--work={work}']
  bench.main(args)
  result = json.load(open(os.path.join(work, 'results.json'), encoding='utf-8'))
  table = open(os.path.join(work, 'results.md'), encoding='utf-8').read()
  ran = [v for v in bench.VARIANTS if v not in result['skipped']]
  assert {'raw-torch', 'beam-textbook', 'ours'} <= set(ran)
  for variant in ran:
    run, = [r for r in result['runs'] if r['variant'] == variant]
    assert run['ok'], run.get('error')
    assert run['images_predicted'] == 40
    assert run['agrees_with_raw'] == 1.0
    assert f'| resnet18 | {variant} | ' in table
  for variant, why in result['skipped'].items():
    assert f'| resnet18 | {variant} | not run: {why} |' in table
  assert {(d['decoder'], d['size']) for d in result['decode']} == {
      (d, s) for d in ('simplejpeg', 'pillow', 'ours') for s in ('224x224', '1024x1024')}
  assert '| decode 224×224, simplejpeg, images/s per core | ≥ 500 |' in table
  assert '| ours / raw-torch, resnet18 | ≥ 0.9× |' in table


def test_gpu_command__raw_on_the_device_asked_for_and_ours_through_the_jobs_device_flag():
  import argparse
  from benchmarks import images_gpu
  args = argparse.Namespace(device='cuda', workers=16, batch=128, ours_flags=['--report=false'])
  raw = images_gpu.command('raw-gpu', 'D/*.jpg', 'B', 'O', args)
  assert raw[1:3] == ['-m', 'benchmarks.images_raw'] and '--device=cuda' in raw and '--workers=16' in raw
  assert '--batch=128' in raw
  ours = images_gpu.command('ours-gpu', 'D/*.jpg', 'B', 'O', args)
  assert ours[1:3] == ['-m', 'pipelines.run'] and '--device=gpu' in ours and '--report=false' in ours
  assert '--input=D/*.jpg' in ours and '--model=B' in ours
  assert '--device=cpu' in images_gpu.command('ours-gpu', 'D', 'B', 'O', argparse.Namespace(
      device='cpu', workers=1, batch=64, ours_flags=[]))
