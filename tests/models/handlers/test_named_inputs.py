"""Models that take named inputs (models/inputs.py): tensors of rank 3 and more through RunInference,
PyTorch's dict of tensors, a SavedModel signature of several named inputs, and the contract's own checks."""

import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that

from models.bundle import BundleError, ModelBundle, Outputs
from models.handlers import handler_for, load_predictor
from models.inference import Predict, PredictionColumns
from models.inputs import Column, InputContract, InputError
from testing import frameworks
from transforms.rows import dead_letters as dl

IMAGES = {'shape': 'tensors', 'tensors': [{'name': 'image', 'dtype': 'uint8', 'shape': [None, 8, 8, 3]},
                                          {'name': 'mask', 'dtype': 'float32', 'shape': [None, 2]}]}


def _conv_net():
  """A small convolution over uint8 images (rows × 8 × 8 × 3), whose two scores a mask scales."""
  import torch

  class Net(torch.nn.Module):
    def __init__(self):
      super().__init__()
      torch.manual_seed(0)
      self.conv = torch.nn.Conv2d(3, 4, 3)
      self.head = torch.nn.Linear(4, 2)

    def forward(self, image, mask):
      x = self.conv(image.permute(0, 3, 1, 2).float() / 255.0).relu().mean(dim=(2, 3))
      return torch.softmax(self.head(x) * mask, dim=1)
  return Net().eval()


@pytest.fixture(scope='module')
def image_bundle(tmp_path_factory):
  """The conv net exported with torch.export and imported with a `tensors` inputs.json (no features.json)."""
  torch = pytest.importorskip('torch')
  directory = tmp_path_factory.mktemp('images')
  net = _conv_net()
  example = (torch.zeros(4, 8, 8, 3, dtype=torch.uint8), torch.ones(4, 2))
  rows = torch.export.Dim('rows')
  torch.export.save(torch.export.export(net, example, dynamic_shapes={'image': {0: rows}, 'mask': {0: rows}}),
                    str(directory / 'net.pt2'))
  (directory / 'inputs.json').write_text(json.dumps(IMAGES))
  assert frameworks.import_bundle(str(directory / 'net.pt2'), None, {'kind': 'classification', 'classes': ['a', 'b']},
                                  str(directory / 'bundle'), name='images', version='1',
                                  flags=[f'--inputs={directory / "inputs.json"}']) == 0
  return ModelBundle.load(str(directory / 'bundle')), net


def test_tensors__rank_4_images_run_through_the_handler_and_run_inference_as_the_model_answers(image_bundle):
  import torch
  bundle, net = image_bundle
  assert bundle.inputs.shape == 'tensors' and not bundle.inputs.columns
  rng = np.random.default_rng(0)
  elements, own = [], {}
  for part in range(3):
    n = 5 + part
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    mask = rng.random((n, 2)).astype(np.float32)
    keys = [f'p{part}-{i}' for i in range(n)]
    rows = pa.RecordBatch.from_pydict({dl.KEY: keys, dl.SOURCE: ['images'] * n, dl.ROW: list(range(n))})
    elements.append((rows, {'image': images, 'mask': mask}))
    with torch.inference_mode():
      own.update(zip(keys, net(torch.from_numpy(images), torch.from_numpy(mask)).numpy()))
  columns = PredictionColumns(bundle.outputs, 'key', (), bundle.name, bundle.version, 'run-1')

  def check(rows):
    assert sorted(r['key'] for r in rows) == sorted(own)
    for r in rows:
      np.testing.assert_allclose([r['probability_a'], r['probability_b']], own[r['key']], rtol=1e-5, err_msg=r['key'])

  pipeline = test_pipeline.TestPipeline()
  result = (pipeline | beam.Create(elements, reshuffle=False)
            | Predict(handler_for(bundle, max_batch_rows=12, share_across_processes=False), columns))
  assert_that(result['predictions'] | beam.FlatMap(lambda b: b.to_pylist()), check)
  pipeline.run().wait_until_finish()


def test_tensors__the_job_refuses_them_until_an_input_makes_them(image_bundle):
  from models.inputs import ApplyModelInputs
  bundle, _ = image_bundle
  with pytest.raises(InputError, match='no input of the job produces tensors yet'):
    ApplyModelInputs(bundle.features, bundle.inputs)


def test_torch__a_model_taking_one_dict_of_tensors_gets_its_names(tmp_path):
  torch = pytest.importorskip('torch')

  class ByName(torch.nn.Module):
    def forward(self, inputs):
      return torch.softmax(torch.cat([inputs['a'], inputs['b'] * 2], dim=1), dim=1)
  rows = torch.export.Dim('rows')
  example = {'a': torch.zeros(3, 1), 'b': torch.zeros(3, 1)}
  torch.export.save(torch.export.export(ByName(), (example,), dynamic_shapes={'inputs': {'a': {0: rows}, 'b': {0: rows}}}),
                    str(tmp_path / 'm.pt2'))
  table = InputContract('table', columns=(Column('a'), Column('b')))
  predictor = load_predictor('torch', str(tmp_path / 'm.pt2'), Outputs('classification', ('x', 'y')), inputs=table)
  batch = pa.RecordBatch.from_pydict({'a': [0.0, 1.0], 'b': [1.0, 0.0]})
  want = torch.softmax(torch.tensor([[0.0, 2.0], [1.0, 0.0]]), dim=1).numpy()
  np.testing.assert_allclose(predictor.predict(batch), want, rtol=1e-6)
  with pytest.raises(ValueError, match='b \\(tensor\\), which inputs.json declares no column for'):
    load_predictor('torch', str(tmp_path / 'm.pt2'), Outputs('classification', ('x', 'y')),
                   inputs=InputContract('table', columns=(Column('a'),)))


def test_savedmodel__a_signature_of_several_named_inputs_takes_a_table_by_name(tmp_path):
  tf = pytest.importorskip('tensorflow')
  module = tf.Module()

  @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name='tenure'),
                                tf.TensorSpec([None, 1], tf.string, name='contract')])
  def serve(tenure, contract):
    monthly = tf.cast(tf.equal(contract, 'month'), tf.float32)
    return {'probabilities': tf.nn.softmax(tf.concat([tenure * 0.1, monthly], axis=1))}
  tf.saved_model.save(module, str(tmp_path / 'sm'), signatures={'serving_default': serve})
  table = InputContract('table', columns=(Column('tenure', 'float32'), Column('contract', 'string')))
  predictor = load_predictor('saved_model', str(tmp_path / 'sm'), Outputs('classification', ('stay', 'leave')),
                             inputs=table)
  scores = predictor.predict(pa.RecordBatch.from_pydict({'tenure': [10.0, 0.0], 'contract': ['month', None]}))
  want = tf.nn.softmax(tf.constant([[1.0, 1.0], [0.0, 0.0]])).numpy()
  np.testing.assert_allclose(scores, want, rtol=1e-6)
  with pytest.raises(ValueError, match='takes 2 named inputs .*declare them in inputs.json'):
    load_predictor('saved_model', str(tmp_path / 'sm'), Outputs('classification', ('stay', 'leave')))


@pytest.mark.parametrize('contract, message', [
    ({'shape': 'image'}, 'shape must be one of matrix, table, tensors'),
    ({'shape': 'matrix', 'dtype': 'int8'}, "a matrix's dtype is one of float32, float64"),
    ({'shape': 'table'}, 'a table input names its columns'),
    ({'shape': 'table', 'columns': [{'name': 'a', 'dtype': 'int64'}]}, "column 'a' has dtype 'int64'"),
    ({'shape': 'table', 'columns': [{'name': 'a'}, {'name': 'a'}]}, 'names must be distinct'),
    ({'shape': 'tensors', 'tensors': [{'name': 'ids', 'dtype': 'int64', 'shape': [8, 128]}]},
     'first dimension, the rows, is null'),
    ({'shape': 'tensors', 'tensors': [{'name': 'ids', 'dtype': 'int64'}]}, 'a tensor {"name", "dtype", "shape"}'),
    ({'shape': 'table', 'column': []}, "no key 'column'"),
])
def test_contract__malformed_inputs_json_is_refused_saying_what_to_write(contract, message):
  with pytest.raises(InputError, match=message.replace('(', '\\(').replace(')', '\\)').replace('[', '\\[')):
    InputContract.from_dict(contract)


def test_bundle__a_table_model_has_no_features_json_and_xgboost_takes_only_a_matrix(image_bundle, tmp_path):
  import shutil
  bundle, _ = image_bundle
  copy = tmp_path / 'copy'
  shutil.copytree(bundle.path, copy)
  (copy / 'features.json').write_text(json.dumps({'features': [{'name': 'image', 'dtype': 'float'}]}))
  with pytest.raises(BundleError, match='features.json steps are for a model that takes one matrix'):
    ModelBundle.load(str(copy))
  (copy / 'features.json').unlink()
  metadata = json.loads((copy / 'metadata.json').read_text())
  (copy / 'metadata.json').write_text(json.dumps({**metadata, 'format': 'xgboost'}))
  (copy / 'model.ubj').write_bytes(b'')
  with pytest.raises(BundleError, match='a xgboost model takes matrix input, not tensors'):
    ModelBundle.load(str(copy))


def test_model_threads__the_flag_wins_else_each_process_its_cores_less_one_for_the_job():
  from models.handlers.base import available_cores, model_threads
  assert model_threads(3) == 3
  assert model_threads(None, None) == 1  # one process per core, as on Dataflow
  assert model_threads(None, 1) == max(1, available_cores() - 1)
  # An image or text model takes every core its process owns: its decoding runs beside it, off the GIL.
  assert model_threads(None, 1, spare_core=False) == available_cores()
  assert model_threads(None, None, spare_core=False) == 1
