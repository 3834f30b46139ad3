"""Bad input through the real steps and the real model: every row read is
predicted or rejected with a reason, whatever the file holds."""

import csv
import glob
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from models.handlers.tensorflow import SavedModelPredictor
from models.examples.penguins import train
from pipelines import run as run_job
from transforms.rows import dead_letters as dl
from transforms.rows.dead_letters import Rejected
from transforms.files.readers import read_file
from transforms.rows.validation import validate

with open(train.EXAMPLE_DATA, encoding='utf-8') as _f:
  PENGUINS = list(csv.DictReader(_f))[:60]
NASTY = ['', ' ', None, 'NaN', 'inf', '-Infinity', '1e400', 'abc', '١٢', '3,5', 'Ísland', '🐧', 'x' * 20_000, '0x10']


@pytest.fixture(scope='module')
def predictor(penguin_bundle):
  return SavedModelPredictor(penguin_bundle.saved_model_path)


@st.composite
def observations(draw):
  """Penguin rows with some cells replaced by nasty values, and columns added or dropped."""
  rows = []
  for row in draw(st.lists(st.sampled_from(PENGUINS), max_size=25)):
    row = dict(row)
    for name in draw(st.lists(st.sampled_from(sorted(row)), max_size=3)):
      row[name] = draw(st.sampled_from(NASTY))
    rows.append(row)
  dropped = draw(st.sampled_from([None, None, 'year', 'body_mass_g', 'sex', 'bill_depth_mm']))
  extra = draw(st.booleans())
  for row in rows:
    row.pop(dropped, None)
    if extra:
      row['comment'] = 'ünïcödé, "quoted"'
  return rows


def _write(rows: list[dict], path: str, file_format: str) -> None:
  names = list(dict.fromkeys(k for r in rows for k in r)) or ['species']
  if file_format == 'csv':
    with open(path, 'w', encoding='utf-8', newline='') as f:
      writer = csv.DictWriter(f, names, lineterminator='\n')
      writer.writeheader()
      writer.writerows(rows)
  elif file_format == 'jsonl':
    with open(path, 'w', encoding='utf-8') as f:
      f.writelines(json.dumps(r, ensure_ascii=False) + '\n' for r in rows)
  else:
    pq.write_table(pa.table({n: pa.array([r.get(n) for r in rows], pa.string()) for n in names}), path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(observations(), st.sampled_from(['csv', 'jsonl', 'parquet']), st.integers(1, 16))
def test_read_validate_predict__rows_read_equal_predicted_plus_rejected(
    tmp_path, penguin_bundle, predictor, rows, file_format, batch_size):
  path = str(tmp_path / f'obs.{file_format}')
  _write(rows, path, file_format)
  spec = penguin_bundle.features
  read = predicted = rejected = 0
  with open(path, 'rb') as f:
    for item in read_file(f, path, file_format, batch_size=batch_size, columns=spec.columns):
      if isinstance(item, Rejected):
        read += item.letters.num_rows
        rejected += item.letters.num_rows
        continue
      read += item.num_rows
      valid, letters = validate(item, spec)
      if letters is not None:
        rejected += letters.num_rows
        assert all(r['source'] == path and r['row'] >= 1 and r['reason'] for r in letters.to_pylist())
      if valid.num_rows:
        scores = predictor.predict(spec.transform(valid))
        assert scores.shape == (valid.num_rows, 3) and np.isfinite(scores).all()
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-4)
        predicted += valid.num_rows
  event(f"some rows predicted: {predicted > 0}, some rejected: {rejected > 0}")
  assert read == len(rows)
  assert read == predicted + rejected


@pytest.mark.slow
def test_job_over_a_folder_of_bad_files__accounts_for_every_row(tmp_path, penguin_bundle):
  data = tmp_path / 'in'
  data.mkdir()
  header = 'species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year'
  (data / 'a_good.csv').write_text(open(train.EXAMPLE_DATA, encoding='utf-8').read())
  (data / 'b_bad.csv').write_text(
      f'{header},extra\n'
      'Adelie,Torgersen,39.1,18.7,181,3750,male,2007,x\n'      # 2: good, extra column
      'Adelie,Torgersen,"39.1",18.7,181\n'                     # 3: too few columns
      'Adelie,Dream, 40 ,18.7,181,,,2007,\n'                   # 4: number with blanks, fills: good
      'Adelie,Dream,NaN,18.7,181,3750,male,2007,\n'            # 5: NaN is missing, required
      'Adelie,🐧,40,18.7,1e400,3750,male,2007,\n'              # 6: overflows to inf
      'Adelie,Dream,40,18.7,"181', encoding='utf-8')           # 7: truncated mid-quote
  (data / 'c.jsonl').write_text(
      '{"island": "Biscoe", "bill_length_mm": 45.2, "bill_depth_mm": 14.8, "flipper_length_mm": 212}\n'
      '{"island": "Biscoe", "bill_length_mm": "45.2", "bill_depth_mm": 14.8, "flipper_length_mm": 212, "z": [1]}\n'
      '{"island": "Biscoe", "bill_length_mm": true, "bill_depth_mm": 14.8, "flipper_length_mm": [212]}\n'
      '[1, 2, 3]\n'
      '\n'
      '{"island": "Biscoe", "bill_length_mm": 45.2, "bill_de', encoding='utf-8')
  pq.write_table(pa.table({
      'island': ['Dream', None, 'Dream', 'Ísland'],
      'bill_length_mm': [40.0, 41.0, float('inf'), 42.0],
      'bill_depth_mm': [18.0, 18.0, 18.0, float('nan')],
      'flipper_length_mm': pa.array([190, 191, 192, 193], pa.int32()),
  }), data / 'd.parquet')
  (data / 'e_empty.csv').write_text('')
  (data / 'f_empty.parquet').write_bytes(b'')
  pq.write_table(pa.table({'island': pa.array([], pa.string())}), data / 'g_no_rows.parquet')
  (data / 'h_latin1.csv').write_bytes(
      f'{header}\nAdelie,Dream,40,18.7,181,3750,male,2007\n'.encode() +
      'Adelie,Dréam,40,18.7,181,3750,male,2007\n'.encode('latin-1'))    # 3: not UTF-8

  summary = run_job.run([f'--input={data}/*', f'--model={penguin_bundle.path}', f'--output={tmp_path / "out"}',
                         '--run_id=bad-files', '--read_batch_size=3'])

  letters = [json.loads(line) for p in glob.glob(os.path.join(summary.dead_letter, 'dead_letters-*'))
             for line in open(p, encoding='utf-8') if line.strip()]
  predictions = pa.concat_tables(pq.read_table(p) for p in glob.glob(os.path.join(summary.output, 'predictions-*')))
  assert summary.files_read == 8
  assert summary.rows_read == 344 + 6 + 5 + 4 + 2
  assert summary.reconciled and summary.rows_rejected == len(letters)
  assert summary.rows_predicted == predictions.num_rows == len(set(predictions.column('row_id').to_pylist()))
  by_position = {(os.path.basename(d['source']), d['row']): d['reason_code'] for d in letters}
  assert {k: v for k, v in by_position.items() if k[0] != 'a_good.csv'} == {
      ('b_bad.csv', 3): dl.UNPARSABLE, ('b_bad.csv', 5): dl.MISSING_VALUE, ('b_bad.csv', 6): dl.NON_FINITE,
      ('b_bad.csv', 7): dl.UNPARSABLE, ('c.jsonl', 3): dl.INVALID_TYPE, ('c.jsonl', 4): dl.UNPARSABLE,
      ('c.jsonl', 6): dl.UNPARSABLE, ('d.parquet', 2): dl.MISSING_VALUE, ('d.parquet', 3): dl.NON_FINITE,
      ('d.parquet', 4): dl.MISSING_VALUE, ('h_latin1.csv', 3): dl.UNPARSABLE}
  assert all(d['reason'] and d['run_id'] == 'bad-files' for d in letters)
