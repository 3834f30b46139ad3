"""The reproducibility manifest and --replay: what a run read and ran is recorded exactly; a replay
refuses when any of it changed, and checks that its predictions match the original's."""

import glob
import hashlib
import json
import os
import shutil
import subprocess

import pyarrow as pa
import pytest

from models.examples.penguins import train
from pipelines import run as run_job
from pipelines.graph import manifest
from transforms.files import publish
from pipelines.record.summary import RunSummary

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _sha(path) -> str:
  return hashlib.sha256(open(path, 'rb').read()).hexdigest()


@pytest.fixture
def inputs(tmp_path):
  """The example split in two CSV files."""
  lines = open(train.EXAMPLE_DATA, encoding='utf-8').read().splitlines()
  folder = tmp_path / 'in'
  folder.mkdir()
  for i, part in enumerate((lines[1:200], lines[200:])):
    (folder / f'part-{i}.csv').write_text('\n'.join([lines[0]] + part) + '\n', encoding='utf-8')
  return folder


def _original(tmp_path, inputs, bundle, capsys) -> tuple[str, dict]:
  out = tmp_path / 'out'
  assert run_job.main([f'--input={inputs}/*.csv', f'--model={bundle.path}', f'--output={out}', '--run_id=night',
                       '--passthrough_columns=island', '--read_batch_size=100', '--report=false']) == 0
  capsys.readouterr()
  return str(out / 'night' / publish.SUMMARY_FILE), publish.read_pointer(str(out), 'night')


def test_manifest__records_the_bundle_digest_the_files_the_code_and_every_option(tmp_path, inputs, penguin_bundle,
                                                                                 capsys):
  _, summary = _original(tmp_path, inputs, penguin_bundle, capsys)
  recorded = json.load(open(summary['manifest']))
  assert os.path.dirname(summary['manifest']) == publish.attempt_folder(str(tmp_path / 'out'), 'night', summary['attempt'])
  base = penguin_bundle.path + '/'
  files = sorted(p for p in glob.glob(base + '**', recursive=True) if os.path.isfile(p))
  expected = hashlib.sha256(b''.join(f[len(base):].encode() + b'\0' + _sha(f).encode() + b'\n' for f in files))
  assert recorded['model'] == {'path': penguin_bundle.path, 'sha256': expected.hexdigest(), 'files': len(files),
                               'name': 'penguin-species', 'version': '1'}
  assert recorded['input'] == {'kind': 'files', 'pattern': f'{inputs}/*.csv', 'files': [
      {'path': str(inputs / f'part-{i}.csv'), 'size': os.path.getsize(inputs / f'part-{i}.csv'),
       'sha256': _sha(inputs / f'part-{i}.csv')} for i in (0, 1)]}
  described = subprocess.run(['git', 'describe', '--always', '--dirty', '--tags'], cwd=ROOT, capture_output=True,
                             text=True).stdout.strip()
  assert recorded['code']['git'] == described
  assert recorded['libraries']['pyarrow'] == pa.__version__
  assert recorded['options']['read_batch_size'] == 100 and recorded['options']['passthrough_columns'] == 'island'
  assert recorded['options']['max_batch_rows'] == 16384  # defaults too
  assert recorded['predictions']['rows'] == 342 == summary['predictions_digest']['rows']


def test_replay__reruns_exactly_and_checks_the_predictions_match(tmp_path, inputs, penguin_bundle, capsys):
  pointer, original = _original(tmp_path, inputs, penguin_bundle, capsys)
  # Another batch size: the model sees other groups of rows, the predictions are the same.
  assert run_job.main([f'--replay={pointer}', '--read_batch_size=37']) == 0
  printed = capsys.readouterr().out
  assert f'predictions match run night: 342 rows, digest {original["predictions_digest"]["sum64"]}' in printed
  [replay_id] = [d for d in os.listdir(tmp_path / 'out') if d.startswith('night-replay-')]
  replayed = RunSummary.from_dict(publish.read_pointer(str(tmp_path / 'out'), replay_id))
  assert replayed.predictions_digest == original['predictions_digest'] and replayed.input == original['input']
  assert json.load(open(replayed.manifest))['options']['read_batch_size'] == 37

  # Another model behind the recorded options: the replay runs, and says the predictions differ.
  other = train.train(str(tmp_path / 'other'), epochs=2, seed=3)
  assert run_job.main([f'--replay={pointer}', f'--model={other.path}', '--run_id=wrong']) == 1
  assert 'replay wrong of run night: predictions differ' in capsys.readouterr().err


def test_replay__refuses_when_a_file_or_the_bundle_changed(tmp_path, inputs, penguin_bundle, capsys):
  bundle = tmp_path / 'bundle'
  shutil.copytree(penguin_bundle.path, bundle)
  pointer, _ = _original(tmp_path, inputs, type(penguin_bundle).load(str(bundle)), capsys)
  (inputs / 'part-2.csv').write_text(open(inputs / 'part-1.csv').read())
  with open(inputs / 'part-0.csv', 'a', encoding='utf-8') as f:
    f.write('Adelie,Torgersen,39.1,18.7,181,3750,male,2007\n')
  metadata = json.loads((bundle / 'metadata.json').read_text())
  (bundle / 'metadata.json').write_text(json.dumps({**metadata, 'version': '1b'}))
  assert run_job.main([f'--replay={pointer}']) == 2
  err = capsys.readouterr().err
  assert f'{inputs}/part-0.csv changed' in err and f'{inputs}/part-2.csv is new under {inputs}/*.csv' in err
  assert f'the model bundle {bundle} changed' in err
  os.remove(inputs / 'part-1.csv')
  assert run_job.main([f'--replay={pointer}']) == 2
  assert f'{inputs}/part-1.csv is gone' in capsys.readouterr().err
  assert not [d for d in os.listdir(tmp_path / 'out') if 'replay' in d]  # nothing ran


def test_digest__does_not_depend_on_row_order_or_batching():
  columns = {'row_id': ['a', 'b', 'c'], 'predicted_class': ['x', 'y', 'x'],
             'probability_x': pa.array([0.91234, 0.1, 0.7], pa.float32())}
  batch = pa.RecordBatch.from_pydict(columns)
  whole = manifest.batch_digest(batch, ['probability_x'])
  parts = sum(manifest.batch_digest(batch.slice(i, 1), ['probability_x']) for i in (2, 0, 1)) % (1 << 64)
  assert whole == parts
  changed = pa.RecordBatch.from_pydict({**columns, 'predicted_class': ['x', 'x', 'x']})
  assert manifest.batch_digest(changed, ['probability_x']) != whole


def test_hash_column__of_a_class_column_hashes_each_distinct_value_once_to_the_same_hashes():
  """Manifests written before and after the class column's shortcut must compare equal."""
  classes = pa.array(['Adelie', None, 'Gentoo', '', 'Adelie', 'Chinstrap', 'Gentoo', 'ü'] * 3)
  plain = manifest.hash_column(classes)
  assert manifest.hash_column(classes, few_values=True).tolist() == plain.tolist()
  assert manifest.hash_column(classes.slice(5, 9), few_values=True).tolist() == plain[5:14].tolist()
  assert manifest.hash_column(classes.dictionary_encode(), few_values=True).tolist() == plain.tolist()
  assert len(set(plain.tolist())) == 5  # five distinct texts; a missing value hashes as the empty text
