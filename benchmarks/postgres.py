"""PostgreSQL as the output, measured: Parquet → PostgreSQL beside Parquet → Parquet, and lookups while publishing.

    python -m benchmarks.postgres --rows 1000000 --repeats 3 --out build/bench/postgres

Starts its own PostgreSQL server (the tests' helper, with fsync and full-page
writes on, as a real server keeps them) in a temporary folder and stops it.

1. Throughput with a light model (`--model light`, the default: a gradient-boosted
   classifier, scikit-learn's exported to ONNX, on the penguins' features),
   where the output's cost is not hidden by the model's. The same N-row
   Parquet input (the penguins resampled, `testing.data`) through
   `python -m pipelines.run`, interleaved round by round: to Parquet files
   (`ours`), into an empty PostgreSQL table (`ours-pg-empty`, dropped before
   each round), and upserted over a table holding last night's rows for the
   same keys (`ours-pg-upsert`, a new run id each round, the nightly case).
   `--model penguins` runs the example's Keras model instead.
2. Rankings: the example recommender's top 10 for `--rank_users` shoppers to
   Parquet (`ours-rank`) and upserted over last night's table (`ours-pg-rank`,
   10 rows per shopper), interleaved.
3. Lookups: the example recommender's top 5 for `--users` shoppers is
   published to a table; then a second run publishes new ones while this
   process looks up one random shopper's recommendations at a time (a
   prepared `SELECT ... WHERE user_id = $1 ORDER BY rank` on one connection,
   as a web back end would). A watcher marks when the run's publish
   transaction is working; latencies are reported during it, and over the
   whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from typing import Optional

import numpy as np
import pyarrow.parquet as pq

from testing.data import make_dataset
from benchmarks.measure import run_measured
from benchmarks.report import machine
from testing.postgres_server import PostgresServer, running_server

_PUBLISHED = re.compile(r'published (\d+) rows to .* in ([0-9.]+)s')


def _light_bundle(work: str) -> str:
  """A gradient-boosted penguin classifier exported to ONNX, imported as a bundle (made once)."""
  output = os.path.join(work, 'bundles', 'penguins-gbt-onnx')
  if os.path.exists(os.path.join(output, 'metadata.json')):
    return output
  import tempfile

  from sklearn.ensemble import GradientBoostingClassifier

  from models.examples.penguins import train
  from testing.frameworks import import_penguin_model, train_onnx
  spec = train.fit_features()
  rows, _, labels, _ = train.training_split(train.training_data_path(), 7)
  with tempfile.TemporaryDirectory() as directory:
    model = train_onnx(GradientBoostingClassifier(n_estimators=50, max_depth=3, random_state=0),
                       spec.transform(rows), labels, os.path.join(directory, 'model.onnx'))
    return import_penguin_model(model, spec, output, name='penguin-species-gbt', version='1')


def _ensure_bundles(work: str, py: str) -> tuple[str, str]:
  penguins, recs = os.path.join(work, 'bundles', 'penguins'), os.path.join(work, 'bundles', 'car-makes')
  env = {**os.environ, 'PYTHONPATH': os.getcwd()}
  if not os.path.exists(os.path.join(penguins, 'metadata.json')):
    run_measured([py, '-m', 'models.examples.penguins.train', f'--output={penguins}'], output_dir=work,
                 log_path=os.path.join(work, 'logs', 'train-penguins.log'), env=env)
  if not os.path.exists(os.path.join(recs, 'metadata.json')):
    run_measured([py, '-m', 'models.examples.recommender.train', f'--output={recs}'], output_dir=work,
                 log_path=os.path.join(work, 'logs', 'train-recs.log'), env=env)
  return penguins, recs


def _job(py: str, input_glob: str, model: str, output: str, run_id: str, work: str, *extra: str) -> list[str]:
  return [py, '-m', 'pipelines.run', f'--input={input_glob}', f'--model={model}', f'--output={output}',
          f'--run_id={run_id}', f'--summary_location={os.path.join(work, "runs")}', '--quiet', *extra]


def _measured(server: PostgresServer, variant: str, round_: int, rows: int, command: list[str], work: str,
              env: dict) -> dict:
  log = os.path.join(work, 'logs', f'{variant}-{round_}.log')
  m = run_measured(command, output_dir=os.path.join(work, 'out'), log_path=log, env=env)
  if m.returncode != 0:
    raise RuntimeError(f'{variant} failed ({m.returncode}):\n{m.log}')
  with open(log, encoding='utf-8', errors='replace') as f:
    published = _PUBLISHED.findall(f.read())
  result = {'variant': variant, 'round': round_, 'rows': rows, 'wall_s': round(m.wall_s, 2),
            'rows_per_s': round(rows / m.wall_s), 'peak_rss_mb': round(m.peak_rss_mb),
            'publish_s': float(published[-1][1]) if published else None}
  print(json.dumps(result), flush=True)
  return result


def _drop(server: PostgresServer, table: str) -> None:
  with server.connect(autocommit=True) as conn:
    conn.execute(f'DROP TABLE IF EXISTS {table}')
    conn.execute('CHECKPOINT')  # each round starts with no dirty pages of the last one


def throughput(server: PostgresServer, py: str, work: str, rows: int, repeats: int, model: str,
               variants: tuple[str, ...] = ('ours', 'ours-pg-empty', 'ours-pg-upsert')) -> list[dict]:
  data = os.path.join(work, 'data', str(rows))
  make_dataset(data, rows)
  files = os.path.join(data, '*.parquet')
  env = {**os.environ, 'PYTHONPATH': os.getcwd(), 'TF_CPP_MIN_LOG_LEVEL': '2'}
  flags = ('--key_column=id', '--report=false')
  if 'ours-pg-upsert' in variants:  # last night's table, untimed
    _drop(server, 'bench_full')
    subprocess.run(_job(py, files, model, server.url('bench_full'), 'night-0', work, *flags), env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  results = []
  for round_ in range(repeats):
    for variant in variants:
      if variant == 'ours-pg-empty':
        _drop(server, 'bench_empty')
      output = {'ours-pg-empty': server.url('bench_empty'), 'ours-pg-upsert': server.url('bench_full')}.get(
          variant, os.path.join(work, 'out', f'{variant}-{round_}'))
      command = _job(py, files, model, output, f'night-{round_ + 1}', work, *flags)
      results.append(_measured(server, variant, round_, rows, command, work, env))
  return results


def rankings(server: PostgresServer, py: str, work: str, users: int, repeats: int, model: str) -> list[dict]:
  """The recommender's top 10 per shopper to Parquet and upserted over last night's table, interleaved."""
  shoppers = _shoppers(work, users)
  env = {**os.environ, 'PYTHONPATH': os.getcwd(), 'TF_CPP_MIN_LOG_LEVEL': '2'}
  flags = ('--key_column=user_id', '--top_k=10', '--report=false')
  _drop(server, 'bench_rank')
  subprocess.run(_job(py, shoppers, model, server.url('bench_rank'), 'rank-0', work, *flags), env=env, check=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  results = []
  for round_ in range(repeats):
    for variant in ('ours-rank', 'ours-pg-rank'):
      output = server.url('bench_rank') if variant == 'ours-pg-rank' else os.path.join(work, 'out',
                                                                                      f'{variant}-{round_}')
      command = _job(py, shoppers, model, output, f'rank-{round_ + 1}', work, *flags)
      results.append(_measured(server, variant, round_, users, command, work, env))
  return results


def _shoppers(work: str, users: int) -> str:
  shoppers = os.path.join(work, 'data', f'shoppers-{users}.parquet')
  if not os.path.exists(shoppers):
    from models.examples.recommender.train import shoppers as make_shoppers
    os.makedirs(os.path.dirname(shoppers), exist_ok=True)
    pq.write_table(make_shoppers(users, seed=3), shoppers, row_group_size=50_000)
  return shoppers


def ratios(results: list[dict], variant: str, base: str) -> list[float]:
  """Per round: the variant's throughput over the base's in the same round (wall time of the same rows)."""
  by_round = {(r['variant'], r['round']): r for r in results}
  return [round(by_round[(base, n)]['wall_s'] / by_round[(variant, n)]['wall_s'], 3)
          for (v, n) in by_round if v == variant and (base, n) in by_round]


class _PublishWatcher(threading.Thread):
  """Marks the moments the job's publish transaction is working, from pg_stat_activity."""

  def __init__(self, server: PostgresServer, table: str):
    super().__init__(daemon=True)
    self._server, self._table = server, table
    self.windows: list[list[float]] = []
    self.stop = threading.Event()

  def run(self):
    with self._server.connect(autocommit=True) as conn:
      while not self.stop.is_set():
        busy = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'batch-inference' AND state = 'active' "
            "AND (query ILIKE 'DELETE FROM%%' OR query ILIKE 'INSERT INTO%%' OR query ILIKE 'LOCK TABLE%%' "
            "OR query ILIKE 'SELECT count(*), count(DISTINCT%%')").fetchone()[0]
        now = time.monotonic()
        if busy:
          if self.windows and now - self.windows[-1][1] < 0.05:
            self.windows[-1][1] = now
          else:
            self.windows.append([now, now])
        time.sleep(0.005)


def _percentiles(values: list[float]) -> dict:
  if not values:
    return {'lookups': 0}
  ms = np.array(values) * 1000
  return {'lookups': len(values), 'p50_ms': round(float(np.percentile(ms, 50)), 3),
          'p95_ms': round(float(np.percentile(ms, 95)), 3), 'p99_ms': round(float(np.percentile(ms, 99)), 3),
          'max_ms': round(float(ms.max()), 3)}


def lookups(server: PostgresServer, py: str, work: str, users: int, model: str) -> dict:
  shoppers = _shoppers(work, users)
  env = {**os.environ, 'PYTHONPATH': os.getcwd(), 'TF_CPP_MIN_LOG_LEVEL': '2'}
  url = server.url('recommendations')
  flags = ('--key_column=user_id', '--top_k=5', '--report=false')
  first = run_measured(_job(py, shoppers, model, url, 'day-1', work, *flags), output_dir=work,
                       log_path=os.path.join(work, 'logs', 'recs-day-1.log'), env=env)
  if first.returncode:
    raise RuntimeError(first.log)
  watcher = _PublishWatcher(server, 'recommendations')
  watcher.start()
  timings: list[tuple[float, float]] = []
  with server.connect(autocommit=True) as conn, open(os.path.join(work, 'logs', 'recs-day-2.log'), 'wb') as log:
    job = subprocess.Popen(_job(py, shoppers, model, url, 'day-2', work, *flags), stdout=log,
                           stderr=subprocess.STDOUT, env=env)
    rng = random.Random(0)
    query = 'SELECT rank, item_id, score FROM recommendations WHERE user_id = %s ORDER BY rank'
    while job.poll() is None:
      user = f'user-{rng.randrange(users):08d}'
      start = time.monotonic()
      found = conn.execute(query, (user,), prepare=True).fetchall()
      end = time.monotonic()
      if len(found) != 5:
        raise RuntimeError(f'{user} has {len(found)} recommendations mid-run, not 5')
      timings.append((start, end - start))
      time.sleep(0.002)  # a steady stream of requests, not a busy loop that starves the job
  watcher.stop.set()
  watcher.join()
  if job.returncode:
    raise RuntimeError(f'the second run failed; see {log.name}')
  during = [t for s, t in timings if any(a <= s <= b for a, b in watcher.windows)]
  publish_s = sum(b - a for a, b in watcher.windows)
  return {'users': users, 'table_rows': users * 5, 'publish_window_s': round(publish_s, 2),
          'during_publish': _percentiles(during), 'whole_run': _percentiles([t for _, t in timings])}


def main(argv: Optional[list[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rows', type=int, default=1_000_000)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--model', choices=('light', 'penguins'), default='light',
                      help='light: a gradient-boosted classifier in ONNX; penguins: the example Keras model.')
  parser.add_argument('--rank_users', type=int, default=200_000, help='Shoppers in the rankings phase (0: skip).')
  parser.add_argument('--users', type=int, default=0,
                      help='Shoppers in the lookup phase, 5 rows each (0, the default: skip it).')
  parser.add_argument('--out', default='build/bench/postgres')
  args = parser.parse_args(argv)
  py = sys.executable
  os.makedirs(args.out, exist_ok=True)
  penguins, recs = _ensure_bundles(args.out, py)
  model = _light_bundle(args.out) if args.model == 'light' else penguins
  result = {'machine': machine(), 'model': args.model}
  with running_server(durable=True) as server:
    rounds = throughput(server, py, args.out, args.rows, args.repeats, model) if args.rows else []
    ranks = rankings(server, py, args.out, args.rank_users, args.repeats, recs) if args.rank_users else []
    latency = lookups(server, py, args.out, args.users, recs) if args.users else None
  for name, variant, base, results in (('empty', 'ours-pg-empty', 'ours', rounds),
                                       ('upsert', 'ours-pg-upsert', 'ours', rounds),
                                       ('rankings', 'ours-pg-rank', 'ours-rank', ranks)):
    found = ratios(results, variant, base)
    if found:
      result[f'pg_over_parquet_{name}'] = found
      result[f'pg_over_parquet_{name}_median'] = round(float(np.median(found)), 2)
  result.update({'load_average_at_end': [round(x, 2) for x in os.getloadavg()], 'rounds': rounds + ranks,
                 'lookups': latency})
  with open(os.path.join(args.out, 'postgres.json'), 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=2)
  print(json.dumps({k: v for k, v in result.items() if k != 'rounds'}, indent=2))
  return 0


if __name__ == '__main__':
  sys.exit(main())
