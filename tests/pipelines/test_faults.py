"""Faults injected into real runs: each ends with a clear error, no partial final
output, and a re-run that succeeds."""

import glob
import json
import os
import shutil

import pytest

from models import inference
from models.examples.penguins import train
from pipelines import run as run_job
from pipelines.launcher import preflight
from transforms.files import publish
from transforms.files import read as sources

pytestmark = pytest.mark.slow


def _main(tmp_path, model, input_path, run_id='r1') -> int:
  return run_job.main([f'--input={input_path}', f'--model={model}', f'--output={tmp_path / "out"}',
                       f'--run_id={run_id}'])


def _error(capsys) -> str:
  """The last line the command printed to stderr: what an operator reads first."""
  lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
  return '\n'.join(lines[-2:])


def _assert_nothing_published(tmp_path, run_id='r1'):
  assert publish.read_pointer(str(tmp_path / 'out'), run_id) is None
  assert not glob.glob(str(tmp_path / 'out' / run_id / '**' / 'predictions-*'), recursive=True)


def _predicted(tmp_path, capsys, model, input_path, run_id='r1') -> str:
  assert _main(tmp_path, model, input_path, run_id) == 0
  out = capsys.readouterr().out
  assert 'read = predicted + rejected: yes' in out
  return out


def test_output_becomes_unwritable_mid_job(tmp_path, penguin_bundle, monkeypatch, capsys):
  original = inference.FormatFn.process

  def format_then_break_the_output(self, element):
    for staging in glob.glob(str(tmp_path / 'out' / 'r1' / '_attempt-*')):
      shutil.rmtree(staging)  # the folder the sinks write to turns into a file: every write now fails
      with open(staging, 'w') as f:
        f.write('not a folder')
    yield from original(self, element)

  monkeypatch.setattr(inference.FormatFn, 'process', format_then_break_the_output)
  assert _main(tmp_path, penguin_bundle.path, train.EXAMPLE_DATA) == 1
  error = _error(capsys)
  assert error.startswith('error: run r1 failed: ') and 'Traceback' not in error
  assert error.endswith(f'nothing was published to {tmp_path}/out/r1; fix the cause and re-run with --run_id r1')
  _assert_nothing_published(tmp_path)

  monkeypatch.undo()
  _predicted(tmp_path, capsys, penguin_bundle.path, train.EXAMPLE_DATA)
  assert json.loads((tmp_path / 'out' / 'r1' / '_run_summary.json').read_text())['rows_predicted'] == 342


def test_source_file_disappears_between_listing_and_reading(tmp_path, penguin_bundle, monkeypatch, capsys):
  data = tmp_path / 'in'
  data.mkdir()
  for name in ('a.csv', 'b.csv'):
    shutil.copy(train.EXAMPLE_DATA, data / name)
  original = sources._ReadFileFn.process
  victim = str(data / 'b.csv')

  def delete_then_read(self, metadata):
    if metadata.path == victim and os.path.exists(victim):
      os.rename(victim, str(tmp_path / 'b.csv.moved'))  # listed by Match, gone before Read opens it
    yield from original(self, metadata)

  monkeypatch.setattr(sources._ReadFileFn, 'process', delete_then_read)
  assert _main(tmp_path, penguin_bundle.path, f'{data}/*.csv') == 1
  error = _error(capsys)
  assert error.startswith(f'error: run r1 failed: cannot read {victim} as csv: ') and 'No such file' in error
  assert 'it was listed when the job started and is gone now' in error
  _assert_nothing_published(tmp_path)

  monkeypatch.undo()
  os.rename(str(tmp_path / 'b.csv.moved'), victim)
  _predicted(tmp_path, capsys, penguin_bundle.path, f'{data}/*.csv')
  assert json.loads((tmp_path / 'out' / 'r1' / '_run_summary.json').read_text())['rows_read'] == 2 * 344


def test_model_file_is_corrupt_before_the_run(tmp_path, penguin_bundle, capsys):
  model = tmp_path / 'bundle'
  shutil.copytree(penguin_bundle.path, model)
  graph = model / 'saved_model' / 'saved_model.pb'
  good = graph.read_bytes()
  graph.write_bytes(good[:len(good) // 3])  # a copy cut short

  assert _main(tmp_path, model, train.EXAMPLE_DATA) == 2
  error = _error(capsys)
  assert error.startswith('error: preflight failed:') or 'preflight failed' in error
  assert f'{model}/saved_model: cannot load the SavedModel' in error
  _assert_nothing_published(tmp_path)

  graph.write_bytes(good)
  _predicted(tmp_path, capsys, model, train.EXAMPLE_DATA)


def test_model_file_is_corrupted_after_preflight_before_workers_load_it(tmp_path, penguin_bundle, monkeypatch,
                                                                      capsys):
  model = tmp_path / 'bundle-late'
  shutil.copytree(penguin_bundle.path, model)
  variables = glob.glob(str(model / 'saved_model' / 'variables' / 'variables.data-*'))[0]
  good = open(variables, 'rb').read()
  original = preflight.check

  def check_then_corrupt(opts, bundle=None, **kwargs):
    report = original(opts, bundle, **kwargs)
    with open(variables, 'wb') as f:
      f.write(b'\x00' * 16)  # the weights are overwritten while the job is being submitted
    return report

  monkeypatch.setattr(preflight, 'check', check_then_corrupt)
  assert _main(tmp_path, model, train.EXAMPLE_DATA, run_id='late') == 1
  error = _error(capsys)
  assert error.startswith(f'error: run late failed: cannot load the SavedModel {model}/saved_model '
                          'on a worker: ') and 'Traceback' not in error
  _assert_nothing_published(tmp_path, 'late')

  monkeypatch.undo()
  with open(variables, 'wb') as f:
    f.write(good)
  _predicted(tmp_path, capsys, model, train.EXAMPLE_DATA, run_id='late')
