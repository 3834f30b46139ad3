"""A new user's own data and flags: nothing wrong may come out of a green run.

A model and data none of the other tests use: a softmax regression trained here
on the iris measurements that the vega_datasets package ships, served as a real
SavedModel. Each test feeds it input as real tools write it (spreadsheets'
quoted line breaks, repeated headers, empty days, integer ids, mistyped flags).
"""

import csv
import glob
import json
import os
import subprocess
import sys

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from vega_datasets import local_data

from models.bundle import ModelBundle, Outputs, write_bundle
from pipelines import run as run_job
from pipelines.options import BatchInferenceOptions, unknown_flags
from pipelines.record import status
from transforms.files import publish
from testing.saved_models import linear, save_linear_model
from transforms.features.spec import Feature, FeatureSpec, fit_in_memory
from transforms.features.preprocessing import ZScore

pytestmark = pytest.mark.slow

MEASURES = ['sepalLength', 'sepalWidth', 'petalLength', 'petalWidth']
SPECIES = ('setosa', 'versicolor', 'virginica')
_LEARNED: dict[str, tuple[np.ndarray, np.ndarray]] = {}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _iris() -> list[dict]:
  return local_data.iris().to_dict('records')


@pytest.fixture(scope='module')
def iris_bundle(tmp_path_factory) -> ModelBundle:
  """A softmax regression on the iris measurements, fitted by gradient descent, as a bundle."""
  rows = _iris()
  batch = pa.RecordBatch.from_pylist([{m: float(r[m]) for m in MEASURES} for r in rows])
  spec = fit_in_memory(FeatureSpec(tuple(Feature(m, 'float', (ZScore(),)) for m in MEASURES)), [batch])
  x = spec.transform(batch).astype(np.float64)
  y = np.eye(3)[[SPECIES.index(r['species']) for r in rows]]
  weights, bias = np.zeros((4, 3)), np.zeros(3)
  for _ in range(300):
    p = linear(x, weights, bias)
    weights -= 0.5 * x.T @ (p - y) / len(x)
    bias -= 0.5 * (p - y).mean(axis=0)
  assert (linear(x, weights, bias).argmax(axis=1) == y.argmax(axis=1)).mean() > 0.9  # it learned
  path = str(tmp_path_factory.mktemp('iris') / 'bundle')
  save_linear_model(os.path.join(path, 'saved_model'), weights, bias)
  _LEARNED[path] = weights, bias  # what the model computes, to compare against
  return write_bundle(path, features=spec, outputs=Outputs('classification', SPECIES), name='iris', version='1')


def _expected(bundle, rows: list[dict]) -> np.ndarray:
  batch = pa.RecordBatch.from_pylist([{m: float(r[m]) for m in MEASURES} for r in rows])
  return linear(bundle.features.transform(batch), *_LEARNED[bundle.path])


def _main(tmp_path, bundle, input_path, *extra, run_id='own-data') -> int:
  return run_job.main([f'--input={input_path}', f'--model={bundle.path}', f'--output={tmp_path / "out"}',
                       f'--run_id={run_id}', '--quiet', *extra])


def _published(tmp_path, run_id='own-data') -> dict:
  return publish.read_pointer(str(tmp_path / 'out'), run_id)


def _read_outputs(summary: dict, pattern: str) -> pa.Table:
  files = sorted(glob.glob(os.path.join(summary['output'], pattern)))
  return pa.concat_tables([pq.read_table(f) for f in files]) if files else None


# ---- flags ----------------------------------------------------------------------------------------


def test_unknown_flags__a_typo_is_named_with_the_flag_it_resembles():
  assert unknown_flags(['--input=x', '--key_colum', 'id', '--direct_num_workers=2']) == [
      'unknown flag --key_colum; did you mean --key_column?']
  assert unknown_flags(['--input=x', '--runner=DirectRunner', '--project=p', '--report', '--quiet=false']) == []
  assert unknown_flags(['--zzz_not_a_flag=1'])[0].startswith('unknown flag --zzz_not_a_flag (see ')
  assert unknown_flags(['--input', 'x', 'stray'])[0] == "unexpected argument 'stray': every argument is a --flag or its value"


def test_mistyped_flag__exits_2_before_anything_runs(tmp_path, iris_bundle):
  data = tmp_path / 'iris.jsonl'
  data.write_text('\n'.join(json.dumps(r) for r in _iris()[:5]) + '\n')
  env = {**os.environ, 'PYTHONPATH': REPO, 'TF_CPP_MIN_LOG_LEVEL': '3'}
  done = subprocess.run([sys.executable, '-m', 'pipelines.run', f'--input={data}', f'--model={iris_bundle.path}',
                         f'--output={tmp_path / "out"}', '--key_colum', 'id'], capture_output=True, text=True,
                        env=env, cwd=REPO, timeout=300)
  assert done.returncode == 2
  assert 'unknown flag --key_colum; did you mean --key_column?' in done.stderr
  assert not (tmp_path / 'out').exists()


def test_boolean_flags__stand_alone_or_take_true_or_false():
  from apache_beam.options.pipeline_options import PipelineOptions
  for flag in ('report', 'quiet', 'watch', 'preflight_only', 'wait_for_job', 'share_model_across_processes'):
    assert getattr(PipelineOptions([f'--{flag}']).view_as(BatchInferenceOptions), flag) is True
    assert getattr(PipelineOptions([f'--{flag}=false']).view_as(BatchInferenceOptions), flag) is False
    assert getattr(PipelineOptions([f'--{flag}', 'no']).view_as(BatchInferenceOptions), flag) is False


def test_help__shows_the_values_boolean_flags_take(capsys):
  assert run_job.main(['--help']) == 0
  text = capsys.readouterr().out
  assert '--report [true|false]' in text and '--max_rejected_fraction' in text


# ---- empty days -----------------------------------------------------------------------------------


def _write_empty(path: str, file_format: str) -> None:
  if file_format == 'csv':
    with open(path, 'w', encoding='utf-8') as f:
      f.write('id,' + ','.join(MEASURES) + ',note\n')  # header only
  elif file_format == 'parquet':
    pq.write_table(pa.table({'id': pa.array([], pa.int64()), **{m: pa.array([], pa.float64()) for m in MEASURES},
                             'note': pa.array([], pa.string())}), path)
  elif file_format == 'avro':
    schema = {'type': 'record', 'name': 'Iris', 'fields': [{'name': 'id', 'type': 'long'}] + [
        {'name': m, 'type': 'double'} for m in MEASURES] + [{'name': 'note', 'type': 'string'}]}
    with open(path, 'wb') as f:
      fastavro.writer(f, schema, [])
  else:  # jsonl, tfrecord: an empty file
    open(path, 'wb').close()


@pytest.mark.parametrize('file_format', ['csv', 'jsonl', 'parquet', 'avro', 'tfrecord'])
def test_empty_input__is_a_published_run_of_zero_rows(tmp_path, iris_bundle, file_format, capsys):
  path = str(tmp_path / f'day.{file_format}')
  _write_empty(path, file_format)
  code = _main(tmp_path, iris_bundle, path, '--key_column=id', '--passthrough_columns=note,sepalLength')
  assert code == 0, capsys.readouterr().err
  summary = _published(tmp_path)
  assert (summary['state'], summary['rows_read'], summary['rows_predicted'], summary['rows_rejected']) == (
      'DONE', 0, 0, 0)
  assert status.main(['--run_id=own-data', f'--output={tmp_path / "out"}']) == 0


def test_watch__an_empty_file_is_done_not_failed(tmp_path, iris_bundle):
  inbox = tmp_path / 'inbox'
  inbox.mkdir()
  (inbox / 'monday.jsonl').write_bytes(b'')
  (inbox / 'tuesday.csv').write_text('id,' + ','.join(MEASURES) + '\n')
  code = run_job.main([f'--input={inbox}/*', f'--model={iris_bundle.path}', f'--output={tmp_path / "out"}',
                       '--watch', '--watch_max_files=2', '--watch_interval=0.2', '--key_column=id',
                       '--passthrough_columns=petalWidth', '--quiet'])
  assert code == 0
  with open(tmp_path / 'out' / '_watch' / 'processed.jsonl', encoding='utf-8') as f:
    entries = [json.loads(line) for line in f]
  assert sorted((os.path.basename(e['path']), e['state'], e['rows_read']) for e in entries) == [
      ('monday.jsonl', 'DONE', 0), ('tuesday.csv', 'DONE', 0)]


# ---- CSV as real tools write it -------------------------------------------------------------------


def test_csv_quoted_line_breaks__one_record_each_predicted_with_its_text(tmp_path, iris_bundle):
  rows = _iris()
  path = tmp_path / 'notes.csv'
  with open(path, 'w', encoding='utf-8', newline='') as f:  # as spreadsheets and pandas write it
    writer = csv.writer(f)
    writer.writerow(['id'] + MEASURES + ['note'])
    for i, r in enumerate(rows):
      note = f'seen twice,\nsecond look "{i}"\r\nthird line' if i % 3 == 0 else f'plain {i}'
      writer.writerow([i] + [r[m] for m in MEASURES] + [note])
  assert _main(tmp_path, iris_bundle, str(path), '--key_column=id', '--passthrough_columns=note') == 0
  summary = _published(tmp_path)
  assert (summary['rows_read'], summary['rows_predicted'], summary['rows_rejected']) == (len(rows), len(rows), 0)
  table = _read_outputs(summary, 'predictions-*.parquet')
  assert table.schema.field('id').type == pa.string()  # CSV has no types: its keys are text
  table = table.take(np.argsort([int(i) for i in table.column('id').to_pylist()]))
  assert table.column('id').to_pylist() == [str(i) for i in range(len(rows))]
  notes = table.column('note').to_pylist()
  assert notes[0] == 'seen twice,\nsecond look "0"\r\nthird line' and notes[1] == 'plain 1'
  probabilities = np.stack([table.column(f'probability_{s}').to_numpy() for s in SPECIES], axis=1)
  np.testing.assert_allclose(probabilities, _expected(iris_bundle, rows), rtol=1e-4, atol=1e-5)


def test_csv_repeated_column__used_is_a_preflight_error_unused_is_ignored(tmp_path, iris_bundle, capsys):
  rows = _iris()[:20]
  used, unused = tmp_path / 'used.csv', tmp_path / 'unused.csv'
  for path, header in ((used, MEASURES + ['petalWidth']), (unused, MEASURES + ['year', 'year'])):
    with open(path, 'w', encoding='utf-8', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(header)
      for r in rows:
        writer.writerow([r[m] for m in MEASURES] + ['2019', '2020'][:len(header) - 4])
  assert _main(tmp_path, iris_bundle, str(used), run_id='used') == 2
  err = capsys.readouterr().err
  assert "the header names column 'petalWidth' 2 times" in err and 'rename the copies' in err
  assert 'Traceback' not in err and 'KeyError' not in err
  assert _main(tmp_path, iris_bundle, str(unused), run_id='unused') == 0
  assert _published(tmp_path, 'unused')['rows_predicted'] == 20


def test_read_stage_dead_letters__carry_the_key_when_the_record_holds_it(tmp_path, iris_bundle, read_dead_letters):
  rows = _iris()[:6]
  csv_path = tmp_path / 'in' / 'a.csv'
  csv_path.parent.mkdir()
  lines = ['id,' + ','.join(MEASURES)] + [f'{100 + i},' + ','.join(str(r[m]) for m in MEASURES)
                                          for i, r in enumerate(rows)]
  lines[2] += ',surplus'  # one field too many: unparsable, but its id is readable
  csv_path.write_text('\n'.join(lines) + '\n')
  jsonl = [json.dumps({'id': 200 + i, **{m: r[m] for m in MEASURES}}) for i, r in enumerate(rows)]
  jsonl[3] = jsonl[3][:-1] + ', "sepalWidth": }'  # malformed JSON that still names its id
  (tmp_path / 'in' / 'b.jsonl').write_text('\n'.join(jsonl) + '\n')
  assert _main(tmp_path, iris_bundle, str(tmp_path / 'in' / '*'), '--key_column=id',
               '--max_rejected_fraction=1') == 0  # 2 of 12 rows rejected: over the default bound
  letters = {(d['source'].rsplit('/', 1)[-1], d['row']): d
             for d in read_dead_letters(_published(tmp_path)['dead_letter'])}
  assert set(letters) == {('a.csv', 3), ('b.jsonl', 4)}
  assert letters[('a.csv', 3)]['key'] == '101' and letters[('a.csv', 3)]['reason_code'] == 'unparsable'
  assert letters[('b.jsonl', 4)]['key'] == '203'


@pytest.mark.parametrize('file_format', ['parquet', 'jsonl'])
def test_integer_key__stays_an_integer(tmp_path, iris_bundle, file_format):
  rows = [{'id': 10_000_000_000 + i, **{m: r[m] for m in MEASURES}} for i, r in enumerate(_iris())]
  path = str(tmp_path / f'ids.{file_format}')
  if file_format == 'parquet':
    pq.write_table(pa.Table.from_pylist(rows), path)
  else:
    with open(path, 'w', encoding='utf-8') as f:
      f.write('\n'.join(json.dumps(r) for r in rows) + '\n')
  assert _main(tmp_path, iris_bundle, path, '--key_column=id', '--output_format=parquet') == 0
  table = _read_outputs(_published(tmp_path), 'predictions-*.parquet')
  assert table.schema.field('id').type == pa.int64()
  assert sorted(table.column('id').to_pylist()) == [r['id'] for r in rows]


def test_integer_key__a_value_that_is_not_an_integer_is_a_dead_letter(tmp_path, iris_bundle, read_dead_letters):
  rows = [{'id': i, **{m: r[m] for m in MEASURES}} for i, r in enumerate(_iris()[:10])]
  (tmp_path / 'in').mkdir()
  with open(tmp_path / 'in' / 'a.jsonl', 'w', encoding='utf-8') as f:  # the first file types the key: integer
    f.write('\n'.join(json.dumps(r) for r in rows[:5]) + '\n')
  with open(tmp_path / 'in' / 'b.jsonl', 'w', encoding='utf-8') as f:
    f.write('\n'.join(json.dumps({**r, 'id': f'x{r["id"]}' if r['id'] == 7 else r['id']}) for r in rows[5:]) + '\n')
  assert _main(tmp_path, iris_bundle, str(tmp_path / 'in' / '*.jsonl'), '--key_column=id',
               '--max_rejected_fraction=1') == 0  # 1 of 10 rows rejected: over the default bound
  summary = _published(tmp_path)
  assert (summary['rows_predicted'], summary['rows_rejected']) == (9, 1)
  [letter] = read_dead_letters(summary['dead_letter'])
  assert letter['key'] == 'x7' and letter['reason_code'] == 'invalid_type' and 'not an integer' in letter['reason']


# ---- a run that must not look successful ----------------------------------------------------------


def test_every_row_rejected__fails_and_publishes_nothing(tmp_path, iris_bundle, capsys):
  path = tmp_path / 'broken.jsonl'
  path.write_text('\n'.join(json.dumps({'sepalLength': 'n/a', **{m: 1.0 for m in MEASURES[1:]}})
                            for _ in range(30)) + '\n')
  assert _main(tmp_path, iris_bundle, str(path)) == 1
  err = capsys.readouterr().err
  assert ('rejected 100.00% of its rows (30 of 30), more than --max_rejected_fraction=0.05 allows; '
          'top reasons: invalid_type 30') in err
  assert _published(tmp_path) is None
  assert status.main(['--run_id=own-data', f'--output={tmp_path / "out"}']) == 1


def test_max_rejected_fraction__fails_a_run_over_it_and_passes_one_under(tmp_path, iris_bundle, capsys):
  rows = [{m: r[m] for m in MEASURES} for r in _iris()]
  for r in rows[:30]:  # 20% unusable
    r['petalWidth'] = None
  path = tmp_path / 'some_bad.jsonl'
  path.write_text('\n'.join(json.dumps(r) for r in rows) + '\n')
  assert _main(tmp_path, iris_bundle, str(path), '--max_rejected_fraction=0.1', run_id='strict') == 1
  assert ('rejected 20.00% of its rows (30 of 150), more than --max_rejected_fraction=0.1 allows; '
          'top reasons: missing_value 30') in capsys.readouterr().err
  assert _published(tmp_path, 'strict') is None
  assert _main(tmp_path, iris_bundle, str(path), run_id='default') == 1  # over the default bound, 0.05
  assert _main(tmp_path, iris_bundle, str(path), '--max_rejected_fraction=0.25', run_id='loose') == 0
  assert _published(tmp_path, 'loose')['rows_rejected'] == 30


def test_max_rejected_fraction_of_1__lets_a_run_of_only_rejections_publish(tmp_path, iris_bundle):
  path = tmp_path / 'all_bad.jsonl'
  path.write_text('\n'.join(json.dumps({m: None for m in MEASURES}) for _ in range(4)) + '\n')
  assert _main(tmp_path, iris_bundle, str(path), '--max_rejected_fraction=1') == 0
  assert _published(tmp_path)['rows_rejected'] == 4
