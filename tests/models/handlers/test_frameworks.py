"""A model from each framework, trained here on data scikit-learn ships, imported and run through the job.

For ONNX, PyTorch, XGBoost and scikit-learn alike: `import` writes a checked
bundle, proven with `--expected` on the framework's own probabilities; the
job's predictions equal the framework's own, row for row; a row whose features
overflow float32 (a finite value the validation lets through) becomes a
`model_error` dead letter while its neighbours are predicted; and
`--direct_running_mode=multi_processing` with a shared model answers the same,
while by default two processes take a copy each of these small models, but for PyTorch's.
"""

import json
import os
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from models.bundle import FRAMEWORK_BATCH_ROWS, BundleError, ModelBundle
from pipelines import run as run_job
from pipelines.launcher.resolve import resolve
from pipelines.options import BatchInferenceOptions
from testing import frameworks
from transforms.rows import dead_letters as dl
from transforms.features.spec import FeatureSpec, fit_in_memory
from transforms.rows.validation import validate

pytestmark = pytest.mark.slow

# Finite and below float32's largest value, so validation passes it; its z-score
# over a feature whose standard deviation is below 0.88 is not, in float32.
POISON = 3.0e38


def _dataset(name: str):
  """(table with `id` and float columns, labels, class names, the column with the smallest spread)."""
  from sklearn import datasets
  data = getattr(datasets, f'load_{name}')()
  columns = [re.sub(r'\W+', '_', c).strip('_') for c in data.feature_names]
  table = pa.table({'id': [f'{name}-{i}' for i in range(len(data.target))],
                    **{c: data.data[:, i] for i, c in enumerate(columns)}})
  narrowest = columns[int(np.argmin(data.data.std(axis=0)))]
  return table, data.target, [str(c) for c in data.target_names], narrowest


def _fitted(table: pa.Table, spec: FeatureSpec) -> tuple[FeatureSpec, np.ndarray]:
  """The statistics `import --data` will fit, and the training matrix, as the user would compute them."""
  batch = table.combine_chunks().to_batches()[0]
  batch = batch.append_column(dl.SOURCE, pa.array(['train'] * batch.num_rows)).append_column(
      dl.ROW, pa.array(np.arange(batch.num_rows), pa.int64()))
  valid, _ = validate(batch, spec)
  fitted = fit_in_memory(spec, [valid])
  return fitted, fitted.transform(valid)


def _train_onnx(x, y, stem):
  from sklearn.linear_model import LogisticRegression
  path = frameworks.train_onnx(LogisticRegression(max_iter=2000), x, y, f'{stem}.onnx', target_opset=17)

  def own(matrix):
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return session.run(['probabilities'], {session.get_inputs()[0].name: matrix})[0]
  return path, own


def _train_torch(x, y, stem):
  import torch
  path = frameworks.train_torch(x, y, f'{stem}.pt2', classes=int(y.max()) + 1, hidden=16, lr=0.05, epochs=100, seed=0)

  def own(matrix):
    with torch.inference_mode():
      return torch.export.load(path).module()(torch.from_numpy(matrix)).numpy()
  return path, own


def _train_xgboost(x, y, stem):
  import xgboost
  path = frameworks.train_xgboost({'objective': 'binary:logistic', 'max_depth': 3, 'seed': 0}, 20, x, y,
                                  f'{stem}.ubj')

  def own(matrix):
    loaded = xgboost.Booster(model_file=path)
    p = loaded.predict(xgboost.DMatrix(matrix))
    return np.stack([1 - p, p], axis=1)
  return path, own


def _train_sklearn(x, y, stem):
  import skops.io
  from sklearn.ensemble import RandomForestClassifier
  path = frameworks.train_sklearn(RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0), x, y,
                                  f'{stem}.skops')

  def own(matrix):
    return skops.io.load(path, trusted=frameworks.TRUSTED['sklearn']).predict_proba(matrix)
  return path, own


# framework: (dataset, trainer). Wine's and iris's three classes, breast cancer's two.
# A forest's trees are a type skops does not trust by default: the user allows it by name (frameworks.TRUSTED).
FRAMEWORKS = {
    'onnx': ('wine', _train_onnx),
    'torch': ('wine', _train_torch),
    'xgboost': ('breast_cancer', _train_xgboost),
    'sklearn': ('iris', _train_sklearn),
}


@pytest.fixture(scope='module', params=list(FRAMEWORKS))
def imported(request, tmp_path_factory):
  """A model trained on a dataset, its bundle, the job's input (with one poisoned row) and the model's own answers."""
  framework = request.param
  pytest.importorskip({'sklearn': 'skops', 'torch': 'torch', 'onnx': 'skl2onnx', 'xgboost': 'xgboost'}[framework])
  dataset, trainer = FRAMEWORKS[framework]
  directory = tmp_path_factory.mktemp(framework)
  table, labels, classes, narrowest = _dataset(dataset)
  features = {'features': [{'name': c, 'dtype': 'float', 'steps': [{'kind': 'z_score'}]}
                           for c in table.column_names if c != 'id']}
  pq.write_table(table, directory / 'train.parquet')
  spec, x = _fitted(table, FeatureSpec.from_dict(features))
  model_path, own = trainer(x, labels, str(directory / 'user_model'))

  poisoned = table.slice(0, 1).to_pylist()[0]
  poisoned.update({'id': 'poisoned', narrowest: POISON})
  job_input = pa.concat_tables([table, pa.Table.from_pylist([poisoned], schema=table.schema)])
  pq.write_table(job_input, directory / 'input.parquet')

  # --expected: every 5th training row with the framework's own probabilities; the import must reproduce them.
  expected = own(x)
  proof = table.take(list(range(0, len(labels), 5)))
  for k, c in enumerate(classes):
    proof = proof.append_column(f'probability_{c}', pa.array(expected[::5, k], pa.float64()))
  pq.write_table(proof, directory / 'expected.parquet')
  assert frameworks.import_bundle(model_path, features, {'kind': 'classification', 'classes': classes},
                                  str(directory / 'bundle'), name=f'{framework}-{dataset}', version='1',
                                  data=str(directory / 'train.parquet'), expected=str(directory / 'expected.parquet'),
                                  trusted_types=frameworks.TRUSTED.get(framework, ())) == 0
  assert (expected.argmax(axis=1) == labels).mean() > 0.9  # the model learned its data
  return framework, directory, dict(zip(table.column('id').to_pylist(), expected)), classes


def _run(directory, run_id: str, *flags: str):
  summary = run_job.run([f'--input={directory / "input.parquet"}', f'--model={directory / "bundle"}',
                         f'--output={directory / "out"}', f'--run_id={run_id}', '--key_column=id', '--report=false',
                         *flags])
  files = sorted(os.listdir(summary.output))
  predicted = pa.concat_tables([pq.read_table(os.path.join(summary.output, f)) for f in files
                                if f.startswith('predictions-')])
  letters = [json.loads(line) for f in sorted(os.listdir(summary.dead_letter)) if f.startswith('dead_letters-')
             for line in open(os.path.join(summary.dead_letter, f), encoding='utf-8')]
  return summary, predicted, letters


def _scores(predicted: pa.Table, classes) -> dict[str, np.ndarray]:
  matrix = np.stack([predicted.column(f'probability_{c}').to_numpy() for c in classes], axis=1)
  return dict(zip(predicted.column('id').to_pylist(), matrix))


def test_framework__the_job_predicts_what_the_framework_predicts_and_rejects_the_poisoned_row(imported):
  framework, directory, expected, classes = imported
  bundle = ModelBundle.load(str(directory / 'bundle'))
  assert bundle.format == framework

  summary, predicted, letters = _run(directory, 'in-process')

  assert (summary.rows_read, summary.rows_predicted, summary.rows_rejected) == (len(expected) + 1, len(expected), 1)
  assert summary.reconciled
  scores = _scores(predicted, classes)
  assert sorted(scores) == sorted(expected)
  for key, own in expected.items():
    np.testing.assert_allclose(scores[key], own, rtol=1e-5, atol=1e-6, err_msg=key)
  assert predicted.column('predicted_class').to_pylist() == [
      classes[int(np.argmax(expected[k]))] for k in predicted.column('id').to_pylist()]
  assert [(l['key'], l['stage'], l['reason_code']) for l in letters] == [('poisoned', 'predict', dl.MODEL_ERROR)]
  recorded = json.load(open(summary.manifest, encoding='utf-8'))['options']  # the format's batches, as run
  assert recorded['read_batch_size'] == recorded['max_batch_rows'] == FRAMEWORK_BATCH_ROWS
  assert recorded['share_model_across_processes'] is False  # one process: nothing to share

  # The same job across two worker processes, with one model copy shared between them: each batch, and
  # the poisoned row's error, crosses to the model's process and back.
  multi, predicted_mp, letters_mp = _run(directory, 'multi-processing', '--direct_num_workers=2',
                                         '--direct_running_mode=multi_processing', '--share_model_across_processes')
  assert (multi.rows_predicted, multi.rows_rejected) == (summary.rows_predicted, summary.rows_rejected)
  scores_mp = _scores(predicted_mp, classes)
  assert sorted(scores_mp) == sorted(scores)
  for key, value in scores.items():
    np.testing.assert_array_equal(scores_mp[key], value, err_msg=key)
  assert [l['key'] for l in letters_mp] == ['poisoned']
  assert json.load(open(multi.manifest, encoding='utf-8'))['options']['share_model_across_processes'] is True


def test_framework__two_processes__share_a_pytorch_model_and_take_a_copy_each_of_the_others(imported):
  """The defaults measured faster for these small models on CPUs (pipelines/options.py, SHARED_FORMATS)."""
  framework, directory, _, _ = imported
  bundle = ModelBundle.load(str(directory / 'bundle'))
  assert bundle.model_bytes() == os.path.getsize(bundle.model_path)
  options = PipelineOptions([f'--input={directory / "input.parquet"}', f'--model={bundle.path}',
                             f'--output={directory / "out"}', '--direct_num_workers=2',
                             '--direct_running_mode=multi_processing'])
  resolve(options, check_only=True, bundle=bundle, check_model=False)
  assert options.view_as(BatchInferenceOptions).share_model_across_processes is (framework == 'torch')


@pytest.mark.parametrize('imported', ['onnx'], indirect=True)  # the copy is the same for every format
def test_framework__two_processes_with_a_copy_each__answer_as_the_framework_does(imported):
  _, directory, expected, classes = imported
  summary, predicted, letters = _run(directory, 'copy-per-process', '--direct_num_workers=2',
                                     '--direct_running_mode=multi_processing')
  assert json.load(open(summary.manifest, encoding='utf-8'))['options']['share_model_across_processes'] is False
  scores = _scores(predicted, classes)
  assert sorted(scores) == sorted(expected)
  for key, own in expected.items():
    np.testing.assert_allclose(scores[key], own, rtol=1e-5, atol=1e-6, err_msg=key)
  assert [l['key'] for l in letters] == ['poisoned']


def test_model_bytes__sizes_the_file_where_its_path_reads_as_a_pattern_and_names_a_missing_one(imported, tmp_path):
  _, directory, _, _ = imported
  copy = tmp_path / 'models [v1]?'
  shutil.copytree(directory / 'bundle', copy)
  bundle = ModelBundle.load(str(copy))
  assert bundle.model_bytes() == os.path.getsize(bundle.model_path)
  os.remove(bundle.model_path)
  with pytest.raises(BundleError, match='cannot read the size of the model file'):
    bundle.model_bytes()
