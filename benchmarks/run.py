"""The benchmark: our pipeline against the raw model and the alternatives, on this machine.

    python -m benchmarks.run --rows 1000000 --repeats 3

Every variant does the same work (N resampled penguin rows as Parquet, through
the example model and its features, predictions written as Parquet) in its own
process, measured from outside (see benchmarks/measure.py). The BigQuery
variants (`-bq`) do it table to table on the same rows, through local
emulators started once for the run (benchmarks/bigquery_env.py). Variants run
interleaved, round after round, in a rotating order, so a noisy neighbour on a
shared machine hits them all alike; the tables report medians, and ratios to
`raw` are medians of ratios taken within one round.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import sys
from typing import Callable, Optional

import pyarrow.parquet as pq

from benchmarks import bigquery_env, report, startup
from testing.data import make_dataset
from benchmarks.measure import run_measured
from testing.emulators import EmulatorError

VARIANTS = ('raw', 'ours', 'ours-2proc', 'beam-textbook', 'mltransform', 'ray-data', 'ours-bq', 'raw-bq',
            'beam-textbook-bq')
# Table in, table out, through the emulators: the same rows and work as their Parquet namesakes.
BIGQUERY_VARIANTS = ('ours-bq', 'raw-bq', 'beam-textbook-bq')
# Peak memory is checked at N and 4N rows for `ours` always, and for these when they run.
MEMORY_CHECKED_WHEN_RUN = ('ours-bq',)
# MLTransform runs at about a thousand rows/s here, so it runs on at most this
# many rows (its rate is flat in N); every other variant does the full work.
SLOW_ROWS = {'mltransform': 20_000}


def _venv_python(venv: str) -> Optional[str]:
  path = os.path.join(venv, 'bin', 'python')
  return path if os.path.exists(path) else None


def commands(variant: str, data: str, model: str, output: str, args, *,
             temp_location: Optional[str] = None) -> list[str]:
  """The command line of one variant run.

  `data` and `output` are directories, or for a BigQuery variant bq:// tables
  (with a gs:// `temp_location`); those run under benchmarks.emulated, which
  points the process's clients at the emulators.
  """
  py = sys.executable
  if variant in BIGQUERY_VARIANTS:
    emulated = [py, '-m', 'benchmarks.emulated']
    common = [f'--input={data}', f'--model={model}', f'--output={output}', f'--temp_location={temp_location}',
              f'--project={bigquery_env.PROJECT}']
    if variant == 'ours-bq':
      return [*emulated, 'pipelines.run', *common, '--key_column=id', '--run_id=bench', *args.ours_flags]
    if variant == 'raw-bq':
      return [*emulated, 'benchmarks.raw_bq', *common]
    return [*emulated, 'benchmarks.textbook_bq', *common,
            f'--temp_dataset={bigquery_env.PROJECT}.{bigquery_env.TEMP_DATASET}']
  files = os.path.join(data, '*.parquet')
  common = [f'--input={files}', f'--model={model}', f'--output={output}']
  if variant == 'raw':
    return [py, '-m', 'benchmarks.raw', *common]
  if variant in ('ours', 'ours-2proc'):
    cmd = [py, '-m', 'pipelines.run', *common, '--key_column=id', '--run_id=bench', *args.ours_flags]
    if variant == 'ours-2proc':
      cmd += ['--direct_num_workers=2', '--direct_running_mode=multi_processing']
    return cmd
  if variant == 'beam-textbook':
    return [py, '-m', 'benchmarks.textbook', *common]
  if variant == 'mltransform':
    return [_venv_python(args.tft_venv), '-m', 'benchmarks.mltransform', *common]
  if variant == 'ray-data':
    return [_venv_python(args.ray_venv), '-m', 'benchmarks.ray_data', *common]
  raise ValueError(f'unknown variant {variant!r}')


def unavailable(variant: str, args) -> Optional[str]:
  """Why a variant cannot run here, or None."""
  for name, venv in (('mltransform', args.tft_venv), ('ray-data', args.ray_venv)):
    if variant == name and not _venv_python(venv):
      note = os.path.join(venv, 'UNAVAILABLE')
      if os.path.exists(note):
        with open(note, encoding='utf-8') as f:
          return f.read().strip()
      return f'no virtualenv at {venv} (./launch.sh bench makes it)'
  return None


def predicted_rows(output: str) -> int:
  """Rows in the final prediction files a run left (temporary shards excluded)."""
  total = 0
  for directory, dirs, files in os.walk(output):
    dirs[:] = [d for d in dirs if not d.startswith(('beam-temp', '.'))]
    total += sum(pq.ParquetFile(os.path.join(directory, f)).metadata.num_rows
                 for f in files if f.endswith('.parquet') and 'dead_letters' not in f)
  return total


def _target(variant: str, rows: int, args, round_no: int, data: str, bq: Optional[bigquery_env.BigQueryBench]
            ) -> tuple[list[str], str, dict[str, str], Callable[[], int], Callable[[], None]]:
  """What one run executes and writes: its command, the folder where its Parquet output
  appears, the variables it needs, how to count its predictions and how to discard them."""
  if variant in BIGQUERY_VARIANTS:
    out = bq.destination(variant, rows, round_no)  # a table of its own: see benchmarks/bigquery_env.py
    command = commands(variant, bq.observations(data, rows), args.model, out.table, args,
                       temp_location=out.temp_location)
    return command, out.temp_dir, bq.environment(), lambda: bq.predicted_rows(out), lambda: bq.discard(out)
  output = os.path.join(args.work, 'out', variant)
  shutil.rmtree(output, ignore_errors=True)
  return (commands(variant, data, args.model, output, args), output, {}, lambda: predicted_rows(output),
          lambda: shutil.rmtree(output, ignore_errors=True))


def run_once(variant: str, rows: int, args, round_no: int, bq: Optional[bigquery_env.BigQueryBench] = None) -> dict:
  data = os.path.join(args.work, f'data-{rows}')
  manifest = make_dataset(data, rows)
  command, output, variables, count, discard = _target(variant, rows, args, round_no, data, bq)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', **variables)
  env['PYTHONPATH'] = os.pathsep.join(p for p in (os.getcwd(), env.get('PYTHONPATH')) if p)
  m = run_measured(command, output_dir=output,
                   log_path=os.path.join(args.work, 'logs', f'{variant}-{rows}-{round_no}.log'), env=env)
  predicted = count() if m.returncode == 0 else 0
  ok = m.returncode == 0 and predicted == manifest['complete_rows']
  result = {'variant': variant, 'rows': rows, 'round': round_no, 'ok': ok, 'returncode': m.returncode,
            'rows_predicted': predicted, 'rows_expected': manifest['complete_rows'], 'wall_s': round(m.wall_s, 3),
            'rows_per_s': round(rows / m.wall_s, 1), 'peak_rss_mb': round(m.peak_rss_mb, 1),
            'first_prediction_s': None if m.first_prediction_s is None else round(m.first_prediction_s, 2)}
  print(json.dumps(result), flush=True)
  if not ok:
    print(f'{variant} failed (exit {m.returncode}, {predicted} of {manifest["complete_rows"]} rows); '
          f'log tail:\n{m.log[-1500:]}', file=sys.stderr, flush=True)
  discard()
  return result


def _start_bigquery(variants: list[str], args, skipped: dict[str, str],
                    stack: contextlib.ExitStack) -> Optional[bigquery_env.BigQueryBench]:
  """The emulators, started once for the run if a BigQuery variant runs; else None.

  Where they cannot start, the BigQuery variants are skipped with the reason.
  """
  wanted = [v for v in variants if v in BIGQUERY_VARIANTS and v not in skipped]
  if not wanted:
    return None
  try:
    return stack.enter_context(bigquery_env.BigQueryBench(os.path.join(args.work, 'emulators')))
  except EmulatorError as e:
    why = f'the BigQuery emulators did not start: {str(e).splitlines()[0]}'
    skipped.update({v: why for v in wanted})
    return None


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rows', type=int, default=200_000, help='Rows of input (the documented run uses 1000000).')
  parser.add_argument('--repeats', type=int, default=3, help='Rounds of every variant; medians are reported.')
  parser.add_argument('--variants', default=','.join(VARIANTS), help=f'Comma-separated subset of {VARIANTS}.')
  parser.add_argument('--model', default='build/bundles/penguins', help='The example model bundle.')
  parser.add_argument('--work', default='build/bench', help='Data, logs and results go here.')
  parser.add_argument('--ray_venv', default='build/bench/ray-venv')
  parser.add_argument('--tft_venv', default='build/bench/tft-venv')
  parser.add_argument('--memory_check', type=int, default=1,
                      help='Rounds of `ours` (and `ours-bq` when it runs) at N and 4N rows to check peak memory '
                      'stays flat; 0 skips.')
  parser.add_argument('--ours_flags', default='',
                      help='Extra flags for `ours` and `ours-bq`, e.g. "--max_batch_rows=4096".')
  parser.add_argument('--startup_rounds', type=int, default=3,
                      help='Rounds of the 344-row example against a bare TensorFlow load, and with an ONNX and a '
                      'scikit-learn bundle (benchmarks/startup.py); 0 skips.')
  parser.add_argument('--estimate_rows', type=int, default=0,
                      help='Also measure --estimate\'s error at this many rows, for a SavedModel and an ONNX '
                      'bundle (benchmarks/estimate_error.py; 1000000 is the target\'s); 0 skips.')
  parser.add_argument('--update_readme', default=None,
                      help='Markdown page to put the table in, between its bench markers: docs/performance.md '
                      'for the documented run.')
  args = parser.parse_args(argv)
  args.ours_flags = args.ours_flags.split()
  variants = [v.strip() for v in args.variants.split(',') if v.strip()]
  unknown = set(variants) - set(VARIANTS)
  if unknown:
    parser.error(f'unknown variants {sorted(unknown)}; choose from {VARIANTS}')

  if args.startup_rounds and not os.path.isdir(args.model):
    parser.error(f'--model {args.model} is not a bundle folder; build it with ./launch.sh demo, or pass '
                 '--startup_rounds=0')
  skipped = {v: why for v in variants if (why := unavailable(v, args))}
  with contextlib.ExitStack() as stack:  # the emulators stop when the runs are done, whatever happens
    bq = _start_bigquery(variants, args, skipped, stack)
    runnable = [v for v in variants if v not in skipped]
    results = []
    for round_no in range(args.repeats):
      shift = round_no % len(runnable) if runnable else 0
      for variant in runnable[shift:] + runnable[:shift]:
        results.append(run_once(variant, min(args.rows, SLOW_ROWS.get(variant, args.rows)), args, round_no, bq))
    checked = ['ours'] + [v for v in MEMORY_CHECKED_WHEN_RUN if v in runnable]
    memory = []
    for round_no in range(args.memory_check):
      for variant in checked:
        for rows in (args.rows, 4 * args.rows):
          memory.append(run_once(variant, rows, args, 100 + round_no, bq))

  summary = report.summarize(results, memory, skipped, rows=args.rows, variants=variants)
  if args.startup_rounds:
    summary['startup'] = startup.summarize(startup.run_rounds(args.startup_rounds, args.model,
                                                              os.path.join(args.work, 'startup')))
  if args.estimate_rows:
    from benchmarks import estimate_error
    summary['estimate'] = estimate_error.main_report(args.estimate_rows, model=args.model,
                                                     work=os.path.join(args.work, 'estimate'))
  summary['started'] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
  summary['ours_flags'] = args.ours_flags
  paths = report.write(summary, args.work)
  print(report.markdown(summary))
  print('results: ' + ', '.join(paths))
  if args.update_readme:
    report.update_readme(args.update_readme, report.markdown(summary))
  return 0 if all(r['ok'] for r in results + memory + summary.get('startup', {}).get('runs', [])) else 1


if __name__ == '__main__':
  sys.exit(main())
