"""The BigQuery variants of the benchmark: table to table through the local emulators."""

import argparse
import json
import os
import pathlib

import pytest

from benchmarks import emulated
from benchmarks import run as bench

BIGQUERY_VARIANTS = ['ours-bq', 'raw-bq', 'beam-textbook-bq']


def _processes_under(directory: pathlib.Path) -> list[int]:
  """Processes whose working directory is in `directory` (the emulators run in their work folder)."""
  found = []
  for name in filter(str.isdigit, os.listdir('/proc')):
    try:
      cwd = pathlib.Path(os.readlink(f'/proc/{name}/cwd'))
    except OSError:
      continue
    if cwd == directory or directory in cwd.parents:
      found.append(int(name))
  return found


def test_commands__bigquery_variants_run_under_the_emulator_launcher_table_to_table():
  args = argparse.Namespace(ours_flags=['--max_batch_rows=4096'])
  table_in, table_out, temp = 'bq://bench-project.bench.in', 'bq://bench-project.bench.out', 'gs://bench-bucket/t'
  commands = {v: bench.commands(v, table_in, 'MODEL', table_out, args, temp_location=temp) for v in BIGQUERY_VARIANTS}

  for command in commands.values():
    assert command[1:3] == ['-m', 'benchmarks.emulated']
    assert {f'--input={table_in}', f'--output={table_out}', f'--temp_location={temp}'} <= set(command)
  assert commands['ours-bq'][3] == 'pipelines.run'
  assert {'--key_column=id', '--max_batch_rows=4096'} <= set(commands['ours-bq'])
  assert not any(a.startswith('--bq_write_method') for a in commands['ours-bq'])  # FILE_LOADS, the default
  assert commands['raw-bq'][3] == 'benchmarks.raw_bq'
  assert commands['beam-textbook-bq'][3] == 'benchmarks.textbook_bq'
  assert '--temp_dataset=bench-project.bench_temp' in commands['beam-textbook-bq']


@pytest.mark.parametrize('variants, checked', [('ours,ours-bq,raw-bq', ['ours', 'ours-bq']), ('raw,ours', ['ours'])])
def test_memory_check__covers_ours_bq_when_it_runs(tmp_path, monkeypatch, variants, checked):
  calls = []

  def fake_run(variant, rows, args, round_no, bq=None):
    calls.append((variant, rows, round_no))
    return {'variant': variant, 'rows': rows, 'round': round_no, 'ok': True, 'rows_per_s': rows / 10,
            'wall_s': 10.0, 'peak_rss_mb': 800.0 + rows / 1000, 'first_prediction_s': 5.0}

  monkeypatch.setattr(bench, 'run_once', fake_run)
  monkeypatch.setattr(bench, '_start_bigquery', lambda *unused: None)
  assert bench.main(['--rows=1000', '--repeats=1', '--startup_rounds=0', f'--variants={variants}', f'--work={tmp_path}']) == 0

  memory = [(v, rows) for v, rows, round_no in calls if round_no >= 100]
  assert memory == [(v, rows) for v in checked for rows in (1000, 4000)]
  table = (tmp_path / 'results.md').read_text()
  for name in checked:
    assert f'memory check (passed): `{name}` peak RSS 801 MB at 1,000 rows, 804 MB at 4,000 rows' in table
  if 'ours-bq' in checked:
    assert 'ours-bq / ours: 1.00×' in table and 'ours-bq / raw-bq: 1.00×' in table


def test_emulated__says_which_variables_are_missing(monkeypatch):
  for name in (emulated.REST_URL, emulated.GRPC_ENDPOINT, emulated.GCS_ENDPOINT, emulated.PROJECT):
    monkeypatch.delenv(name, raising=False)
  with pytest.raises(SystemExit, match='BIGQUERY_EMULATOR_HOST, BENCH_BIGQUERY_GRPC_ENDPOINT'):
    emulated.main(['pipelines.run'])


@pytest.mark.slow
def test_bench__bigquery_variants_predict_every_row_and_the_emulators_stop(tmp_path, penguin_bundle):
  work = tmp_path / 'bench'
  code = bench.main(['--rows=3000', '--repeats=1', f'--variants={",".join(BIGQUERY_VARIANTS)}', '--memory_check=0',
                     '--startup_rounds=0', f'--work={work}', f'--model={penguin_bundle.path}'])

  assert code == 0
  results = json.loads((work / 'results.json').read_text())
  expected = json.loads((work / 'data-3000' / 'manifest.json').read_text())['complete_rows']
  assert expected < 3000  # the example's gaps are rejected
  for name in BIGQUERY_VARIANTS:
    run, = [r for r in results['runs'] if r['variant'] == name]
    assert run['ok'] and run['rows_predicted'] == expected, run  # counted in its output table
  table = (work / 'results.md').read_text()
  assert '| ours-bq | 3,000 |' in table and '| beam-textbook-bq | 3,000 |' in table
  assert 'ours-bq / raw-bq:' in table and 'ours-bq / beam-textbook-bq:' in table
  assert _processes_under((work / 'emulators').resolve()) == []
