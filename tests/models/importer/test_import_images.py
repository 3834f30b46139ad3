"""Importing an image model: PyTorch (torch.export) and ONNX classifiers, sample JPEGs of several sizes, the user's
own preprocessing in Pillow and numpy as --expected, and a wrong images.json named by the failed proof."""

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from models.bundle import ModelBundle
from models.importer.command import main as import_main
from pipelines import run as run_job
from testing import images as test_images

pytestmark = pytest.mark.slow

torch = pytest.importorskip('torch')
CLASSES = ['cat', 'dog', 'fox']
SIZE = 24
IMAGENET = {'mean': [0.485, 0.456, 0.406], 'std': [0.229, 0.224, 0.225]}
# What the user trained with, images.json's way of saying it.
IMAGES = {'tensor': 'image', 'color': 'RGB', 'resize': {'policy': 'crop', 'size': [SIZE, SIZE]}, **IMAGENET,
          'layout': 'NCHW', 'dtype': 'float32'}


def user_preprocessing(path, *, bgr=False, layout='NCHW'):
  """The user's own code: Pillow reads, scales the shorter side to 24 and crops the centre; numpy normalises."""
  from PIL import Image
  image = Image.open(path).convert('RGB')
  scale = SIZE / min(image.size)
  width, height = max(SIZE, round(image.width * scale)), max(SIZE, round(image.height * scale))
  image = image.resize((width, height), Image.Resampling.BILINEAR)
  left, top = int(round((width - SIZE) / 2.0)), int(round((height - SIZE) / 2.0))
  x = (np.asarray(image.crop((left, top, left + SIZE, top + SIZE)), np.float32) / 255.0 - IMAGENET['mean']) / \
      IMAGENET['std']
  x = x[:, :, ::-1] if bgr else x
  return np.ascontiguousarray(x.transpose(2, 0, 1) if layout == 'NCHW' else x, dtype=np.float32)


@pytest.fixture(scope='module')
def sample(tmp_path_factory):
  folder = tmp_path_factory.mktemp('photos')
  paths = test_images.write_images(str(folder / 'photos'), [(40, 56), (64, 48), (30, 30)], 24, seed=3)
  (folder / 'outputs.json').write_text(json.dumps({'kind': 'classification', 'classes': CLASSES}))
  return folder, paths


def _files(folder, name, model, paths, images, *, bgr=False):
  """The files a user brings: a torch.export program, images.json, and their own predictions as --expected."""
  target = folder / name
  target.mkdir()
  x = np.stack([user_preprocessing(p, bgr=bgr) for p in paths])
  test_images.export_torch(model, str(target / 'model.pt2'), x[:1])
  own = test_images.predict_torch(model, x)
  with open(target / 'expected.jsonl', 'w', encoding='utf-8') as f:
    for path, row in zip(paths, own):
      f.write(json.dumps({'uri': path, **{f'probability_{c}': float(p) for c, p in zip(CLASSES, row)}}) + '\n')
  (target / 'images.json').write_text(json.dumps(images))
  return target, own


def _import(folder, target, images=None, *extra):
  return import_main(['--model', str(target / 'model.pt2'), '--images', str(images or target / 'images.json'),
                      '--outputs', str(folder / 'outputs.json'), '--name', 'animals', '--version', '1',
                      '--output', str(target / 'bundle'), '--expected', str(target / 'expected.jsonl'), *extra])


def test_import__a_pytorch_image_model_reproduces_the_users_predictions_and_the_job_predicts_the_same(
    sample, tmp_path, capsys):
  folder, paths = sample
  target, own = _files(folder, 'good', test_images.small_cnn(3, len(CLASSES), seed=5), paths, IMAGES)
  assert _import(folder, target) == 0, capsys.readouterr().err
  assert '24 of 24 rows agree' in capsys.readouterr().out
  bundle = ModelBundle.load(str(target / 'bundle'))
  assert bundle.images.resize.policy == 'crop' and bundle.images.layout == 'NCHW'
  assert bundle.inputs.to_dict()['tensors'] == [{'name': 'image', 'dtype': 'float32', 'shape': [None, 3, SIZE, SIZE]}]

  # The job, on the same files, predicts what the user's code predicted, image by image.
  assert run_job.main([f'--input={folder}/photos/*.jpg', f'--model={bundle.path}', f'--output={tmp_path}/out']) == 0
  files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / 'out') for f in fs if f.startswith('predictions')]
  table = pq.read_table(files).to_pydict()
  job = {uri: [table[f'probability_{c}'][i] for c in CLASSES] for i, uri in enumerate(table['uri'])}
  assert sorted(job) == sorted(paths)
  np.testing.assert_allclose([job[p] for p in paths], own, atol=1e-4)


WRONG = [
    # (what the user wrote in images.json, as a change of IMAGES; words the diagnosis must say)
    ('channels last', {'layout': 'NHWC'}, ['layout', 'NCHW']),
    ('no mean/std', {'mean': [], 'std': []}, ['mean/std', 'ImageNet', '"mean": [0.485, 0.456, 0.406]']),
    ('0-255 units', {'mean': [123.675, 116.28, 103.53], 'std': [58.395, 57.12, 57.375]}, ['0-255 units']),
    ('stretched', {'resize': {'policy': 'stretch', 'size': [SIZE, SIZE]}}, ['resize policy', '"crop"']),
]


@pytest.mark.parametrize('case,change,words', WRONG, ids=[w[0] for w in WRONG])
def test_import__a_wrong_images_json_is_refused_and_the_failed_proof_names_the_setting(
    sample, tmp_path, capsys, case, change, words):
  folder, paths = sample
  target, _ = _files(folder, f'wrong-{case.replace(" ", "-").replace("/", "-")}',
                     test_images.small_cnn(3, len(CLASSES), seed=5), paths, IMAGES)
  wrong = tmp_path / 'images.json'
  wrong.write_text(json.dumps({k: v for k, v in {**IMAGES, **change}.items() if v != []}))
  assert _import(folder, target, wrong) == 2
  err = capsys.readouterr().err
  for word in words:
    assert word in err, err
  assert not (target / 'bundle').exists()


def test_import__a_model_trained_on_bgr_is_named_as_such(sample, capsys):
  folder, paths = sample
  target, _ = _files(folder, 'bgr', test_images.small_cnn(3, len(CLASSES), seed=5), paths, IMAGES, bgr=True)
  assert _import(folder, target) == 2
  err = capsys.readouterr().err
  assert 'RGB vs BGR' in err and 'cv2.imread' in err, err


def test_import__an_expected_image_the_job_cannot_decode_disagrees_with_its_reason(sample, tmp_path, capsys):
  folder, paths = sample
  target, _ = _files(folder, 'corrupt', test_images.small_cnn(3, len(CLASSES), seed=5), paths, IMAGES)
  broken = tmp_path / 'broken.jpg'
  broken.write_bytes(open(paths[0], 'rb').read()[:200])
  with open(target / 'expected.jsonl', 'a', encoding='utf-8') as f:
    f.write(json.dumps({'uri': str(broken), 'probability_cat': 0.3, 'probability_dog': 0.3, 'probability_fox': 0.4})
            + '\n')
  assert _import(folder, target) == 2
  err = capsys.readouterr().err
  assert f'{broken}: rejected by the bundle (corrupt_image' in err, err
  assert '24 of 25 rows agree' in err


class _ChannelsLast(torch.nn.Module):
  """A model that takes NHWC, as a TensorFlow-trained one converted to ONNX would."""

  def __init__(self, inner):
    super().__init__()
    self.inner = inner

  def forward(self, image):
    return self.inner(image.permute(0, 3, 1, 2))


@pytest.fixture(scope='module')
def onnx_model(sample):
  pytest.importorskip('onnxruntime')
  pytest.importorskip('onnx')
  folder, paths = sample
  target = folder / 'onnx'
  target.mkdir()
  model = _ChannelsLast(test_images.small_cnn(3, len(CLASSES), seed=9)).eval()
  x = np.stack([user_preprocessing(p, layout='NHWC') for p in paths])
  torch.onnx.export(model, (torch.from_numpy(x[:2]),), str(target / 'model.onnx'), input_names=['pixels'],
                    output_names=['probabilities'], dynamic_axes={'pixels': {0: 'batch'}}, dynamo=False)
  own = test_images.predict_torch(model, x)
  with open(target / 'expected.jsonl', 'w', encoding='utf-8') as f:
    for path, row in zip(paths, own):
      f.write(json.dumps({'path': path, 'predicted_class': CLASSES[int(row.argmax())],
                          **{f'probability_{c}': float(p) for c, p in zip(CLASSES, row)}}) + '\n')
  return target


def _import_onnx(folder, target, images, output, capsys):
  (output.parent / 'images.json').write_text(json.dumps(images))
  code = import_main(['--model', str(target / 'model.onnx'), '--images', str(output.parent / 'images.json'),
                      '--outputs', str(folder / 'outputs.json'), '--name', 'animals', '--version', '2',
                      '--output', str(output), '--expected', str(target / 'expected.jsonl'),
                      '--image_column', 'path'])
  return code, capsys.readouterr()


def test_import__an_onnx_model_that_takes_channels_last(sample, onnx_model, tmp_path, capsys):
  folder, _ = sample
  code, out = _import_onnx(folder, onnx_model, {**IMAGES, 'tensor': 'pixels', 'layout': 'NHWC'},
                           tmp_path / 'bundle', capsys)
  assert code == 0, out.err
  assert '24 of 24 rows agree' in out.out
  bundle = ModelBundle.load(str(tmp_path / 'bundle'))
  assert bundle.format == 'onnx' and bundle.inputs.tensors[0].shape == (None, SIZE, SIZE, 3)


@pytest.mark.parametrize('change,words', [({'layout': 'NCHW'}, ['layout: the model takes NHWC', '"layout": "NHWC"']),
                                          ({'tensor': 'image', 'layout': 'NHWC'}, ['"tensor": "pixels"'])])
def test_import__an_onnx_graph_says_which_layout_and_input_name_it_takes(sample, onnx_model, tmp_path, capsys,
                                                                         change, words):
  folder, _ = sample
  code, out = _import_onnx(folder, onnx_model, {**IMAGES, 'tensor': 'pixels', **change}, tmp_path / 'bundle', capsys)
  assert code == 2
  for word in words:
    assert word in out.err, out.err
  assert not (tmp_path / 'bundle').exists()
