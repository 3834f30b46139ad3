"""The text benchmark: our job embedding texts against a plain PyTorch loop, sentence-transformers and Ray Data.

    ./launch.sh bench --text [ARGS]                 # the same as:
    python -m benchmarks.text                       # a few minutes on 2 cores
    python -m benchmarks.text --rows 100000 --repeats 3   # the issue's 100k chunks

Two sets of seeded texts as Parquet (`id`, `text`; benchmarks/text_corpus.py): `mixed`,
5 to 500 words, long-tailed, and `uniform`, 45 to 55 words. A BERT encoder (4 layers,
256 wide, seeded random weights) with a WordPiece tokenizer trained on them, exported
with torch.export into a bundle that mean-pools and normalises (max_tokens 256). Each
variant runs as its own process, measured from outside (benchmarks/measure.py: wall
time, peak RSS of the process tree):

  plain-loop             64 rows a batch in input order, each padded to its longest,
                         the exported program, mean pooling (benchmarks/text_loop.py)
  sentence-transformers  SentenceTransformer(Transformer, Pooling, Normalize).encode on the
                         model saved as a Hugging Face folder (benchmarks/text_st.py, own virtualenv)
  ray-data               read_parquet → map_batches(actor: the plain loop's batch) (benchmarks/text_ray.py)
  ours                   python -m pipelines.run --input=IN.parquet --model=BUNDLE --key_column=id

Variants run interleaved, round after round, in a rotating order; tables report medians,
ratios are medians of ratios within one round. Every run is checked: every id embedded,
and a seeded sample of ids within 1e-4 of plain-loop's embedding in the same round.
Padding share (tokens the model was given over real tokens) is recomputed from the
texts' token counts as each variant batches them (ours: text.json's sort_window and
tokens_per_batch, as transforms/text/tokens.py cuts calls). Results: WORK/results.json and results.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import time
from typing import Optional

import numpy as np

from benchmarks import text_corpus, text_report

VARIANTS = ('plain-loop', 'sentence-transformers', 'ray-data', 'ours')
RUN_ID = 'bench'
SAMPLE = 200  # ids whose embeddings are compared with plain-loop's
TOLERANCE = 1e-4


def _venv_python(venv: str) -> Optional[str]:
  path = os.path.join(venv, 'bin', 'python')
  return path if os.path.exists(path) else None


def unavailable(variant: str, args) -> Optional[str]:
  """Why a variant cannot run here, or None."""
  venv = {'sentence-transformers': args.st_venv, 'ray-data': args.ray_venv}.get(variant)
  if venv and not _venv_python(venv):
    note = os.path.join(venv, 'UNAVAILABLE')
    if os.path.exists(note):
      with open(note, encoding='utf-8') as f:
        return f.read().strip()
    return f'no virtualenv at {venv} (./launch.sh bench --text makes it)'
  return None


def command(variant: str, data: str, model: dict, output: str, args) -> list[str]:
  """The command line of one run of `variant` on the Parquet file `data`."""
  common = [f'--input={data}', f'--output={output}']
  if variant == 'plain-loop':
    return [sys.executable, '-m', 'benchmarks.text_loop', *common, f'--model={model["bundle"]}']
  if variant == 'sentence-transformers':
    return [_venv_python(args.st_venv), '-m', 'benchmarks.text_st', *common, f'--model={model["hf"]}']
  if variant == 'ray-data':
    return [_venv_python(args.ray_venv), '-m', 'benchmarks.text_ray', *common, f'--model={model["bundle"]}']
  if variant == 'ours':
    return [sys.executable, '-m', 'pipelines.run', *common, f'--model={model["bundle"]}', '--key_column=id',
            f'--run_id={RUN_ID}', '--quiet', *args.ours_flags]
  raise ValueError(f'unknown variant {variant!r}')


def read_embeddings(output: str) -> dict[int, np.ndarray]:
  """Each embedded row's id → its embedding, from the Parquet files a run left (dead letters and temporary
  shards excluded)."""
  import pyarrow.parquet as pq
  embedded = {}
  for directory, dirs, files in os.walk(output):
    dirs[:] = [d for d in dirs if not d.startswith(('beam-temp', '.'))]
    for name in files:
      if name.endswith('.parquet') and 'dead_letter' not in name:
        table = pq.read_table(os.path.join(directory, name), columns=['id', 'embedding'])
        vectors = table.column('embedding').to_pylist()
        embedded.update(zip(table.column('id').to_pylist(), vectors))
  return embedded


def padded_tokens(lengths: np.ndarray, variant: str, spec) -> int:
  """Tokens the model is given for texts of `lengths` (in input order), batched as `variant` batches them."""
  from transforms.text import tokens
  from transforms.text.prepare import TEXT_BATCH_ROWS
  if variant == 'ours':
    total = 0
    for start in range(0, len(lengths), spec.sort_window):
      window = lengths[start:start + spec.sort_window]
      total += sum(len(call) * int(window[call].max())
                   for call in tokens.model_calls(window, spec.tokens_per_batch, TEXT_BATCH_ROWS))
    return total
  # encode sorts all the texts, longest first (by characters; tokens here, which follow them on these texts)
  ordered = np.sort(lengths)[::-1] if variant == 'sentence-transformers' else lengths
  return sum(len(b) * int(b.max()) for b in np.array_split(ordered, range(64, len(ordered), 64)))


def token_lengths(data: str, bundle: str) -> np.ndarray:
  """Each text's token count, cut at max_tokens, as the bundle's tokenizer counts it."""
  import pyarrow.parquet as pq
  from benchmarks.text_loop import load_tokenizer
  tokenizer = load_tokenizer(bundle)
  tokenizer.no_padding()
  texts = pq.read_table(data, columns=['text']).column('text').to_pylist()
  return np.array([len(e.ids) for e in tokenizer.encode_batch(texts)], np.int64)


def run_once(variant: str, text_set: str, round_no: int, args, data: dict, model: dict) -> dict:
  """One measured run; returns its result row, with `sample` (id → embedding) for the comparison."""
  from benchmarks.measure import last_error, run_measured
  output = os.path.join(args.work, 'out', f'{variant}-{text_set}')
  shutil.rmtree(output, ignore_errors=True)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.getcwd(), os.environ.get('PYTHONPATH')) if p))
  rows, real = len(data['lengths']), int(data['lengths'].sum())
  print(f'[{time.strftime("%H:%M:%S")}] round {round_no} {variant}/{text_set}: {rows:,} texts ...', flush=True)
  m = run_measured(command(variant, data['path'], model, output, args), output_dir=output, env=env,
                   log_path=os.path.join(args.work, 'logs', f'{variant}-{text_set}-{round_no}.log'),
                   timeout_s=args.timeout_s)
  embedded = read_embeddings(output) if m.returncode == 0 else {}
  missing = rows - len(set(embedded) & set(range(rows)))
  result = {'variant': variant, 'set': text_set, 'round': round_no, 'ok': m.returncode == 0 and not missing,
            'returncode': m.returncode, 'rows': rows, 'rows_embedded': rows - missing if embedded else 0,
            'tokens': real, 'wall_s': round(m.wall_s, 3), 'rows_per_s': round(rows / m.wall_s, 2),
            'tokens_per_s': round(real / m.wall_s, 1), 'peak_rss_mb': round(m.peak_rss_mb, 1),
            'first_output_s': None if m.first_prediction_s is None else round(m.first_prediction_s, 1),
            'padding_share': data['padding'][variant]}
  if not result['ok']:
    result['error'] = f'{missing} rows not embedded' if m.returncode == 0 else f'exit {m.returncode}: {last_error(m.log)}'
    print(f'{variant}/{text_set} failed: {result["error"]}; log tail:\n{m.log[-1500:]}', file=sys.stderr, flush=True)
  result['sample'] = {i: np.asarray(embedded[i], np.float32) for i in data['sample'] if i in embedded}
  shutil.rmtree(output, ignore_errors=True)
  return result


def compare(runs: list[dict]) -> None:
  """Sets each run's `max_abs_diff` to plain-loop's embeddings of the sample in the same round and set; a run
  that differs by more than TOLERANCE is not ok. Drops the samples."""
  base = {(r['round'], r['set']): r['sample'] for r in runs if r['variant'] == text_report.BASELINE and r['ok']}
  for r in runs:
    reference = base.get((r['round'], r['set']))
    if r['ok'] and reference and r.get('sample'):
      r['max_abs_diff'] = float(max(np.abs(v - reference[i]).max() for i, v in r['sample'].items()))
      if r['max_abs_diff'] > TOLERANCE:
        r['ok'], r['error'] = False, f'embeddings differ from plain-loop\'s by up to {r["max_abs_diff"]:.1e}'
  for r in runs:
    r.pop('sample', None)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rows', type=int, default=1000, help='Texts in each set (the issue: 100000).')
  parser.add_argument('--sets', default=','.join(text_corpus.SETS), help=f'Comma-separated subset of {text_corpus.SETS}.')
  parser.add_argument('--variants', default=','.join(VARIANTS), help=f'Comma-separated subset of {VARIANTS}.')
  parser.add_argument('--repeats', type=int, default=2, help='Rounds of every variant; medians are reported.')
  parser.add_argument('--ours_flags', default='', help='Extra flags for ours, e.g. "--direct_num_workers=2".')
  parser.add_argument('--st_venv', default='build/bench/st-venv')
  parser.add_argument('--ray_venv', default='build/bench/ray-venv')
  parser.add_argument('--work', default='build/bench/text', help='Texts, the model, logs and results go here.')
  parser.add_argument('--timeout_s', type=float, default=3600, help='Most seconds one run may take.')
  args = parser.parse_args(argv)
  args.ours_flags = args.ours_flags.split()
  args.sets = [s.strip() for s in args.sets.split(',') if s.strip()]
  args.variants = [v.strip() for v in args.variants.split(',') if v.strip()]
  for given, known, what in ((args.variants, VARIANTS, 'variants'), (args.sets, text_corpus.SETS, 'sets')):
    if set(given) - set(known):
      parser.error(f'unknown {what} {sorted(set(given) - set(known))}; choose from {known}')
  return args


def prepare(args) -> tuple[dict, dict]:
  """The sets' Parquet files with their token counts, sample ids and padding shares, and the model."""
  from models.bundle import ModelBundle
  paths = {s: text_corpus.write_set(os.path.join(args.work, f'{s}-{args.rows}.parquet'), s, args.rows)
           for s in args.sets}
  corpus = [t for s in text_corpus.SETS for t in text_corpus.texts(s, min(args.rows, 5000))]
  model = text_corpus.make_bundle(os.path.join(args.work, 'model'), corpus)
  spec = ModelBundle.load(model['bundle']).text
  sets = {}
  for s, path in paths.items():
    lengths = token_lengths(path, model['bundle'])
    sample = sorted(np.random.default_rng(0).choice(args.rows, min(SAMPLE, args.rows), replace=False).tolist())
    sets[s] = {'path': path, 'lengths': lengths, 'sample': sample,
               'padding': {v: round(padded_tokens(lengths, v, spec) / int(lengths.sum()), 3) for v in VARIANTS}}
  return sets, model


def main(argv=None) -> int:
  args = parse_args(argv)
  started = datetime.datetime.now(datetime.timezone.utc)
  print(f'[{time.strftime("%H:%M:%S")}] texts and the model under {args.work} (made once) ...', flush=True)
  sets, model = prepare(args)
  skipped = {v: why for v in args.variants if (why := unavailable(v, args))}
  summary = {'started': started.isoformat(timespec='seconds'), 'rows': args.rows, 'repeats': args.repeats,
             'sets': args.sets, 'variants': args.variants, 'skipped': skipped, 'ours_flags': args.ours_flags,
             'words': {'mixed': f'{text_corpus.SHORTEST}-{text_corpus.LONGEST} words, long-tailed',
                       'uniform': '{}-{} words'.format(*text_corpus.UNIFORM_WORDS)},
             'model': '{layers} layers, {hidden} wide, {heads} heads'.format(**text_corpus.SHAPE),
             'max_tokens': text_corpus.MAX_TOKENS,
             'tokens': {s: int(d['lengths'].sum()) for s, d in sets.items()},
             'padding': {s: d['padding'] for s, d in sets.items()}, 'runs': []}
  runnable = [(v, s) for s in args.sets for v in args.variants if v not in skipped]
  paths, table = [], ''
  for round_no in range(args.repeats):
    shift = round_no % len(runnable) if runnable else 0
    this_round = [run_once(v, s, round_no, args, sets[s], model) for v, s in runnable[shift:] + runnable[:shift]]
    compare(this_round)
    for r in this_round:
      print(json.dumps(r), flush=True)
    summary['runs'] += this_round
    paths, table = text_report.write(summary, args.work)  # after every round: a run cut short keeps what it did
  if not runnable:
    paths, table = text_report.write(summary, args.work)
  print(table, flush=True)
  print(f'results: {", ".join(paths)}', flush=True)
  return 0 if summary['runs'] and all(r['ok'] for r in summary['runs']) else 1


if __name__ == '__main__':
  sys.exit(main())
