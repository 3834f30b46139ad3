"""Security basics: models load only as SavedModels (nothing is unpickled) and
credentials never reach logs, summaries or dead letters."""

import ast
import glob
import json
import logging
import os
import pickle
import shutil

import pytest

from models.bundle import BundleError, ModelBundle
from models.handlers.tensorflow import SavedModelHandler
from models.examples.penguins import train
from pipelines import run as run_job

PACKAGES = ('pipelines', 'transforms', 'models')
# Ways to turn bytes into live objects: none belongs in code that reads user paths.
UNSAFE_MODULES = {'pickle', 'cPickle', 'dill', 'cloudpickle', 'joblib', 'shelve', 'marshal'}
UNSAFE_CALLS = {'load_model', 'torch.load', 'yaml.load', 'yaml.unsafe_load'}


class _Bomb:
  """Unpickling this creates a file: proof that something ran pickle on the bundle."""

  def __init__(self, marker: str):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, 'w'))


def test_no_module_can_unpickle_a_model():
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  offenders = []
  for package in PACKAGES:
    for path in glob.glob(os.path.join(root, package, '**', '*.py'), recursive=True):
      tree = ast.parse(open(path, encoding='utf-8').read())
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          offenders += [(path, a.name) for a in node.names if a.name.split('.')[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] in UNSAFE_MODULES:
          offenders.append((path, node.module))
        elif isinstance(node, ast.Call):
          name = ast.unparse(node.func)
          if name in UNSAFE_CALLS or (name.endswith('.load_model') and 'keras' in name):
            offenders.append((path, name))
          offenders += [(path, f'{name}(allow_pickle=True)') for k in node.keywords
                        if k.arg == 'allow_pickle' and ast.unparse(k.value) != 'False']
  assert offenders == []


def test_a_pickle_in_place_of_the_saved_model_is_refused_not_run(tmp_path, penguin_bundle):
  bundle = tmp_path / 'bundle'
  shutil.copytree(penguin_bundle.path, bundle)
  marker = tmp_path / 'pwned'
  payload = pickle.dumps(_Bomb(str(marker)))
  for name in ('saved_model.pb', 'keras_metadata.pb', 'fingerprint.pb'):
    (bundle / 'saved_model' / name).write_bytes(payload)
  (bundle / 'saved_model' / 'model.pkl').write_bytes(payload)

  with pytest.raises(BundleError, match='cannot load the SavedModel'):
    ModelBundle.load(str(bundle)).check_signature()
  with pytest.raises(RuntimeError, match='cannot load the SavedModel'):
    SavedModelHandler(str(bundle / 'saved_model'), share_across_processes=False).load_model()
  assert not marker.exists()


@pytest.mark.slow
def test_credentials_never_reach_logs_summaries_or_dead_letters(tmp_path, penguin_bundle, monkeypatch, capsys,
                                                                 caplog):
  canary = 'CANARY-0123456789abcdef-SECRET'
  key_file = tmp_path / 'key.json'
  key_file.write_text(json.dumps({'type': 'service_account', 'private_key': canary, 'client_email': 'x@y'}))
  monkeypatch.setenv('GOOGLE_APPLICATION_CREDENTIALS', str(key_file))
  monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', canary)
  bad = tmp_path / 'bad.csv'
  bad.write_text(open(train.EXAMPLE_DATA).read() + 'Adelie,Dream,oops,1,1,1,male,2007\n')
  common = [f'--model={penguin_bundle.path}', f'--output={tmp_path / "out"}',
            f'--s3_secret_access_key={canary}', f'--s3_access_key_id={canary}']  # Beam's own secret flags
  caplog.set_level(logging.DEBUG)

  assert run_job.main([f'--input={bad}', '--run_id=ok', *common]) == 0  # a run with dead letters
  assert run_job.main([f'--input={tmp_path}/none-*.csv', '--run_id=no', *common]) == 2  # a refused run
  (tmp_path / 'in').mkdir()
  (tmp_path / 'in' / 'x.parquet').write_bytes(b'corrupt')
  monkeypatch.setattr('transforms.files.checks.MAX_FILES_PEEKED', 0)
  assert run_job.main([f'--input={tmp_path}/in/*', '--run_id=failed', *common]) == 1  # a failed run

  written = ''.join(open(p, encoding='utf-8', errors='replace').read()
                    for p in glob.glob(str(tmp_path / 'out' / '**'), recursive=True) if os.path.isfile(p))
  captured = capsys.readouterr()
  assert 'oops' in written and '"rows_read": 345' in written  # the dead letter and the summary were read
  for text in (written, captured.out, captured.err, caplog.text):
    assert canary not in text
