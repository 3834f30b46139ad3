"""Image models end to end: a glob of image files (local and gs://) or a table naming or holding the images,
through the job, against the model's own answers on images prepared as a user prepares them with Pillow."""

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

from models.bundle import Outputs, write_bundle
from models.inputs import InputContract, Tensor
from pipelines import run as run_job
from pipelines.launcher.resolve import resolve
from testing import images as ti
from testing.saved_models import save_image_model
from transforms.images.prepare import load
from transforms.images.spec import ImageSpec, Resize
from transforms.images.tensors import to_tensor

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLASSES = ('cat', 'dog', 'fish')
SIZES = [(40, 50), (64, 64), (100, 30), (33, 77)]


@pytest.fixture(scope='module')
def stretch_bundle(tmp_path_factory):
  spec = ImageSpec(resize=Resize('stretch', (32, 32)), mean=MEAN, std=STD, layout='NCHW')
  return ti.torch_image_bundle(str(tmp_path_factory.mktemp('stretch')), spec, (None, 3, 32, 32), CLASSES)


def _as_a_user_prepares(path_or_bytes, size=(32, 32)) -> np.ndarray:
  """Pillow's decode and bilinear resize, /255, ImageNet's mean and std, NCHW: a training script's steps."""
  image = Image.open(path_or_bytes if isinstance(path_or_bytes, str) else io.BytesIO(path_or_bytes)).convert('RGB')
  x = np.asarray(image.resize(size[::-1], Image.Resampling.BILINEAR), np.float32) / 255.0
  return ((x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)).transpose(2, 0, 1)[None]


def _predictions(output: str) -> dict:
  table = pads.dataset(output, format='parquet').to_table()
  return {row.pop(table.schema.names[0]): row for row in table.to_pylist()}


def test_glob_of_mixed_sizes__every_image_predicted_as_the_model_answers_on_pillow_prepared_input(
    tmp_path, stretch_bundle):
  bundle, model = stretch_bundle
  paths = ti.write_images(str(tmp_path / 'in'), SIZES, 60) + ti.write_images(str(tmp_path / 'in' / 'more'),
                                                                             [(20, 20)], 10, fmt='PNG')
  result = run_job.run([f'--input={tmp_path}/in/**', f'--model={bundle.path}', f'--output={tmp_path}/out',
                        '--run_id=images'])

  assert (result.rows_read, result.rows_predicted, result.rows_rejected) == (70, 70, 0)
  rows = _predictions(result.output)
  assert set(rows) == set(paths)  # keyed by URI
  for path in paths:
    expected = ti.predict_torch(model, _as_a_user_prepares(path))[0]
    got = np.array([rows[path][f'probability_{c}'] for c in CLASSES])
    assert np.abs(got - expected).max() < 2e-3, path  # JPEG decoders may differ by one level
    assert rows[path]['predicted_class'] == CLASSES[int(np.argmax(got))]


def test_policy_none__images_of_different_sizes_go_to_the_model_in_batches_of_one_shape(tmp_path):
  spec = ImageSpec(layout='NCHW')  # no resize: the model takes any size
  bundle, model = ti.torch_image_bundle(str(tmp_path / 'bundle'), spec, (None, 3, None, None), CLASSES,
                                        dynamic_size=True)
  paths = ti.write_images(str(tmp_path / 'in'), SIZES, 40, fmt='PNG')
  result = run_job.run([f'--input={tmp_path}/in/*.png', f'--model={bundle.path}', f'--output={tmp_path}/out',
                        '--max_batch_rows=64'])

  assert (result.rows_predicted, result.rows_rejected) == (40, 0)
  rows = _predictions(result.output)
  for path in paths:
    x = np.asarray(Image.open(path).convert('RGB'), np.float32).transpose(2, 0, 1)[None] / 255.0
    got = np.array([rows[path][f'probability_{c}'] for c in CLASSES])
    assert np.abs(got - ti.predict_torch(model, x)[0]).max() < 1e-5


def test_bad_images__each_a_dead_letter_keyed_by_its_uri_with_its_reason(tmp_path, stretch_bundle,
                                                                          read_dead_letters):
  bundle, _ = stretch_bundle
  good = ti.write_images(str(tmp_path / 'in'), SIZES, 8)
  jpeg = ti.encode(ti.natural_image(64, 64, seed=9))
  bomb = io.BytesIO()
  Image.new('1', (20000, 20000)).save(bomb, 'PNG')
  bad = {'truncated.jpg': ('corrupt_image', jpeg[:300]), 'half.png': ('corrupt_image', ti.encode(
      ti.natural_image(64, 64, seed=9), 'PNG')[:2000]), 'notes.jpg': ('not_an_image', b'plain text, no image'),
         'bomb.png': ('too_many_pixels', bomb.getvalue()),
         'report.dcm': ('unsupported_image', ti.dicom_bytes(np.zeros((4, 4), np.int16), pixel_data=False))}
  for name, (_, data) in bad.items():
    (tmp_path / 'in' / name).write_bytes(data)
  # A table naming the images, one of which is gone: its row is a dead letter too, keyed by its URI.
  uris = good + [str(tmp_path / 'in' / n) for n in bad] + [str(tmp_path / 'in' / 'gone.jpg')]
  pq.write_table(pa.table({'uri': uris, 'patient': [f'p{i}' for i in range(len(uris))]}), tmp_path / 'list.parquet')
  result = run_job.run([f'--input={tmp_path}/list.parquet', f'--model={bundle.path}', f'--output={tmp_path}/out',
                        '--passthrough_columns=patient', '--max_rejected_fraction=0.6'])

  assert (result.rows_read, result.rows_predicted, result.rows_rejected) == (14, 8, 6)
  letters = {d['key']: d for d in read_dead_letters(result.dead_letter)}
  expected = {str(tmp_path / 'in' / n): code for n, (code, _) in bad.items()}
  expected[str(tmp_path / 'in' / 'gone.jpg')] = 'unreadable_file'
  assert {k: d['reason_code'] for k, d in letters.items()} == expected
  assert all(d['stage'] == 'decode' and d['reason'] for d in letters.values())
  assert 'does not exist' in letters[str(tmp_path / 'in' / 'gone.jpg')]['reason']
  assert {r['patient'] for r in _predictions(result.output).values()} == {f'p{i}' for i in range(8)}


def test_table_of_image_bytes__keyed_by_its_key_column_and_the_bytes_not_copied_out(tmp_path, stretch_bundle):
  bundle, model = stretch_bundle
  blobs = [ti.encode(ti.natural_image(h, w, seed=i)) for i, (h, w) in enumerate(SIZES * 3)] + [b'', b'junk']
  ids = list(range(100, 100 + len(blobs)))
  pq.write_table(pa.table({'id': ids, 'scan': pa.array(blobs, pa.binary())}), tmp_path / 'scans.parquet')
  result = run_job.run([f'--input={tmp_path}/scans.parquet', f'--model={bundle.path}', f'--output={tmp_path}/out',
                        '--image_column=scan', '--key_column=id', '--max_rejected_fraction=0.2'])

  assert (result.rows_read, result.rows_predicted, result.rows_rejected) == (14, 12, 2)
  rows = _predictions(result.output)
  assert 'scan' not in next(iter(rows.values()))
  for key, blob in zip(ids[:12], blobs[:12]):
    got = np.array([rows[key][f'probability_{c}'] for c in CLASSES])
    assert np.abs(got - ti.predict_torch(model, _as_a_user_prepares(blob))[0]).max() < 2e-3


@pytest.mark.slow
def test_gs_glob__images_on_cloud_storage_are_listed_read_and_predicted(tmp_path, gcs_prefix, stretch_bundle):
  bundle, _ = stretch_bundle
  local = ti.write_images(str(tmp_path / 'in'), SIZES, 24)
  for path in local:
    with FileSystems.create(f'{gcs_prefix}/scans/{os.path.basename(path)}') as f:
      f.write(open(path, 'rb').read())
  with FileSystems.create(f'{gcs_prefix}/scans/broken.jpg') as f:
    f.write(b'\xff\xd8\xff broken')
  result = run_job.run([f'--input={gcs_prefix}/scans/*.jpg', f'--model={bundle.path}', f'--output={tmp_path}/out',
                        '--max_rejected_fraction=0.1'])
  assert (result.rows_read, result.rows_predicted, result.rows_rejected) == (25, 24, 1)
  assert set(_predictions(result.output)) == {f'{gcs_prefix}/scans/{os.path.basename(p)}' for p in local}


@pytest.mark.slow
def test_bigquery_object_table__uris_on_cloud_storage_keyed_by_uri_with_passthrough(
    tmp_path, gcs_prefix, bq_client, bq_dataset, stretch_bundle):
  from google.cloud import bigquery
  from testing.cloud_fixtures import BUCKET
  bundle, model = stretch_bundle
  uris = []
  for i, (h, w) in enumerate(SIZES * 3):
    uris.append(f'{gcs_prefix}/studies/s{i % 4}/img-{i:03d}.jpg')
    with FileSystems.create(uris[-1]) as f:
      f.write(ti.encode(ti.natural_image(h, w, seed=40 + i)))
  table = f'{bq_dataset}.scans'
  bq_client.create_table(bigquery.Table(table, schema=[bigquery.SchemaField('uri', 'STRING', mode='REQUIRED'),
                                                       bigquery.SchemaField('study', 'STRING')]))
  assert bq_client.insert_rows_json(table, [{'uri': u, 'study': u.split('/')[-2]} for u in uris]) == []
  result = run_job.run([f'--input=bq://{table}', f'--model={bundle.path}', f'--output={tmp_path}/out',
                        '--key_column=uri', '--passthrough_columns=study', f'--temp_location=gs://{BUCKET}/tmp',
                        '--project=test-project'])
  assert (result.rows_read, result.rows_predicted, result.rows_rejected) == (12, 12, 0)
  rows = _predictions(result.output)
  assert {k: r['study'] for k, r in rows.items()} == {u: u.split('/')[-2] for u in uris}
  with FileSystems.open(uris[5]) as f:
    expected = ti.predict_torch(model, _as_a_user_prepares(f.read()))[0]
  assert np.abs(np.array([rows[uris[5]][f'probability_{c}'] for c in CLASSES]) - expected).max() < 2e-3


def test_image_embeddings_and_top_k__written_as_lists_row_for_row(tmp_path):
  spec = ImageSpec(resize=Resize('crop', (32, 32)), layout='NCHW')
  torch.manual_seed(7)
  encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten()).eval()
  (tmp_path / 'emb').mkdir()
  ti.export_torch(encoder, str(tmp_path / 'emb' / 'model.pt2'), np.zeros((1, 3, 32, 32), np.float32))
  inputs = InputContract('tensors', tensors=(Tensor('image', 'float32', (None, 3, 32, 32)),))
  embedder = write_bundle(str(tmp_path / 'emb'), features=None, outputs=Outputs('embedding', dimension=8),
                          name='emb', version='1', inputs=inputs, images=spec, format='torch', model_file='model.pt2')
  classifier, model = ti.torch_image_bundle(str(tmp_path / 'cls'), spec, (None, 3, 32, 32), CLASSES)
  outputs = json.loads((tmp_path / 'cls' / 'outputs.json').read_text())
  (tmp_path / 'cls' / 'outputs.json').write_text(json.dumps({**outputs, 'top_k': 2}))
  paths = ti.write_images(str(tmp_path / 'in'), SIZES, 12)

  embedded = _predictions(run_job.run([f'--input={tmp_path}/in/*.jpg', f'--model={embedder.path}',
                                       f'--output={tmp_path}/out-emb']).output)
  ranked = _predictions(run_job.run([f'--input={tmp_path}/in/*.jpg', f'--model={classifier.path}',
                                     f'--output={tmp_path}/out-cls']).output)
  for path in paths:
    x = to_tensor([load(path, spec)], spec)
    assert np.allclose(embedded[path]['embedding'], ti.predict_torch(encoder, x)[0], atol=1e-5)
    scores = ti.predict_torch(model, x)[0]
    assert ranked[path]['top_classes'] == [CLASSES[i] for i in np.argsort(-scores)[:2]]
    assert np.allclose(ranked[path]['top_probabilities'], np.sort(scores)[::-1][:2], atol=1e-5)


def test_image_model__takes_every_core_its_process_owns(tmp_path, stretch_bundle):
  bundle, _ = stretch_bundle
  ti.write_images(str(tmp_path / 'in'), SIZES, 2)
  plan, _ = resolve(PipelineOptions([f'--input={tmp_path}/in/*.jpg', f'--model={bundle.path}',
                                     f'--output={tmp_path}/out']), check_only=True)
  assert plan.model.spare_core is False and plan.model.handler_arguments['spare_core'] is False
  assert (plan.read_batch_size, plan.model.max_batch_rows) == (1024, 64)


def test_saved_model_image_classifier__nhwc_tensors_by_the_signatures_name(tmp_path):
  spec = ImageSpec(resize=Resize('stretch', (24, 24)), layout='NHWC')
  _, weights = save_image_model(str(tmp_path / 'bundle' / 'saved_model'), 24, 24, len(CLASSES))
  bundle = write_bundle(str(tmp_path / 'bundle'), features=None, outputs=Outputs('classification', classes=CLASSES),
                        name='tf-images', version='1', images=spec,
                        inputs=InputContract('tensors', tensors=(Tensor('image', 'float32', (None, 24, 24, 3)),)))
  paths = ti.write_images(str(tmp_path / 'in'), SIZES, 10, fmt='PNG')
  rows = _predictions(run_job.run([f'--input={tmp_path}/in/*.png', f'--model={bundle.path}',
                                   f'--output={tmp_path}/out']).output)
  for path in paths:
    logits = to_tensor([load(path, spec)], spec).mean(axis=(1, 2)) @ weights
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert np.allclose([rows[path][f'probability_{c}'] for c in CLASSES], expected[0], atol=1e-5)
