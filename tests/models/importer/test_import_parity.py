"""An import that proves itself: a classifier trained elsewhere, on data no other test uses.

This mirrors the issue's report: a Keras classifier of Seattle's `weather` from precipitation,
temperatures, wind and the month as a category, trained by the user's own code, which numbered the
months 1..12 (not in the frequency order `--data` fits), then imported and run on Parquet.
"""

import csv
import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.bundle import ModelBundle
from models.importer.command import main as import_main
from pipelines import run as run_job
from transforms.features.spec import FeatureSpec

pytestmark = pytest.mark.slow

GUIDE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                     'docs', 'guides', 'own-model.md')
NUMBERS = ('precipitation', 'temp_max', 'temp_min', 'wind')
MONTHS = [str(m) for m in range(1, 13)]  # the user's order: numeric, not frequency
CLASSES = ['drizzle', 'fog', 'rain', 'snow', 'sun']
# 124 rows each for the 31-day months, 120 for the 30-day ones, 113 for February: what `--data` fits.
FREQUENCY_ORDER = ['1', '10', '12', '3', '5', '7', '8', '11', '4', '6', '9', '2']


def _user_matrix(rows, stats):
  """The user's own preprocessing, in numpy: z-scores, then the month one-hot, unseen months last."""
  numbers = [(np.array([r[c] for r in rows], np.float64) - stats[c][0]) / stats[c][1] for c in NUMBERS]
  month = np.zeros((len(rows), len(MONTHS) + 1))
  month[np.arange(len(rows)), [MONTHS.index(r['month']) if r['month'] in MONTHS else 12 for r in rows]] = 1
  return np.column_stack(numbers + [month]).astype(np.float32)


@pytest.fixture(scope='module')
def weather(tmp_path_factory):
  """The Vega `seattle-weather` table, a Keras classifier trained on it, and the user's files."""
  vega_datasets = pytest.importorskip('vega_datasets')
  import keras
  directory = tmp_path_factory.mktemp('weather')
  with open(vega_datasets.local_data.seattle_weather.filepath, encoding='utf-8') as f:
    rows = [{'date': r['date'], **{c: float(r[c]) for c in NUMBERS}, 'month': str(int(r['date'][5:7])),
             'weather': r['weather']} for r in csv.DictReader(f)]
  stats = {c: (float(np.mean([r[c] for r in rows])), float(np.std([r[c] for r in rows]))) for c in NUMBERS}
  x = _user_matrix(rows, stats)
  y = np.array([CLASSES.index(r['weather']) for r in rows])
  keras.utils.set_random_seed(13)
  model = keras.Sequential([keras.Input(shape=(x.shape[1],)), keras.layers.Dense(16, activation='relu'),
                            keras.layers.Dense(len(CLASSES), activation='softmax')])
  model.compile(optimizer=keras.optimizers.Adam(0.02), loss='sparse_categorical_crossentropy')
  model.fit(x, y, epochs=8, batch_size=64, verbose=0)
  model.export(str(directory / 'user_model'), format='tf_saved_model', verbose=False)
  own = model.predict(x, verbose=0)

  # The training sample as a spreadsheet writes it; the job's input as Parquet.
  with open(directory / 'train.csv', 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  pq.write_table(pa.Table.from_pylist(rows), directory / 'days.parquet')
  # --expected: every 7th day with what the user's own code predicted for it.
  sample = range(0, len(rows), 7)
  with open(directory / 'expected.jsonl', 'w', encoding='utf-8') as f:
    for i in sample:
      f.write(json.dumps({**rows[i], 'predicted_class': CLASSES[int(own[i].argmax())],
                          **{f'probability_{c}': float(own[i, k]) for k, c in enumerate(CLASSES)}}) + '\n')
  (directory / 'outputs.json').write_text(json.dumps({'kind': 'classification', 'classes': CLASSES}))
  return directory, rows, stats, own


def _guide_features() -> dict:
  """The features.json example of the bring-your-own-model guide (docs/guides/own-model.md)."""
  with open(GUIDE, encoding='utf-8') as f:
    section = f.read().split('## Describe the model', 1)[1].split('\n## ', 1)[0]
  return json.loads(re.search(r'```json\n(.*?)```', section, re.S).group(1))


def _import(directory, features: dict, output, *extra) -> int:
  (directory / 'features.json').write_text(json.dumps(features))
  return import_main([f'--saved_model={directory / "user_model"}', f'--features={directory / "features.json"}',
                      f'--outputs={directory / "outputs.json"}', '--name=seattle-weather', '--version=1',
                      f'--output={output}', *extra])


def test_guide_example__one_hot_after_a_given_vocabulary_needs_no_depth():
  spec = FeatureSpec.from_dict(_guide_features())
  month = next(f for f in spec.features if f.name == 'month')
  assert [s['kind'] for s in month.to_dict()['steps']] == ['vocabulary', 'one_hot']
  assert 'depth' not in json.dumps(_guide_features())
  assert spec.is_fitted  # every learned value is in the file: it imports without --data
  assert month.output_names == [f'month={m}' for m in MONTHS] + ['month=<oov0>']
  row = pa.RecordBatch.from_pydict({f.name: pa.array([None if f.dtype == 'float' else '3'],
                                                     pa.float64() if f.dtype == 'float' else pa.string())
                                    for f in spec.features})
  assert spec.features[-1].apply(row.column('month')).tolist() == [[0, 0, 1] + [0] * 10]


def test_import__the_users_own_values_and_expected_outputs_pass_and_the_job_predicts_as_keras(
    weather, tmp_path, capsys):
  directory, rows, stats, own = weather
  features = _guide_features()  # the guide's example, with this user's exact statistics
  for feature in features['features']:
    for step in feature['steps']:
      if step['kind'] == 'z_score':
        step['mean'], step['std'] = stats[feature['name']]
  assert [f['name'] for f in features['features']] == [*NUMBERS, 'month']
  bundle_dir = tmp_path / 'bundle'
  assert _import(directory, features, bundle_dir, f'--expected={directory / "expected.jsonl"}') == 0
  out = capsys.readouterr().out
  assert 'every value as given in --features' in out
  assert f'--expected {directory / "expected.jsonl"}: {len(range(0, len(rows), 7))} of' in out
  assert 'month=<oov0>, column 12, is the out-of-vocabulary bucket' in out

  summary = run_job.run([f'--input={directory / "days.parquet"}', f'--model={bundle_dir}',
                         f'--output={tmp_path / "out"}', '--run_id=weather', '--key_column=date'])
  assert summary.reconciled and summary.rows_read == summary.rows_predicted == len(rows)
  predicted = pq.read_table([os.path.join(summary.output, f) for f in sorted(os.listdir(summary.output))
                             if f.startswith('predictions-')]).to_pylist()
  by_date = {r['date']: r for r in predicted}
  for i, row in enumerate(rows):  # the job's probabilities are the Keras model's own, row for row
    got = by_date[row['date']]
    np.testing.assert_allclose([got[f'probability_{c}'] for c in CLASSES], own[i], rtol=1e-5, atol=1e-6)
    assert got['predicted_class'] == CLASSES[int(own[i].argmax())]


def test_import__data_fitting_another_order_is_refused_naming_the_vocabulary(weather, tmp_path, capsys):
  directory, _, _, _ = weather
  unfitted = {'features': [*({'name': c, 'dtype': 'float', 'steps': [{'kind': 'z_score'}]} for c in NUMBERS),
                           {'name': 'month', 'dtype': 'string', 'steps': [{'kind': 'vocabulary'}, {'kind': 'one_hot'}]}]}
  bundle_dir = tmp_path / 'refused'
  code = _import(directory, unfitted, bundle_dir, f'--data={directory / "train.csv"}',
                 f'--expected={directory / "expected.jsonl"}')
  captured = capsys.readouterr()
  assert code == 2 and not os.path.exists(bundle_dir)
  # The fitted order is printed before any check, in the documented order.
  assert 'fitted on --data: precipitation z_score, temp_max z_score, temp_min z_score, wind z_score, ' \
         'month vocabulary (frequency order)' in captured.out
  assert ('vocabulary (12 values, frequency order): '
          + ', '.join(f'"{m}"→{i}' for i, m in enumerate(FREQUENCY_ORDER))) in captured.out
  err = captured.err
  assert 'the bundle does not reproduce your model\'s outputs' in err
  assert re.search(r'expected\.jsonl:\d+: probability_\w+ expected [\d.e-]+, bundle [\d.e-]+', err)
  assert ('vocabulary order differs for `month`: the model agrees when it is ordered numeric ('
          + ', '.join(f'"{m}"' for m in MONTHS) + '); give the vocabulary explicitly in features.json: '
          + json.dumps({'kind': 'vocabulary', 'vocabulary': MONTHS})) in err

  # Fitting in the order the user trained with passes the same check.
  unfitted['features'][-1]['steps'][0]['order'] = 'numeric'
  assert _import(directory, unfitted, tmp_path / 'numeric', f'--data={directory / "train.csv"}',
                 f'--expected={directory / "expected.jsonl"}') == 0
  assert ModelBundle.load(str(tmp_path / 'numeric')).features.features[-1].steps[0].vocabulary == tuple(MONTHS)


def test_import__a_label_column_is_a_sanity_bound(weather, tmp_path, capsys):
  directory, rows, _, own = weather
  unfitted = {'features': [*({'name': c, 'dtype': 'float', 'steps': [{'kind': 'z_score'}]} for c in NUMBERS),
                           {'name': 'month', 'dtype': 'string',
                            'steps': [{'kind': 'vocabulary', 'order': 'numeric'}, {'kind': 'one_hot'}]}]}
  # By default the bundle must beat always guessing the most common label ("rain" or "sun").
  assert _import(directory, unfitted, tmp_path / 'ok', f'--data={directory / "train.csv"}',
                 f'--expected={directory / "train.csv"}', '--expected_label=weather') == 0
  accuracy = np.mean([CLASSES[int(p.argmax())] == r['weather'] for p, r in zip(own, rows)])
  assert f'accuracy {accuracy:.4f} on {len(rows)} labelled rows' in capsys.readouterr().out
  code = _import(directory, unfitted, tmp_path / 'strict', f'--data={directory / "train.csv"}',
                 f'--expected={directory / "train.csv"}', '--expected_label=weather', '--min_accuracy=0.99')
  assert code == 2 and not os.path.exists(tmp_path / 'strict')
  assert 'label ' in capsys.readouterr().err


def test_import__expected_rows_without_any_expected_output_are_refused(weather, tmp_path, capsys):
  directory, *_ = weather
  assert _import(directory, _guide_features(), tmp_path / 'b', f'--expected={directory / "train.csv"}') == 2
  err = capsys.readouterr().err
  assert 'holds no expected output: give `predicted_class` and/or probability columns (probability_drizzle' in err
  assert not os.path.exists(tmp_path / 'b')


def test_import__classes_listed_in_another_order_are_named(weather, tmp_path, capsys):
  directory, _, stats, _ = weather
  features = _guide_features()
  for feature in features['features']:
    for step in feature['steps']:
      if step['kind'] == 'z_score':
        step['mean'], step['std'] = stats[feature['name']]
  (directory / 'outputs.json').write_text(json.dumps({'kind': 'classification', 'classes': sorted(CLASSES)[::-1]}))
  try:
    code = _import(directory, features, tmp_path / 'b', f'--expected={directory / "expected.jsonl"}')
  finally:
    (directory / 'outputs.json').write_text(json.dumps({'kind': 'classification', 'classes': CLASSES}))
  assert code == 2 and not os.path.exists(tmp_path / 'b')
  assert ('the classes are in another order than the model returns them: the model agrees with "classes": '
          + json.dumps(CLASSES) + ' in outputs.json') in capsys.readouterr().err


def test_import__a_keras_style_out_of_vocabulary_id_first_is_found_and_then_accepted(weather, tmp_path, capsys):
  """A user whose code numbered months as Keras' StringLookup does: the unseen-month id first, then 1..12."""
  from testing.saved_models import linear, save_linear_model
  directory, rows, stats, _ = weather
  rng = np.random.default_rng(5)
  weights, bias = rng.normal(size=(4 + 13, len(CLASSES))), rng.normal(size=len(CLASSES))
  save_linear_model(str(tmp_path / 'keras_style'), weights, bias)
  sample = rows[::5]
  matrix = _user_matrix(sample, stats)
  matrix = np.column_stack([matrix[:, :4], matrix[:, -1:], matrix[:, 4:-1]])  # the OOV column first
  own = linear(matrix, weights, bias)
  with open(tmp_path / 'expected.csv', 'w', newline='', encoding='utf-8') as f:  # as pandas' to_csv writes it
    writer = csv.DictWriter(f, fieldnames=[*sample[0], *(f'probability_{c}' for c in CLASSES)])
    writer.writeheader()
    writer.writerows({**r, **{f'probability_{c}': repr(float(p[k])) for k, c in enumerate(CLASSES)}}
                     for r, p in zip(sample, own))
  unfitted = {'features': [*({'name': c, 'dtype': 'float', 'steps': [{'kind': 'z_score'}]} for c in NUMBERS),
                           {'name': 'month', 'dtype': 'string', 'steps': [{'kind': 'vocabulary'}, {'kind': 'one_hot'}]}]}
  args = [f'--saved_model={tmp_path / "keras_style"}', f'--outputs={directory / "outputs.json"}', '--name=w',
          '--version=1', f'--data={directory / "train.csv"}', f'--expected={tmp_path / "expected.csv"}']
  (tmp_path / 'features.json').write_text(json.dumps(unfitted))
  assert import_main([*args, f'--features={tmp_path / "features.json"}', f'--output={tmp_path / "b1"}']) == 2
  fix = {'kind': 'vocabulary', 'vocabulary': MONTHS, 'oov_position': 'first'}
  assert ('vocabulary order differs for `month`: the model agrees when it is ordered numeric ('
          + ', '.join(f'"{m}"' for m in MONTHS) + ') and the model agrees with its out-of-vocabulary id first (as '
          'Keras StringLookup numbers them); give the vocabulary explicitly in features.json: '
          + json.dumps(fix)) in capsys.readouterr().err
  unfitted['features'][-1]['steps'][0] = fix  # what the error said to give
  (tmp_path / 'features.json').write_text(json.dumps(unfitted))
  assert import_main([*args, f'--features={tmp_path / "features.json"}', f'--output={tmp_path / "b2"}']) == 0
  assert ('one_hot: 13 columns, in this order: month=<oov0>, month=1, month=2'
          in capsys.readouterr().out)
  assert ModelBundle.load(str(tmp_path / 'b2')).features.output_names[4:6] == ['month=<oov0>', 'month=1']
