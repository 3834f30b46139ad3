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
