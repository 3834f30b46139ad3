"""The whole job on the DirectRunner, with real files and a real trained model."""

import glob
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from models.handlers.tensorflow import SavedModelPredictor
from models.examples.penguins import train
from pipelines import run as run_job
from transforms.rows.validation import validate

pytestmark = pytest.mark.slow


def _run(tmp_path, bundle, *extra, input_path=train.EXAMPLE_DATA, run_id='test-run'):
  return run_job.run([f'--input={input_path}', f'--model={bundle.path}', f'--output={tmp_path / "out"}',
                      f'--run_id={run_id}', *extra])


def _predictions(summary, pattern='predictions-*.parquet') -> pa.Table:
  files = sorted(glob.glob(os.path.join(summary.output, pattern)))
  assert files, f'no prediction files in {summary.output}'
  return pa.concat_tables([pq.read_table(f) for f in files]).sort_by('row_id')


def _model_outside_beam(bundle, path) -> dict[str, np.ndarray]:
  """The model's own probabilities for each valid row of a CSV, keyed like the pipeline."""
  table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
  batch = table.combine_chunks().to_batches()[0]
  batch = batch.append_column('__source', pa.array([path] * batch.num_rows))
  batch = batch.append_column('__row', pa.array(np.arange(2, batch.num_rows + 2), pa.int64()))
  valid, _ = validate(batch, bundle.features)
  predictor = SavedModelPredictor(bundle.saved_model_path)
  scores = predictor.predict(bundle.features.transform(valid))
  return dict(zip(valid.column('__key').to_pylist(), scores))


def test_predictions_equal_the_models_own_row_for_row(tmp_path, penguin_bundle):
  summary = _run(tmp_path, penguin_bundle, '--passthrough_columns=species,year')
  table = _predictions(summary)
  expected = _model_outside_beam(penguin_bundle, train.EXAMPLE_DATA)

  assert table.num_rows == len(expected) == 342
  assert set(table.column('row_id').to_pylist()) == set(expected)
  for row in table.to_pylist():
    want = expected[row['row_id']]
    got = [row['probability_Adelie'], row['probability_Chinstrap'], row['probability_Gentoo']]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert row['predicted_class'] == train.CLASSES[int(np.argmax(want))]
    assert row['model_name'] == 'penguin-species' and row['model_version'] == '1'
    assert row['run_id'] == 'test-run'
  # The model is good, so the passthrough species mostly matches the prediction.
  accuracy = np.mean([r['species'] == r['predicted_class'] for r in table.to_pylist()])
  assert accuracy > 0.9
  assert table.schema.field('year').type == pa.string()  # CSV passthrough stays text


def test_bad_rows_become_dead_letters_and_counts_reconcile(tmp_path, penguin_bundle, read_dead_letters):
  bad = tmp_path / 'bad.csv'
  bad.write_text(
      'species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year\n'
      'Adelie,Torgersen,39.1,18.7,181,3750,male,2007\n'          # line 2: good
      'Adelie,Torgersen,forty,18.7,181,3750,male,2007\n'         # line 3: not a number
      'Adelie,Torgersen,39.1,18.7\n'                             # line 4: too few columns
      'Gentoo,Biscoe,,15.0,220,5000,female,2008\n'               # line 5: missing required value
      'Gentoo,Atlantis,47.5,15.0,220,,,2008\n'                   # line 6: unseen island, fills: predicted
      'Gentoo,Biscoe,47.5,inf,220,5000,female,2008\n')           # line 7: not finite
  summary = _run(tmp_path, penguin_bundle, '--max_rejected_fraction=1', input_path=str(bad))  # 4 of 6 rejected

  assert (summary.rows_read, summary.rows_predicted, summary.rows_rejected) == (6, 2, 4)
  assert summary.reconciled
  assert summary.rejected_by_reason == {'invalid_type': 1, 'unparsable': 1, 'missing_value': 1, 'non_finite': 1}
  letters = {d['row']: d for d in read_dead_letters(summary.dead_letter)}
  assert set(letters) == {3, 4, 5, 7}
  assert letters[3]['reason'] == "bill_length_mm: 'forty' is not a valid float"
  assert letters[4]['reason_code'] == 'unparsable' and letters[4]['record'] == 'Adelie,Torgersen,39.1,18.7'
  assert letters[5]['reason_code'] == 'missing_value'
  assert json.loads(letters[7]['record'])['bill_depth_mm'] == 'inf'
  assert all(d['source'] == str(bad) and d['run_id'] == 'test-run' for d in letters.values())
  assert sorted(_predictions(summary).column('row_id').to_pylist()) == [f'{bad}:2', f'{bad}:6']

  saved = json.loads((tmp_path / 'out' / 'test-run' / '_run_summary.json').read_text())
  assert saved['rows_read'] == 6 and saved['reconciled'] is True


def test_multi_processing_direct_runner_gives_the_same_predictions(tmp_path, penguin_bundle):
  single = _predictions(_run(tmp_path / 'one', penguin_bundle))
  multi = _predictions(_run(tmp_path / 'two', penguin_bundle, '--direct_num_workers=2',
                            '--direct_running_mode=multi_processing'))
  assert multi.column('row_id').to_pylist() == single.column('row_id').to_pylist()
  np.testing.assert_allclose(multi.column('probability_Gentoo').to_numpy(),
                             single.column('probability_Gentoo').to_numpy(), rtol=1e-6)


@pytest.mark.parametrize('output_format', ['jsonl', 'csv'])
def test_text_output_formats_hold_the_same_predictions(tmp_path, penguin_bundle, output_format):
  summary = _run(tmp_path, penguin_bundle, f'--output_format={output_format}', '--read_batch_size=50')
  files = glob.glob(os.path.join(summary.output, f'predictions-*.{output_format}'))
  if output_format == 'jsonl':
    rows = [json.loads(line) for f in files for line in open(f) if line.strip()]
  else:
    rows = pa.concat_tables([pcsv.read_csv(f) for f in files]).to_pylist()
  assert len(rows) == summary.rows_predicted == 342
  assert {r['predicted_class'] for r in rows} == set(train.CLASSES)


DIMENSION = 6


@pytest.fixture(scope='module')
def embedding_bundle(tmp_path_factory, penguin_bundle):
  """A PyTorch model that embeds the penguin features in DIMENSION floats (no softmax: any real values), imported
  with the penguin feature spec and outputs.json {"kind": "embedding", "dimension": DIMENSION}."""
  torch = pytest.importorskip('torch')
  from models.bundle import ModelBundle
  from testing import frameworks
  directory = tmp_path_factory.mktemp('embedding')
  torch.manual_seed(0)
  width = len(penguin_bundle.features.output_names)
  net = torch.nn.Sequential(torch.nn.Linear(width, 16), torch.nn.Tanh(), torch.nn.Linear(16, DIMENSION)).eval()
  model = frameworks.export_torch(net, torch.zeros(4, width), str(directory / 'embed.pt2'))
  assert frameworks.import_bundle(model, penguin_bundle.features.to_dict(), {'kind': 'embedding', 'dimension': DIMENSION},
                                  str(directory / 'bundle'), name='penguin-embedding', version='1') == 0
  return ModelBundle.load(str(directory / 'bundle')), net


def _embedded_outside_beam(bundle, net) -> dict[str, np.ndarray]:
  import torch
  table = pcsv.read_csv(train.EXAMPLE_DATA, convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
  batch = table.combine_chunks().to_batches()[0]
  batch = batch.append_column('__source', pa.array([train.EXAMPLE_DATA] * batch.num_rows))
  batch = batch.append_column('__row', pa.array(np.arange(2, batch.num_rows + 2), pa.int64()))
  valid, _ = validate(batch, bundle.features)
  with torch.no_grad():
    values = net(torch.from_numpy(bundle.features.transform(valid))).numpy()
  return dict(zip(valid.column('__key').to_pylist(), values))


def test_embedding__parquet_list_of_float32_and_jsonl_arrays_equal_the_models_own(tmp_path, embedding_bundle):
  bundle, net = embedding_bundle
  expected = _embedded_outside_beam(bundle, net)
  summary = _run(tmp_path / 'parquet', bundle)
  table = _predictions(summary)
  assert table.schema.field('embedding').type == pa.list_(pa.float32())
  assert not any(n.startswith(('probability_', 'predicted_')) or n == 'score' for n in table.schema.names
                 if n != 'predicted_at')
  assert table.num_rows == len(expected) == 342
  got = np.array(table.column('embedding').to_pylist(), np.float32)
  np.testing.assert_allclose(got, [expected[k] for k in table.column('row_id').to_pylist()], rtol=1e-5, atol=1e-6)
  report, = glob.glob(str(tmp_path / 'parquet' / '**' / 'report.html'), recursive=True)
  page = open(report, encoding='utf-8').read()
  assert f'embedding, {DIMENSION} dimensions: no class or score distribution to draw' in page

  summary = _run(tmp_path / 'jsonl', bundle, '--output_format=jsonl')
  rows = [json.loads(line) for f in glob.glob(os.path.join(summary.output, 'predictions-*.jsonl')) for line in open(f)]
  assert len(rows) == 342 and {len(r['embedding']) for r in rows} == {DIMENSION}
  for row in rows:
    np.testing.assert_allclose(row['embedding'], expected[row['row_id']], rtol=1e-5, atol=1e-6)


def test_embedding__csv_output_is_refused_before_the_job_starts(tmp_path, embedding_bundle, capsys):
  code = run_job.main([f'--input={train.EXAMPLE_DATA}', f'--model={embedding_bundle[0].path}',
                       f'--output={tmp_path / "out"}', '--output_format=csv', '--preflight_only'])
  assert code == 2
  assert 'hold lists (embedding: ' in capsys.readouterr().err


def test_classifier_top_k__lists_each_rows_best_classes_beside_its_probabilities(tmp_path, penguin_bundle):
  import shutil
  from models.bundle import ModelBundle
  bundle_path = tmp_path / 'top2'
  shutil.copytree(penguin_bundle.path, bundle_path)
  outputs = json.loads((bundle_path / 'outputs.json').read_text())
  (bundle_path / 'outputs.json').write_text(json.dumps({**outputs, 'top_k': 2}))
  table = _predictions(_run(tmp_path, ModelBundle.load(str(bundle_path))))
  assert table.schema.field('top_classes').type == pa.list_(pa.string())
  assert table.schema.field('top_probabilities').type == pa.list_(pa.float32())
  for row in table.to_pylist():
    probabilities = {c: row[f'probability_{c}'] for c in train.CLASSES}
    best = sorted(train.CLASSES, key=lambda c: -probabilities[c])[:2]
    assert row['top_classes'] == best and row['top_classes'][0] == row['predicted_class']
    assert row['top_probabilities'] == [probabilities[c] for c in best]
