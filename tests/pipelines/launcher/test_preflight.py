"""Preflight: every reason a run cannot succeed, found before any worker starts."""

import json
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from hypothesis import given, settings
from hypothesis import strategies as st

from models.examples.penguins import train
from pipelines import run as run_job
from pipelines.launcher import preflight
from pipelines.options import BatchInferenceOptions
from transforms.files import checks


def _opts(*args: str) -> BatchInferenceOptions:
  return PipelineOptions(list(args)).view_as(BatchInferenceOptions)


def _copy_bundle(bundle, tmp_path) -> str:
  path = str(tmp_path / 'bundle')
  shutil.copytree(bundle.path, path)
  return path


def _problems(opts) -> list[str]:
  with pytest.raises(preflight.PreflightError) as raised:
    preflight.check(opts)
  return raised.value.problems


def test_check__passes_and_leaves_nothing_behind(tmp_path, penguin_bundle):
  out = tmp_path / 'out'
  report = preflight.check(_opts(f'--input={train.EXAMPLE_DATA}', f'--model={penguin_bundle.path}',
                                 f'--output={out}', '--key_column=species'))
  assert report.bundle.name == 'penguin-species' and (report.files, report.files_peeked) == (1, 1)
  assert os.listdir(out) == []  # the write probe was deleted
  assert 'preflight passed' in report.render()


def test_check__names_every_problem_column_by_column(tmp_path, penguin_bundle):
  data = tmp_path / 'in.parquet'
  pq.write_table(pa.table({
      'island': ['Dream'],
      'bill_length_mm': pa.array([[40.0]], pa.list_(pa.float64())),  # a list cannot be a float
      'flipper_length_mm': pa.array([b'\x01'], pa.binary()),  # bytes cannot either
      # bill_depth_mm is missing and required; body_mass_g and sex are missing but filled
  }), data)
  blocked = tmp_path / 'blocked'
  blocked.write_text('a file where the output folder should be')
  problems = _problems(_opts(f'--input={data}', f'--model={penguin_bundle.path}', f'--output={blocked}',
                             '--key_column=id', '--passthrough_columns=region'))
  assert problems[:5] == [
      f"{data}: column 'bill_length_mm' is list<element: double>, which cannot be read as float",
      f"{data}: missing required feature column 'bill_depth_mm' (the model has no fill value for it)",
      f"{data}: column 'flipper_length_mm' is binary, which cannot be read as float",
      f"{data}: --key_column 'id' is not a column",
      f"{data}: --passthrough_columns 'region' is not a column",
  ]
  assert problems[5].startswith(f'cannot write to {blocked}: ')
  assert len(problems) == 6


def test_check__empty_input_is_a_job_level_error(tmp_path, penguin_bundle):
  problems = _problems(_opts(f'--input={tmp_path}/nothing-*.csv', f'--model={penguin_bundle.path}',
                             f'--output={tmp_path}/out'))
  assert problems == [f'--input {tmp_path}/nothing-*.csv matches no files']


def test_check__unknown_extension_and_unreadable_file_are_named(tmp_path, penguin_bundle):
  (tmp_path / 'in').mkdir()
  (tmp_path / 'in' / 'a.xlsx').write_bytes(b'PK\x03\x04')
  (tmp_path / 'in' / 'b.parquet').write_bytes(b'not parquet at all')
  problems = _problems(_opts(f'--input={tmp_path}/in/*', f'--model={penguin_bundle.path}',
                             f'--output={tmp_path}/out'))
  assert any("cannot tell the format of" in p and 'a.xlsx' in p for p in problems)
  assert any(p.startswith(f'cannot read {tmp_path}/in/b.parquet:') for p in problems)


def test_check__corrupt_saved_model_is_named(tmp_path, penguin_bundle):
  model = _copy_bundle(penguin_bundle, tmp_path)
  with open(os.path.join(model, 'saved_model', 'saved_model.pb'), 'wb') as f:
    f.write(b'\x08\x01garbage')
  problems = _problems(_opts(f'--input={train.EXAMPLE_DATA}', f'--model={model}', f'--output={tmp_path}/out'))
  assert len(problems) == 1 and 'cannot load the SavedModel' in problems[0]


def test_check__signature_that_disagrees_with_the_feature_spec_is_named(tmp_path, penguin_bundle):
  model = _copy_bundle(penguin_bundle, tmp_path)
  path = os.path.join(model, 'features.json')
  spec = json.load(open(path))
  spec['features'] = [f for f in spec['features'] if f['name'] != 'body_mass_g']
  json.dump(spec, open(path, 'w'))
  problems = _problems(_opts(f'--input={train.EXAMPLE_DATA}', f'--model={model}', f'--output={tmp_path}/out'))
  assert len(problems) == 1
  assert problems[0].startswith(f'{model}: the SavedModel takes 12 inputs but features.json produces 11 '
                                '(island=Biscoe, island=Dream, island=Torgersen, island=<oov0>, bill_length_mm, ')


@pytest.mark.parametrize('run_id', ['../escape', 'a/b', '*', 'nightly?', ''])
def test_check__run_id_that_is_not_a_plain_name_is_refused(tmp_path, penguin_bundle, run_id):
  problems = _problems(_opts(f'--input={train.EXAMPLE_DATA}', f'--model={penguin_bundle.path}',
                             f'--output={tmp_path}/out', f'--run_id={run_id}')) if run_id else []
  assert run_id == '' or problems[0].startswith(f'--run_id {run_id!r} must be')


def test_preflight_only__exits_0_and_writes_no_run(tmp_path, penguin_bundle, capsys):
  rc = run_job.main([f'--input={train.EXAMPLE_DATA}', f'--model={penguin_bundle.path}', f'--output={tmp_path}/out',
                     '--preflight_only', '--run_id=r1'])
  assert rc == 0
  assert capsys.readouterr().out.startswith('preflight passed: model penguin-species v1')
  assert os.listdir(tmp_path / 'out') == []


@pytest.mark.slow
def test_preflight_only__as_a_command_exits_2_with_the_problems_and_no_traceback(tmp_path, penguin_bundle):
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
  env = {**os.environ, 'PYTHONPATH': root, 'TF_CPP_MIN_LOG_LEVEL': '3'}
  done = subprocess.run(
      [sys.executable, '-m', 'pipelines.run', f'--input={tmp_path}/missing/*.csv', f'--model={penguin_bundle.path}',
       f'--output={tmp_path}/out', '--preflight_only'], capture_output=True, text=True, env=env, timeout=120)
  assert done.returncode == 2
  assert f'error: preflight failed:\n  - --input {tmp_path}/missing/*.csv matches no files' in done.stderr
  assert 'Traceback' not in done.stderr + done.stdout


TYPES = {'float': pa.float64(), 'int': pa.int32(), 'text': pa.string(), 'big_text': pa.large_string(),
         'dict': pa.dictionary(pa.int8(), pa.string()), 'bool': pa.bool_(), 'list': pa.list_(pa.float64()),
         'bytes': pa.binary(), 'time': pa.timestamp('s'), 'struct': pa.struct([('a', pa.int8())])}
READABLE = {'float': {'float', 'int', 'text', 'big_text', 'dict', 'bool'},
            'string': {'float', 'int', 'text', 'big_text', 'dict', 'bool'}}


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from(train.FEATURES.columns + ['extra', 'ü']), st.sampled_from(sorted(TYPES))))
def test_schema_problems__name_each_missing_or_unreadable_column_once(columns):
  schema = pa.schema([(name, TYPES[kind]) for name, kind in columns.items()])
  problems, notes = checks.schema_problems(schema, train.FEATURES)
  want = []
  for feature in train.FEATURES.features:
    kind = columns.get(feature.name)
    if kind is None and feature.required:
      want.append(f'missing required feature column {feature.name!r} (the model has no fill value for it)')
    elif kind is not None and kind not in READABLE[feature.dtype]:
      want.append(f'column {feature.name!r} is {TYPES[kind]}, which cannot be read as {feature.dtype}')
  assert problems == want
  assert len(notes) == sum(1 for f in train.FEATURES.features if not f.required and f.name not in columns)
