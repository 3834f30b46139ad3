"""Where each second of a BigQuery → BigQuery run goes, beside the same rows Parquet → Parquet.

    python -m benchmarks.bigquery_breakdown --rows 200000 --repeats 3

Starts the emulators (benchmarks/bigquery_env.py), then runs `ours-bq` and
`ours` interleaved, each under benchmarks/phases.py, which times the launcher's
and the job's steps inside the real command; prints, per phase, the median
seconds of each, and the emulator's own CPU seconds during the BigQuery runs
(it shares this machine's cores: what it spends is not ours, but a run waits
for it). Results: WORK/breakdown.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Optional

from benchmarks import bigquery_env
from benchmarks.measure import run_measured
from benchmarks.run import commands
from testing.data import make_dataset

BODY = 'the job: read, validate, features, predict, write (build end to its last step)'
AFTER = 'after publishing: pointer, clean-up, summary'
ORDER = ('interpreter start', "imports (Beam, ours; not the model's framework)", 'preflight: bundle load, model check, input files',
         'input table check', 'read session', 'output checks', 'resolve (all of the above)', 'build the graph',
         BODY, 'read a stream', 'report', 'publish every output', 'publish: load job (and MERGE for a re-run)',
         'publish: the run pointer', AFTER, 'process end')


def _cpu_seconds(pids: list[int]) -> float:
  """User + system CPU seconds of processes `pids` and their waited-for children, so far."""
  total = 0.0
  for pid in pids:
    try:
      with open(f'/proc/{pid}/stat', 'rb') as f:
        fields = f.read().rsplit(b')', 1)[1].split()
    except OSError:
      continue
    total += sum(int(x) for x in fields[11:15]) / os.sysconf('SC_CLK_TCK')
  return total


def run_one(variant: str, rows: int, args, round_no: int, bq: Optional[bigquery_env.BigQueryBench]) -> dict:
  data = os.path.join(args.work, f'data-{rows}')
  make_dataset(data, rows)
  phases_out = os.path.join(args.work, 'phases', f'{variant}-{round_no}.json')
  os.makedirs(os.path.dirname(phases_out), exist_ok=True)
  ns = argparse.Namespace(ours_flags=['--report=false'] if args.no_report else [])
  if variant == 'ours-bq':
    out = bq.destination(variant, rows, round_no)
    cmd = commands(variant, bq.observations(data, rows), args.model, out.table, ns, temp_location=out.temp_location)
    cmd[cmd.index('pipelines.run')] = 'benchmarks.phases'
    env_extra, output_dir = bq.environment(), out.temp_dir
  else:
    output_dir = os.path.join(args.work, 'out', f'{variant}-{round_no}')
    cmd = commands(variant, data, args.model, output_dir, ns)
    cmd[cmd.index('pipelines.run')] = 'benchmarks.phases'
    env_extra = {}
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PHASES_OUT=phases_out, **env_extra)
  env['PYTHONPATH'] = os.pathsep.join(p for p in (os.getcwd(), env.get('PYTHONPATH')) if p)
  emulator_pids = bq.pids() if bq and variant == 'ours-bq' else []
  cpu_before = _cpu_seconds(emulator_pids)
  m = run_measured(cmd, output_dir=output_dir, log_path=os.path.join(args.work, 'logs', f'{variant}-{round_no}.log'),
                   env=env)
  emulator_cpu = _cpu_seconds(emulator_pids) - cpu_before
  if m.returncode:
    raise RuntimeError(f'{variant} failed (exit {m.returncode}):\n{m.log[-1500:]}')
  with open(phases_out, encoding='utf-8') as f:
    phases = json.load(f)
  if variant == 'ours-bq':
    bq.discard(out)
  result = {'variant': variant, 'round': round_no, 'wall_s': m.wall_s, 'emulator_cpu_s': emulator_cpu,
            'phases': phases}
  print(json.dumps({k: v for k, v in result.items() if k != 'phases'}), flush=True)
  return result


def _phase_seconds(run: dict) -> dict[str, float]:
  """Each phase's seconds in one run (a phase seen several times, as streams are, sums)."""
  seconds: dict[str, float] = {}
  for p in run['phases']:
    seconds[p['phase']] = seconds.get(p['phase'], 0.0) + p['seconds']
  end = max(p['start'] for p in run['phases'])
  seconds['process end'] = end
  first = {p['phase']: p for p in reversed(run['phases'])}  # each phase's first occurrence
  built = first['build the graph']['start'] + first['build the graph']['seconds']
  finish = min(first[name]['start'] for name in ('report', 'publish every output') if name in first)
  seconds[BODY] = finish - built
  published = first['publish every output']
  seconds[AFTER] = end - (published['start'] + published['seconds'])
  seconds['process wall (measured outside)'] = run['wall_s']
  return seconds


def markdown(runs: list[dict], rows: int) -> str:
  variants = ('ours', 'ours-bq')
  medians = {v: {} for v in variants}
  for v in variants:
    mine = [_phase_seconds(r) for r in runs if r['variant'] == v]
    for phase in dict.fromkeys(k for m in mine for k in m):
      medians[v][phase] = statistics.median(m.get(phase, 0.0) for m in mine)
  emulator = statistics.median(r['emulator_cpu_s'] for r in runs if r['variant'] == 'ours-bq')
  lines = [f'{rows:,} rows, {len(runs) // 2} interleaved rounds, medians in seconds ("process end": when the run '
           'module finished, since the process started):', '',
           '| phase | Parquet → Parquet | BigQuery → BigQuery |', '| --- | ---: | ---: |']
  phases = [p for p in ORDER if any(p in medians[v] for v in variants)] + ['process wall (measured outside)']
  for phase in phases:
    cells = [f'{medians[v][phase]:.2f}' if phase in medians[v] else '–' for v in variants]
    lines.append(f'| {phase} | {cells[0]} | {cells[1]} |')
  lines += ['', f'The emulators spent {emulator:.1f} CPU seconds during each BigQuery run (median), on the same cores.']
  return '\n'.join(lines)


def rerender(work: str, rows: int) -> str:
  """The table again from WORK/breakdown.json, without running anything."""
  with open(os.path.join(work, 'breakdown.json'), encoding='utf-8') as f:
    return markdown(json.load(f), rows)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rows', type=int, default=200_000)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--model', default='build/bundles/penguins')
  parser.add_argument('--no_report', action='store_true', help='Run with --report=false.')
  parser.add_argument('--work', default='build/bench-breakdown')
  args = parser.parse_args(argv)
  runs = []
  with bigquery_env.BigQueryBench(os.path.join(args.work, 'emulators')) as bq:
    for round_no in range(args.repeats):
      order = ('ours', 'ours-bq') if round_no % 2 == 0 else ('ours-bq', 'ours')
      for variant in order:
        runs.append(run_one(variant, args.rows, args, round_no, bq))
  text = markdown(runs, args.rows)
  with open(os.path.join(args.work, 'breakdown.json'), 'w', encoding='utf-8') as f:
    json.dump(runs, f, indent=1)
  with open(os.path.join(args.work, 'breakdown.md'), 'w', encoding='utf-8') as f:
    f.write(text + '\n')
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
