"""The model as the user trained it, imported unchanged: a whole scikit-learn Pipeline on a DataFrame, its
skl2onnx conversion (one named input per column, strings included), a model fitted on float64, and
scikit-learn's integer class labels; each imported through `python -m models.importer` and run through
the real job."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.bundle import ModelBundle
from pipelines import run as run_job
from testing import frameworks

pytestmark = pytest.mark.slow
skops_io = pytest.importorskip('skops.io')


def _expected(table: pa.Table, probabilities: np.ndarray, classes) -> pa.Table:
  """--expected: the rows with the user's own probabilities, under the job's column names."""
  for k, c in enumerate(classes):
    table = table.append_column(f'probability_{c}', pa.array(probabilities[:, k], pa.float64()))
  return table


def _run(directory, bundle: str, *flags: str):
  summary = run_job.run([f'--input={directory / "input.parquet"}', f'--model={bundle}',
                         f'--output={directory / "out"}', '--key_column=id', '--report=false', *flags])
  predicted = pa.concat_tables([pq.read_table(os.path.join(summary.output, f))
                                for f in sorted(os.listdir(summary.output)) if f.startswith('predictions-')])
  return summary, predicted


def _probabilities(predicted: pa.Table, ids, classes) -> np.ndarray:
  index = {k: i for i, k in enumerate(predicted.column('id').to_pylist())}
  rows = [index[k] for k in ids]
  return np.stack([predicted.column(f'probability_{c}').to_numpy()[rows] for c in classes], axis=1)


@pytest.fixture(scope='module')
def churn(tmp_path_factory):
  """The user's Pipeline, fitted on a DataFrame with nulls in numbers and categories, saved with skops; the
  night's input (with contracts training never saw) and every 4th row with the user's own predict_proba."""
  directory = tmp_path_factory.mktemp('churn')
  train = frameworks.churn_table(3000, seed=1)
  model = frameworks.churn_pipeline().fit(frameworks.churn_frame(train), train.column('churned').to_numpy())
  skops_io.dump(model, str(directory / 'churn.skops'))
  night = frameworks.churn_table(2000, seed=2, unseen=0.05).drop_columns(['churned'])
  pq.write_table(night, directory / 'input.parquet')
  own = model.predict_proba(frameworks.churn_frame(night))
  pq.write_table(_expected(night.take(list(range(0, 2000, 4))), own[::4], model.classes_),
                 directory / 'expected.parquet')
  return directory, model, night, own


def test_pipeline__import_lists_the_types_to_trust_and_refuses_until_trusted(churn, capsys):
  directory, model, _, _ = churn
  outputs = {'kind': 'classification', 'classes': model.classes_.tolist()}
  code = frameworks.import_bundle(str(directory / 'churn.skops'), None, outputs, str(directory / 'untrusted'),
                                  name='churn', version='1', expected=str(directory / 'expected.parquet'))
  err = capsys.readouterr().err
  assert code == 2
  listed = skops_io.get_untrusted_types(file=str(directory / 'churn.skops'))
  assert listed and all(t in err for t in listed)
  assert '--trust ' in err and '--trust_all_listed' in err
  assert not os.path.exists(directory / 'untrusted')


def test_pipeline__imports_unchanged_and_the_job_predicts_as_its_own_predict_proba(churn):
  """No features.json, no refit: the job hands the model a DataFrame of the columns, nulls and unseen
  categories included, and writes what the user's predict_proba says, row for row."""
  directory, model, night, own = churn
  outputs = {'kind': 'classification', 'classes': model.classes_.tolist()}  # integers, as scikit-learn has them
  assert frameworks.import_bundle(
      str(directory / 'churn.skops'), None, outputs, str(directory / 'bundle'), name='churn', version='1',
      expected=str(directory / 'expected.parquet'), flags=['--trust_all_listed', '--metric', 'auc=0.822']) == 0
  bundle = ModelBundle.load(str(directory / 'bundle'))
  assert not os.path.exists(directory / 'bundle' / 'features.json')
  assert json.load(open(directory / 'bundle' / 'inputs.json')) == {'shape': 'table', 'columns': [
      {'name': 'tenure', 'dtype': 'float64', 'nullable': True}, {'name': 'charges', 'dtype': 'float64', 'nullable': True},
      {'name': 'contract', 'dtype': 'string', 'nullable': True}, {'name': 'payment', 'dtype': 'string', 'nullable': True}]}
  assert bundle.metadata['training_metrics'] == {'auc': 0.822}

  summary, predicted = _run(directory, str(directory / 'bundle'), '--run_id=table', '--model_threads=1')

  assert (summary.rows_read, summary.rows_predicted, summary.rows_rejected) == (2000, 2000, 0)
  ids = night.column('id').to_pylist()
  np.testing.assert_allclose(_probabilities(predicted, ids, [0, 1]), own, atol=1e-6)
  index = {k: i for i, k in enumerate(ids)}
  assert predicted.column('predicted_class').to_pylist() == [
      str(model.classes_[own[index[k]].argmax()]) for k in predicted.column('id').to_pylist()]
  manifest = json.load(open(summary.manifest, encoding='utf-8'))
  assert manifest['model_threads'] == {'threads': 1, 'from': '--model_threads'}


def _to_onnx(model, path: str) -> str:
  """skl2onnx's conversion of the whole Pipeline: one [rows, 1] input per column, the numbers float32 (its
  tree converter computes in float32) and the categories strings."""
  from skl2onnx import to_onnx
  from skl2onnx.common.data_types import FloatTensorType, StringTensorType
  types = [(c, FloatTensorType([None, 1])) for c in frameworks.CHURN_NUMBERS]
  types += [(c, StringTensorType([None, 1])) for c in frameworks.CHURN_CATEGORIES]
  onx = to_onnx(model, initial_types=types, options={'zipmap': False}, target_opset={'': 17, 'ai.onnx.ml': 3})
  with open(path, 'wb') as f:
    f.write(onx.SerializeToString())
  return path


def _onnx_feeds(table: pa.Table) -> dict[str, np.ndarray]:
  """The feeds the user's own onnxruntime code gives the graph (a missing category as '')."""
  feeds = {c: table.column(c).to_numpy().astype(np.float32).reshape(-1, 1) for c in frameworks.CHURN_NUMBERS}
  feeds.update({c: np.array([v or '' for v in table.column(c).to_pylist()], dtype=object).reshape(-1, 1)
                for c in frameworks.CHURN_CATEGORIES})
  return feeds


def test_onnx__a_multi_input_graph_takes_its_columns_by_name_and_says_which_has_none(churn, capsys):
  pytest.importorskip('skl2onnx')
  import onnxruntime as ort
  directory, model, night, _ = churn
  path = _to_onnx(model, str(directory / 'churn.onnx'))
  own = ort.InferenceSession(path, providers=['CPUExecutionProvider']).run(['probabilities'], _onnx_feeds(night))[0]
  pq.write_table(_expected(night.take(list(range(0, 2000, 4))), own[::4], [0, 1]), directory / 'expected_onnx.parquet')
  outputs = {'kind': 'classification', 'classes': [0, 1]}

  # An inputs.json that forgets a column: the import names the graph input and its type.
  inputs = directory / 'partial_inputs.json'
  inputs.write_text(json.dumps({'shape': 'table', 'columns': [
      {'name': c, 'dtype': 'float32'} for c in frameworks.CHURN_NUMBERS] + [{'name': 'contract', 'dtype': 'string'}]}))
  assert frameworks.import_bundle(path, None, outputs, str(directory / 'onnx_partial'), name='churn-onnx',
                                  version='1', flags=[f'--inputs={inputs}']) == 2
  err = capsys.readouterr().err
  assert 'payment (tensor(string)), which inputs.json declares no column for' in err

  assert frameworks.import_bundle(path, None, outputs, str(directory / 'onnx_bundle'), name='churn-onnx', version='1',
                                  expected=str(directory / 'expected_onnx.parquet')) == 0
  bundle = ModelBundle.load(str(directory / 'onnx_bundle'))
  assert [(c.name, c.dtype) for c in bundle.inputs.columns] == [
      ('tenure', 'float32'), ('charges', 'float32'), ('contract', 'string'), ('payment', 'string')]

  summary, predicted = _run(directory, str(directory / 'onnx_bundle'), '--run_id=onnx')

  assert (summary.rows_predicted, summary.rows_rejected) == (2000, 0)
  np.testing.assert_allclose(_probabilities(predicted, night.column('id').to_pylist(), [0, 1]), own, atol=1e-6)


def _one_column(directory, x: np.ndarray) -> pa.Table:
  table = pa.table({'id': [f'r{i}' for i in range(len(x))], 'x': x})
  pq.write_table(table, directory / 'input.parquet')
  return table


def test_float64__a_model_fitted_on_float64_is_fed_float64__and_float32_is_named_as_the_cause(tmp_path, capsys):
  """Values a float32 cannot tell apart (about eight between 1 and 1 + 1e-6) that the model split on."""
  from sklearn.ensemble import HistGradientBoostingClassifier
  rng = np.random.default_rng(3)
  x = 1.0 + rng.random(2000) * 1e-6
  model = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(x.reshape(-1, 1), (x > 1 + 5e-7).astype(int))
  table = _one_column(tmp_path, x)
  own = model.predict_proba(x.reshape(-1, 1))
  pq.write_table(_expected(table.slice(0, 500), own[:500], [0, 1]), tmp_path / 'expected.parquet')
  skops_io.dump(model, str(tmp_path / 'model.skops'))
  features, outputs = {'features': [{'name': 'x', 'dtype': 'float'}]}, {'kind': 'classification', 'classes': [0, 1]}
  float32 = tmp_path / 'float32.json'
  float32.write_text(json.dumps({'shape': 'matrix', 'dtype': 'float32'}))

  assert frameworks.import_bundle(str(tmp_path / 'model.skops'), features, outputs, str(tmp_path / 'as_float32'),
                                  name='tiny', version='1', expected=str(tmp_path / 'expected.parquet'),
                                  flags=['--trust_all_listed', f'--inputs={float32}']) == 2
  err = capsys.readouterr().err
  assert 'float32 casting' in err and '"dtype": "float64"' in err

  assert frameworks.import_bundle(str(tmp_path / 'model.skops'), features, outputs, str(tmp_path / 'bundle'),
                                  name='tiny', version='1', expected=str(tmp_path / 'expected.parquet'),
                                  flags=['--trust_all_listed']) == 0
  assert ModelBundle.load(str(tmp_path / 'bundle')).inputs.dtype == 'float64'  # scikit-learn's own
  summary, predicted = _run(tmp_path, str(tmp_path / 'bundle'), '--run_id=float64')
  assert summary.rows_predicted == 2000
  np.testing.assert_allclose(_probabilities(predicted, table.column('id').to_pylist(), [0, 1]), own, atol=1e-6)


def test_integer_classes__scikit_learns_own_labels_import_and_every_run_writes_them_as_text(tmp_path):
  """`"classes": [0, 1, 2]`, as `classes_` has them: once the import passed and every run failed in Format."""
  from sklearn.linear_model import LogisticRegression
  rng = np.random.default_rng(4)
  x = rng.normal(size=600)
  labels = np.digitize(x, [-0.5, 0.5])
  model = LogisticRegression().fit(x.reshape(-1, 1), labels)
  _one_column(tmp_path, x)
  skops_io.dump(model, str(tmp_path / 'model.skops'))
  outputs = {'kind': 'classification', 'classes': model.classes_.tolist()}
  assert outputs['classes'] == [0, 1, 2]
  assert frameworks.import_bundle(str(tmp_path / 'model.skops'), {'features': [{'name': 'x', 'dtype': 'float'}]},
                                  outputs, str(tmp_path / 'bundle'), name='ints', version='1',
                                  data=str(tmp_path / 'input.parquet')) == 0

  summary, predicted = _run(tmp_path, str(tmp_path / 'bundle'), '--run_id=ints')

  assert (summary.rows_predicted, summary.rows_rejected) == (600, 0)
  assert predicted.schema.field('predicted_class').type == pa.string()
  by_id = dict(zip(predicted.column('id').to_pylist(), predicted.column('predicted_class').to_pylist()))
  assert [by_id[f'r{i}'] for i in range(600)] == [str(c) for c in model.predict(x.reshape(-1, 1))]
