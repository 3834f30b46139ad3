"""The model formats' handlers on their own: loading, refusals that say what to do, devices, non-finite answers.

Real models, trained here on scikit-learn's iris data, saved the way each
framework saves them.
"""

import json
import pickle

import numpy as np
import pytest

from models.bundle import BundleError, ModelBundle, Outputs
from models.handlers.base import MatrixModelHandler, NoGpuError, RowFailures
from models.handlers import FORMATS, BundleModelHandler, load_predictor, require_gpu
from models.importer.command import main as import_main
from pipelines import run as run_job

IRIS = Outputs('classification', ('setosa', 'versicolor', 'virginica'))
FEATURES = {'features': [{'name': f'x{i}', 'dtype': 'float', 'steps': [{'kind': 'z_score', 'mean': 0.0, 'std': 1.0}]}
                         for i in range(4)]}


@pytest.fixture(scope='module')
def iris():
  from sklearn.datasets import load_iris
  x, y = load_iris(return_X_y=True)
  return x.astype(np.float32), y


@pytest.fixture(scope='module')
def models(iris, tmp_path_factory):
  """One iris classifier per format, as files: {format: path}; and the scikit-learn estimator itself."""
  import skops.io
  import torch
  import xgboost
  from skl2onnx import to_onnx
  from sklearn.linear_model import LogisticRegression
  x, y = iris
  d = tmp_path_factory.mktemp('models')
  estimator = LogisticRegression(max_iter=1000).fit(x, y)
  skops.io.dump(estimator, d / 'model.skops')
  (d / 'model.onnx').write_bytes(to_onnx(estimator, x[:1], options={'zipmap': False}).SerializeToString())
  xgboost.train({'objective': 'multi:softprob', 'num_class': 3}, xgboost.DMatrix(x, label=y), 5).save_model(
      str(d / 'model.ubj'))
  net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1)).eval()
  example = torch.from_numpy(x[:4])
  torch.export.save(torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim('rows')},)),
                    d / 'model.pt2')
  torch.jit.save(torch.jit.script(net), d / 'model.torchscript.pt')
  torch.save(net, d / 'pickled.pt')
  with open(d / 'model.pkl', 'wb') as f:
    pickle.dump(estimator, f)
  (d / 'features.json').write_text(json.dumps(FEATURES))
  (d / 'outputs.json').write_text(json.dumps(IRIS.to_dict()))
  return {'sklearn': d / 'model.skops', 'onnx': d / 'model.onnx', 'xgboost': d / 'model.ubj',
          'torch': d / 'model.pt2', 'torchscript': d / 'model.torchscript.pt', 'pickled_torch': d / 'pickled.pt',
          'pickle': d / 'model.pkl', 'dir': d, 'estimator': estimator}


def _import(models, model, output, *flags) -> int:
  d = models['dir']
  return import_main([f'--model={model}', f'--features={d / "features.json"}', f'--outputs={d / "outputs.json"}',
                      '--name=iris', '--version=1', f'--output={output}', *flags])


@pytest.mark.parametrize('fmt', ['onnx', 'torch', 'torchscript', 'xgboost', 'sklearn'])
def test_predictor__each_format_answers_a_probability_per_class_and_names_its_device(models, iris, fmt):
  x, _ = iris
  path = str(models[fmt])
  predictor = load_predictor('torch' if fmt == 'torchscript' else fmt, path, IRIS,
                             options={'trusted_types': []} if fmt == 'sklearn' else None)
  out = predictor.predict(x)
  assert out.shape == (len(x), 3) and out.dtype == np.float32
  np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
  assert predictor.device == 'cpu'
  assert predictor.input_width in (4, None)
  if fmt == 'sklearn':
    np.testing.assert_allclose(out, models['estimator'].predict_proba(x), rtol=1e-6)


def test_import__a_pickle_is_refused_with_the_command_that_converts_it(models, tmp_path, capsys):
  assert _import(models, models['pickle'], tmp_path / 'b') == 2
  err = capsys.readouterr().err
  assert 'a pickle runs code when it is loaded' in err and 'skops.io.dump(joblib.load(' in err
  assert not (tmp_path / 'b').exists()


def test_import__a_pickled_torch_module_is_refused_with_how_to_export_it(models, tmp_path, capsys):
  assert _import(models, models['pickled_torch'], tmp_path / 'b') == 2
  err = capsys.readouterr().err
  assert 'a pickled module' in err and 'torch.export.save' in err and 'torch.jit.save' in err


def test_import__skops_types_outside_the_allow_list_need_naming(models, iris, tmp_path, capsys):
  import skops.io
  from sklearn.ensemble import RandomForestClassifier
  x, y = iris
  forest = tmp_path / 'forest.skops'
  skops.io.dump(RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y), forest)
  assert _import(models, forest, tmp_path / 'refused') == 2
  assert '--trust sklearn.tree._tree.Tree' in capsys.readouterr().err
  assert _import(models, forest, tmp_path / 'b', '--trust', 'sklearn.tree._tree.Tree') == 0
  bundle = ModelBundle.load(str(tmp_path / 'b'))
  assert bundle.load_options == {'trusted_types': ['sklearn.tree._tree.Tree']}
  assert bundle.model_path.endswith('model.skops')


@pytest.mark.parametrize('fmt', ['onnx', 'torch', 'torchscript', 'xgboost', 'sklearn'])
def test_import__writes_a_bundle_of_the_format_that_loads_and_checks(models, tmp_path, fmt):
  assert _import(models, models[fmt], tmp_path / 'b') == 0
  bundle = ModelBundle.load(str(tmp_path / 'b'))
  assert bundle.format == ('torch' if fmt == 'torchscript' else fmt)
  assert bundle.metadata['model_file'] in FORMATS[bundle.format].files
  bundle.check_signature()


def _own(models, fmt: str, x: np.ndarray) -> np.ndarray:
  """What the user's own code gets from each framework, called directly (not through the bundle)."""
  path = str(models[fmt])
  if fmt == 'sklearn':
    return models['estimator'].predict_proba(x)
  if fmt == 'onnx':
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    return session.run(['probabilities'], {session.get_inputs()[0].name: x})[0]
  if fmt == 'xgboost':
    import xgboost
    return xgboost.Booster(model_file=path).predict(xgboost.DMatrix(x))
  import torch
  module = torch.export.load(path).module() if fmt == 'torch' else torch.jit.load(path)
  with torch.inference_mode():
    return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize('fmt', ['onnx', 'torch', 'torchscript', 'xgboost', 'sklearn'])
def test_import__expected_proves_each_format_and_diagnoses_a_class_order(models, iris, tmp_path, capsys, fmt):
  """--expected runs the bundle through its own format's framework, and the diagnosis does too."""
  x, _ = iris
  own = _own(models, fmt, x)
  classes = list(IRIS.classes)
  rows = [{**{f'x{i}': float(v) for i, v in enumerate(r)}, **{f'probability_{c}': float(p[k])
          for k, c in enumerate(classes)}} for r, p in zip(x, own)]
  (tmp_path / 'expected.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  capsys.readouterr()
  assert _import(models, models[fmt], tmp_path / 'b', f'--expected={tmp_path / "expected.jsonl"}') == 0
  assert f'--expected {tmp_path / "expected.jsonl"}: 150 of 150 rows agree' in capsys.readouterr().out

  # The same probabilities under classes listed in another order: refused, naming the model's order.
  d = models['dir']
  (tmp_path / 'reversed.json').write_text(json.dumps({'kind': 'classification', 'classes': classes[::-1]}))
  code = import_main([f'--model={models[fmt]}', f'--features={d / "features.json"}',
                      f'--outputs={tmp_path / "reversed.json"}', '--name=iris', '--version=1',
                      f'--output={tmp_path / "refused"}', f'--expected={tmp_path / "expected.jsonl"}'])
  assert code == 2 and not (tmp_path / 'refused').exists()
  assert ('the classes are in another order than the model returns them: the model agrees with "classes": '
          + json.dumps(classes) + ' in outputs.json') in capsys.readouterr().err


def test_check_signature__a_model_of_another_width_is_refused_naming_both(models, tmp_path):
  assert _import(models, models['onnx'], tmp_path / 'b') == 0
  narrower = dict(FEATURES, features=FEATURES['features'][:3])
  (tmp_path / 'b' / 'features.json').write_text(json.dumps(narrower))
  with pytest.raises(BundleError, match='the ONNX model takes 4 inputs but features.json produces 3'):
    ModelBundle.load(str(tmp_path / 'b')).check_signature()
  (tmp_path / 'b' / 'features.json').write_text(json.dumps(FEATURES))
  (tmp_path / 'b' / 'outputs.json').write_text(json.dumps({'kind': 'classification', 'classes': ['a', 'b']}))
  with pytest.raises(BundleError, match='returned 3 values per row; outputs.json describes 2'):
    ModelBundle.load(str(tmp_path / 'b')).check_signature()


def test_load__a_bundle_without_its_model_file_names_it(models, tmp_path):
  assert _import(models, models['xgboost'], tmp_path / 'b') == 0
  (tmp_path / 'b' / 'model.ubj').unlink()
  with pytest.raises(BundleError, match='is missing model.ubj'):
    ModelBundle.load(str(tmp_path / 'b'))
  metadata = json.loads((tmp_path / 'b' / 'metadata.json').read_text())
  (tmp_path / 'b' / 'metadata.json').write_text(json.dumps(dict(metadata, format='caffe')))
  with pytest.raises(BundleError, match="unknown model format 'caffe'; known formats: saved_model, onnx"):
    ModelBundle.load(str(tmp_path / 'b'))


def _has_gpu(fmt: str) -> bool:
  try:
    require_gpu(fmt)
    return True
  except NoGpuError:
    return False


@pytest.mark.parametrize('fmt', ['onnx', 'torch', 'xgboost', 'sklearn'])
def test_device_gpu__loads_on_the_gpu_or_fails_saying_what_to_do(models, fmt):
  handler = BundleModelHandler(str(models[fmt]), fmt=fmt, outputs=IRIS, device='gpu', share_across_processes=False)
  if fmt != 'sklearn' and _has_gpu(fmt):  # a machine with a GPU and the framework's CUDA build
    assert handler.load_model().device.startswith('cuda')
    return
  with pytest.raises(NoGpuError, match='--device=gpu, but') as raised:
    handler.load_model()
  assert {'onnx': 'onnxruntime-gpu', 'torch': 'sees no CUDA device', 'xgboost': 'sees no GPU',
          'sklearn': 'scikit-learn predicts on the CPU only'}[fmt] in str(raised.value)


def test_run__device_gpu_without_a_gpu_stops_before_the_job_with_the_framework_s_reason(models, tmp_path, capsys):
  if _has_gpu('torch'):
    pytest.skip('this machine has a GPU PyTorch can use')  # the test above covers loading on it
  assert _import(models, models['torch'], tmp_path / 'b') == 0
  (tmp_path / 'in.csv').write_text('x0,x1,x2,x3\n1,2,3,4\n')
  code = run_job.main([f'--input={tmp_path / "in.csv"}', f'--model={tmp_path / "b"}',
                       f'--output={tmp_path / "out"}', '--device=gpu'])
  assert code == 2
  assert 'PyTorch' in capsys.readouterr().err and not (tmp_path / 'out').exists()


class _Halves:
  """A model that answers NaN for rows whose first feature is negative: a network's silent failure."""

  def predict(self, features):
    out = np.repeat(features[:, :1], 2, axis=1).astype(np.float32)
    out[features[:, 0] < 0] = np.nan
    return out


class _HalvesHandler(MatrixModelHandler):

  def load_model(self):
    return _Halves()


def test_run_inference__rows_answered_with_nan_fail_alone():
  handler = _HalvesHandler('numpy:halves', share_across_processes=False)
  clean, mixed = np.array([[1.0], [2.0]], np.float32), np.array([[3.0], [-1.0], [4.0]], np.float32)
  first, second = handler.run_inference([clean, mixed], handler.load_model())
  np.testing.assert_array_equal(first.inference, [[1, 1], [2, 2]])
  assert isinstance(second.inference, RowFailures) and list(second.inference.errors) == [1]
  assert 'non-finite values [nan, nan]' in second.inference.errors[1]
  np.testing.assert_array_equal(second.inference.outputs[[0, 2]], [[3, 3], [4, 4]])
