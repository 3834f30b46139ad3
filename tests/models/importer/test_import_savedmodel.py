"""Bring your own model: a SavedModel trained elsewhere, on another dataset, imported and run."""

import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.bundle import ModelBundle
from models.handlers.tensorflow import SavedModelPredictor
from models.importer.command import main as import_main
from pipelines import run as run_job
from transforms.features.spec import FeatureSpec, fit_in_memory
from transforms.rows.validation import validate

pytestmark = pytest.mark.slow

# The user's description of their model's input: unfitted, so the sample fits it.
FEATURES = {'features': [
    {'name': 'Horsepower', 'dtype': 'float', 'steps': [{'kind': 'fill_missing', 'strategy': 'mean'},
                                                       {'kind': 'z_score'}]},
    {'name': 'Weight_in_lbs', 'dtype': 'float', 'steps': [{'kind': 'z_score'}]},
    {'name': 'Origin', 'dtype': 'string', 'steps': [{'kind': 'vocabulary'}, {'kind': 'one_hot'}]},
]}


@pytest.fixture(scope='module')
def cars(tmp_path_factory):
  """The Vega `cars` table (not the penguins) as JSON Lines, and a Keras regressor of fuel economy on it."""
  vega_datasets = pytest.importorskip('vega_datasets')
  import keras
  directory = tmp_path_factory.mktemp('cars')
  with open(vega_datasets.local_data.cars.filepath, encoding='utf-8') as f:
    rows = [dict(r, id=f'car-{i}') for i, r in enumerate(json.load(f)) if r['Miles_per_Gallon'] is not None]
  data = directory / 'cars.jsonl'
  data.write_text(''.join(json.dumps(r) + '\n' for r in rows), encoding='utf-8')

  # The user's own training, outside this project: same statistics the import will fit.
  table = pa.Table.from_pylist(rows).combine_chunks().to_batches()[0]
  table = table.append_column('__source', pa.array(['cars'] * table.num_rows))
  table = table.append_column('__row', pa.array(np.arange(table.num_rows), pa.int64()))
  spec = FeatureSpec.from_dict(FEATURES)
  valid, _ = validate(table, spec)
  fitted = fit_in_memory(spec, [valid])
  x, y = fitted.transform(valid), valid.column('Miles_per_Gallon').to_numpy().astype(np.float32)
  keras.utils.set_random_seed(3)
  model = keras.Sequential([keras.Input(shape=(x.shape[1],)), keras.layers.Dense(8, activation='relu'),
                            keras.layers.Dense(1)])
  model.compile(optimizer=keras.optimizers.Adam(0.05), loss='mse')
  model.fit(x, y, epochs=40, batch_size=32, verbose=0)
  model.export(str(directory / 'user_model'), format='tf_saved_model', verbose=False)
  (directory / 'features.json').write_text(json.dumps(FEATURES))
  (directory / 'outputs.json').write_text(json.dumps({'kind': 'regression'}))
  return directory, rows


def _import(directory, output, *extra) -> int:
  return import_main([f'--saved_model={directory / "user_model"}', f'--features={directory / "features.json"}',
                      f'--outputs={directory / "outputs.json"}', '--name=car-mpg', '--version=7',
                      f'--output={output}', *extra])


def test_import__fits_checks_and_runs_in_the_pipeline(cars, tmp_path, capsys):
  directory, rows = cars
  bundle_dir = tmp_path / 'bundle'
  assert _import(directory, bundle_dir, f'--data={directory / "cars.jsonl"}') == 0
  assert 'smoke-tested on the sample' in capsys.readouterr().out

  bundle = ModelBundle.load(str(bundle_dir))
  assert (bundle.name, bundle.version, bundle.outputs.kind) == ('car-mpg', '7', 'regression')
  assert bundle.features.output_names == ['Horsepower', 'Weight_in_lbs', 'Origin=USA', 'Origin=Japan',
                                          'Origin=Europe', 'Origin=<oov0>']
  stats = bundle.training_statistics['features']
  assert stats['Horsepower']['missing_rate'] == pytest.approx(6 / len(rows))  # six cars lack horsepower
  assert set(stats['Origin']['frequencies']) == {'USA', 'Japan', 'Europe'}

  summary = run_job.run([f'--input={directory / "cars.jsonl"}', f'--model={bundle_dir}',
                         f'--output={tmp_path / "out"}', '--run_id=cars', '--key_column=id'])
  assert summary.rows_read == len(rows) == summary.rows_predicted and summary.reconciled
  predicted = pq.read_table([os.path.join(summary.output, f) for f in os.listdir(summary.output)
                             if f.startswith('predictions-')][0])
  # The pipeline's scores are the user's model's own, and the model learned something.
  spec = bundle.features
  raw = pa.Table.from_pylist(rows).combine_chunks().to_batches()[0]
  raw = raw.append_column('__source', pa.array(['x'] * raw.num_rows)).append_column(
      '__row', pa.array(np.arange(raw.num_rows), pa.int64()))
  valid, _ = validate(raw, spec)
  own = SavedModelPredictor(str(directory / 'user_model')).predict(spec.transform(valid))[:, 0]
  by_id = dict(zip(predicted.column('id').to_pylist(), predicted.column('score').to_pylist()))
  np.testing.assert_allclose([by_id[k] for k in valid.column('id').to_pylist()], own, rtol=1e-5)
  mpg = np.array([r['Miles_per_Gallon'] for r in rows])
  assert np.corrcoef(own, mpg)[0, 1] > 0.8
  assert summary.report and os.path.exists(summary.report)


def test_import__a_description_that_does_not_fit_the_model_is_refused(cars, tmp_path, capsys):
  directory, _ = cars
  narrow = dict(FEATURES, features=FEATURES['features'][:2])  # forgets Origin: 2 inputs, the model takes 6
  (tmp_path / 'narrow.json').write_text(json.dumps(narrow))
  code = import_main([f'--saved_model={directory / "user_model"}', f'--features={tmp_path / "narrow.json"}',
                      f'--outputs={directory / "outputs.json"}', '--name=car-mpg', '--version=7',
                      f'--output={tmp_path / "bad"}', f'--data={directory / "cars.jsonl"}'])
  assert code == 2
  assert 'takes 6 inputs but features.json produces 2' in capsys.readouterr().err
  assert not os.path.exists(tmp_path / 'bad')


def test_import__unfitted_steps_without_a_sample_are_refused(cars, tmp_path, capsys):
  directory, _ = cars
  assert _import(directory, tmp_path / 'b') == 2
  assert 'pass --data' in capsys.readouterr().err


def test_import__a_regressor_is_proven_on_its_own_scores(cars, tmp_path, capsys):
  directory, rows = cars
  bundle_dir = tmp_path / 'proven'
  assert _import(directory, bundle_dir, f'--data={directory / "cars.jsonl"}') == 0
  spec = ModelBundle.load(str(bundle_dir)).features
  raw = pa.Table.from_pylist(rows).combine_chunks().to_batches()[0]
  raw = raw.append_column('__source', pa.array(['x'] * raw.num_rows)).append_column(
      '__row', pa.array(np.arange(raw.num_rows), pa.int64()))
  valid, _ = validate(raw, spec)
  own = SavedModelPredictor(str(directory / 'user_model')).predict(spec.transform(valid))[:, 0]
  scored = [dict(r, score=float(s)) for r, s in zip(valid.drop_columns(['__source', '__row', '__key']).to_pylist(), own)]
  (tmp_path / 'expected.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in scored[:50]))
  capsys.readouterr()
  assert _import(directory, tmp_path / 'b1', f'--data={directory / "cars.jsonl"}',
                 f'--expected={tmp_path / "expected.jsonl"}') == 0
  assert '--expected' in capsys.readouterr().out

  # Scores no vocabulary order explains: the cause names what --data fitted, for the user to compare.
  shifted = [dict(r, score=r['score'] + 1.0) for r in scored[:50]]
  (tmp_path / 'shifted.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in shifted))
  assert _import(directory, tmp_path / 'b2', f'--data={directory / "cars.jsonl"}',
                 f'--expected={tmp_path / "shifted.jsonl"}') == 2
  err = capsys.readouterr().err
  assert '0 of 50 rows agree' in err and re.search(r'shifted\.jsonl:1: score expected [\d.]+, bundle [\d.]+', err)
  assert '--data fitted Horsepower fill_missing, Horsepower z_score, Weight_in_lbs z_score, Origin vocabulary ' \
         '(frequency order); if your model was trained with other values' in err
  assert not os.path.exists(tmp_path / 'b2')
