"""The model formats beside TensorFlow's: our job against each framework's own raw batch loop, on CPU.

    python -m benchmarks.frameworks --rows 1000000 --repeats 1

For each framework (ONNX, PyTorch, XGBoost, scikit-learn) a penguin classifier
is trained on the example data with the example's features and imported as a
bundle (`models.importer.command`). Then, on the same N resampled rows as the main
benchmark (testing/data.py), each in its own process, measured from
outside (benchmarks/measure.py). `sklearn-pipeline` is the model a user brings
whole: the churn Pipeline of testing/frameworks.py (imputation, scaling, one-hot,
HistGradientBoosting) on N churn rows, taking a table; its raw loop hands
`predict_proba` a DataFrame per batch, as the user's own code does.

    raw-FW            no Beam: pyarrow reads large batches, `FeatureSpec.transform`,
                      the framework's own call (onnxruntime `run`, the torch module,
                      XGBoost `inplace_predict`, scikit-learn `predict_proba`), pyarrow writes
    ours-FW           python -m pipelines.run with the bundle, in one process (defaults: report on)
    ours-FW-shared    the same with --direct_num_workers=2 --direct_running_mode=multi_processing
                      and one model copy shared by the two processes (Beam's model server)
    ours-FW-copy      the same, with a model copy per process (--share_model_across_processes=false)

Variants run interleaved, round after round; ratios are medians of ratios
taken within one round. Results: WORK/results.md and .json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile

import numpy as np

from testing import frameworks as trainers
from testing.frameworks import (EXTENSIONS, TRUSTED, import_penguin_model, train_onnx, train_sklearn, train_torch,
                                train_xgboost)

FRAMEWORKS = ('onnx', 'torch', 'xgboost', 'sklearn', 'sklearn-pipeline')
PIPELINE = 'sklearn-pipeline'

KINDS = ('raw', 'ours', 'ours-shared', 'ours-copy')
SEED = 0


def _train(framework: str, x: np.ndarray, y: np.ndarray, directory: str) -> str:
  """A penguin classifier of `framework`, saved as that framework saves it; returns the file."""
  path = os.path.join(directory, 'model' + EXTENSIONS[framework])
  if framework == 'onnx':  # a scikit-learn MLP like the example's Keras one, exported to ONNX
    from sklearn.neural_network import MLPClassifier
    return train_onnx(MLPClassifier(hidden_layer_sizes=(16,), max_iter=500, random_state=SEED), x, y, path)
  if framework == 'torch':  # the example's MLP shape: 16 ReLU units, softmax
    return train_torch(x, y, path, classes=3, hidden=16, lr=0.02, epochs=200, seed=SEED)
  if framework == 'xgboost':
    return train_xgboost({'objective': 'multi:softprob', 'num_class': 3, 'max_depth': 4, 'seed': SEED}, 50, x, y,
                         path)
  if framework == 'sklearn':
    from sklearn.ensemble import RandomForestClassifier
    return train_sklearn(RandomForestClassifier(n_estimators=50, max_depth=8, random_state=SEED), x, y, path)
  raise ValueError(framework)


def make_pipeline_bundle(output: str) -> str:
  """The churn Pipeline, fitted on 20,000 rows, saved with skops and imported as it is (a table)."""
  import pyarrow.parquet as pq
  import skops.io
  train = trainers.churn_table(20_000, seed=1)
  model = trainers.churn_pipeline(max_iter=100).fit(trainers.churn_frame(train), train.column('churned').to_numpy())
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, 'churn.skops')
    skops.io.dump(model, path)
    sample = train.slice(0, 1000)
    pq.write_table(sample, os.path.join(directory, 'sample.parquet'))
    code = trainers.import_bundle(path, None, {'kind': 'classification', 'classes': model.classes_.tolist()}, output,
                                  name='churn-pipeline', version='1', data=os.path.join(directory, 'sample.parquet'),
                                  flags=['--trust_all_listed'])
  if code != 0:
    raise RuntimeError(f'importing the churn Pipeline failed (exit {code})')
  return output


def make_churn_data(directory: str, rows: int) -> dict:
  """N churn rows in Parquet files of 250,000 (made once); the manifest the runs check against."""
  import pyarrow.parquet as pq
  if not os.path.exists(os.path.join(directory, 'done')):
    os.makedirs(directory, exist_ok=True)
    for part, start in enumerate(range(0, rows, 250_000)):
      table = trainers.churn_table(min(250_000, rows - start), seed=100 + part, unseen=0.01).drop_columns(['churned'])
      pq.write_table(table, os.path.join(directory, f'part-{part:03d}.parquet'), row_group_size=65536)
    open(os.path.join(directory, 'done'), 'w', encoding='utf-8').close()
  return {'complete_rows': rows}


def make_bundle(framework: str, output: str) -> str:
  """The framework's penguin bundle at `output` (made once), through the import command."""
  from models.examples.penguins import train
  if os.path.exists(os.path.join(output, 'metadata.json')):
    return output
  if framework == PIPELINE:
    return make_pipeline_bundle(output)
  spec = train.fit_features()
  rows, _, labels, _ = train.training_split(train.training_data_path(), 7)
  with tempfile.TemporaryDirectory() as directory:
    model = _train(framework, spec.transform(rows), labels, directory)
    return import_penguin_model(model, spec, output, name=f'penguin-species-{framework}', version='1',
                                trusted_types=TRUSTED.get(framework, ()))


def raw_predict(framework: str, path: str, device: str = 'cpu'):
  """The framework's own batch call on a feature matrix, with nothing of ours between.

  `device` is a torch device (cpu, cuda) for PyTorch; the other frameworks run on the CPU.
  """
  if framework == 'onnx':
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return lambda x: session.run(['probabilities'], {name: x})[0]
  if framework == 'torch':
    import torch
    module = torch.export.load(path).module().to(device)

    def call(x):
      with torch.inference_mode():
        return module(torch.from_numpy(x).to(device)).cpu().numpy()
    return call
  if framework == 'xgboost':
    import xgboost
    booster = xgboost.Booster(model_file=path)
    return lambda x: booster.inplace_predict(x, validate_features=False)
  if framework == 'sklearn':
    import skops.io
    return skops.io.load(path, trusted=TRUSTED['sklearn']).predict_proba
  raise ValueError(framework)


def run_raw_pipeline(args, bundle, columns) -> dict:
  """The user's own loop for a Pipeline: pyarrow batches → DataFrame → predict_proba → the same output columns."""
  import glob
  import pyarrow as pa
  import pyarrow.parquet as pq
  import skops.io
  from transforms.rows import dead_letters as dl
  model = skops.io.load(bundle.model_path, trusted=bundle.load_options.get('trusted_types'))
  names = list(model.feature_names_in_)
  writer, rows = None, 0
  os.makedirs(args.output, exist_ok=True)
  for path in sorted(glob.glob(args.input)):
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65536, columns=['id', *names]):
      scores = model.predict_proba(batch.select(names).to_pandas())
      out = columns.format(pa.RecordBatch.from_arrays([batch.column('id')], names=[dl.KEY]), scores)
      writer = writer or pq.ParquetWriter(os.path.join(args.output, 'predictions.parquet'), out.schema)
      writer.write_batch(out)
      rows += out.num_rows
  if writer is not None:
    writer.close()
  return {'rows_read': rows, 'rows_predicted': rows, 'rows_rejected': 0}


def run_raw(args) -> dict:
  """The raw loop of benchmarks/raw.py with the framework's own call."""
  from benchmarks.raw import predict_files
  from models.bundle import ModelBundle
  from models.inference import PredictionColumns
  bundle = ModelBundle.load(args.model)
  columns = PredictionColumns(bundle.outputs, 'id', (), bundle.name, bundle.version, 'raw')
  if args.framework == PIPELINE:
    return run_raw_pipeline(args, bundle, columns)
  return predict_files(args.input, args.output, bundle.features,
                       raw_predict(args.framework, bundle.model_path, args.device), columns)


def command(kind: str, framework: str, data: str, bundle: str, output: str, ours_flags: list[str] = ()) -> list[str]:
  py, files = sys.executable, os.path.join(data, '*.parquet')
  if kind == 'raw':
    return [py, '-m', 'benchmarks.frameworks', 'raw', f'--framework={framework}', f'--input={files}',
            f'--model={bundle}', f'--output={output}']
  cmd = [py, '-m', 'pipelines.run', f'--input={files}', f'--model={bundle}', f'--output={output}', '--key_column=id',
         '--run_id=bench', '--quiet', *ours_flags]
  if kind != 'ours':
    cmd += ['--direct_num_workers=2', '--direct_running_mode=multi_processing',
            f'--share_model_across_processes={"true" if kind == "ours-shared" else "false"}']
  return cmd


def run_once(kind: str, framework: str, args, data: str, manifest: dict, bundle: str, round_no: int) -> dict:
  from benchmarks.measure import run_measured
  from benchmarks.run import predicted_rows
  output = os.path.join(args.work, 'out', f'{kind}-{framework}')
  shutil.rmtree(output, ignore_errors=True)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  env['PYTHONPATH'] = os.pathsep.join(p for p in (os.getcwd(), env.get('PYTHONPATH')) if p)
  m = run_measured(command(kind, framework, data, bundle, output, args.ours_flags), output_dir=output,
                   log_path=os.path.join(args.work, 'logs', f'{kind}-{framework}-{round_no}.log'), env=env)
  predicted = predicted_rows(output) if m.returncode == 0 else 0
  ok = m.returncode == 0 and predicted == manifest['complete_rows']
  result = {'framework': framework, 'variant': f'{kind}-{framework}', 'kind': kind, 'round': round_no, 'ok': ok,
            'rows': args.rows, 'rows_predicted': predicted, 'wall_s': round(m.wall_s, 3),
            'rows_per_s': round(args.rows / m.wall_s, 1), 'peak_rss_mb': round(m.peak_rss_mb, 1)}
  print(json.dumps(result), flush=True)
  if not ok:
    print(f'{kind}-{framework} failed (exit {m.returncode}); log tail:\n{m.log[-1500:]}', file=sys.stderr, flush=True)
  shutil.rmtree(output, ignore_errors=True)
  return result


def _ratio(results: list[dict], framework: str, kind: str, base: str) -> float:
  """Median over rounds of (kind's rows/s ÷ base's rows/s) within the round."""
  ratios = []
  for r in {r['round'] for r in results}:
    by_kind = {x['kind']: x for x in results if x['framework'] == framework and x['round'] == r and x['ok']}
    if kind in by_kind and base in by_kind:
      ratios.append(by_kind[kind]['rows_per_s'] / by_kind[base]['rows_per_s'])
  return round(statistics.median(ratios), 2) if ratios else float('nan')


def markdown(results: list[dict], args, kinds: list[str], frameworks: list[str]) -> str:
  import apache_beam
  versions = []
  for name, module in (('onnxruntime', 'onnxruntime'), ('PyTorch', 'torch'), ('XGBoost', 'xgboost'),
                       ('scikit-learn', 'sklearn')):
    try:
      versions.append(f'{name} {__import__(module).__version__}')
    except ImportError:
      pass
  cpu = platform.processor() or platform.machine()
  lines = [f'{args.rows:,} rows, {args.repeats} round(s), {os.cpu_count()} CPUs ({cpu}), no GPU; '
           f'Beam {apache_beam.__version__}, {", ".join(versions)}.', '',
           '| variant | rows/s | × raw-FW | wall s | peak RSS MB |', '| --- | ---: | ---: | ---: | ---: |']
  for framework in frameworks:
    for kind in kinds:
      runs = [r for r in results if r['framework'] == framework and r['kind'] == kind and r['ok']]
      if not runs:
        lines.append(f'| {kind}-{framework} | failed | | | |')
        continue
      lines.append(f'| {kind}-{framework} | {statistics.median(r["rows_per_s"] for r in runs):,.0f} | '
                   f'{_ratio(results, framework, kind, "raw"):.2f} | '
                   f'{statistics.median(r["wall_s"] for r in runs):.1f} | '
                   f'{statistics.median(r["peak_rss_mb"] for r in runs):,.0f} |')
  lines.append('')
  if 'ours-shared' in kinds and 'ours-copy' in kinds:
    lines.append('- 2 processes, shared model ÷ a copy per process (rows/s): ' + ', '.join(
        f'{fw} {_ratio(results, fw, "ours-shared", "ours-copy"):.2f}×' for fw in frameworks))
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('mode', nargs='?', default='bench', choices=('bench', 'raw'),
                      help='bench: the whole comparison; raw: one raw-FW run (what bench starts).')
  parser.add_argument('--rows', type=int, default=200_000, help='Rows of input (the documented run uses 1000000).')
  parser.add_argument('--repeats', type=int, default=1, help='Rounds of every variant; medians are reported.')
  parser.add_argument('--frameworks', default=','.join(FRAMEWORKS), help=f'Comma-separated subset of {FRAMEWORKS}.')
  parser.add_argument('--kinds', default=','.join(KINDS), help=f'Comma-separated subset of {KINDS}.')
  parser.add_argument('--work', default='build/bench/frameworks', help='Bundles, data, logs and results go here.')
  parser.add_argument('--ours_flags', default='',
                      help='Extra flags for the ours variants, e.g. "--report=false --max_batch_rows=65536".')
  parser.add_argument('--framework', help='raw: the framework.')
  parser.add_argument('--input', help='raw: the input files (a glob).')
  parser.add_argument('--model', help='raw: the bundle.')
  parser.add_argument('--output', help='raw: the output folder.')
  parser.add_argument('--device', default='cpu', help='raw: the torch device of a PyTorch model (cpu, cuda).')
  args = parser.parse_args(argv)
  args.ours_flags = args.ours_flags.split()
  if args.mode == 'raw':
    print(json.dumps(run_raw(args)))
    return 0

  from testing.data import make_dataset  # the bench's own imports; a raw run imports only what it uses
  frameworks = [f.strip() for f in args.frameworks.split(',') if f.strip()]
  kinds = [k.strip() for k in args.kinds.split(',') if k.strip()]
  bundles = {fw: make_bundle(fw, os.path.join(args.work, 'bundles', fw)) for fw in frameworks}
  data = {fw: os.path.join(args.work, '..', f'{"churn" if fw == PIPELINE else "data"}-{args.rows}') for fw in frameworks}
  manifests = {fw: (make_churn_data if fw == PIPELINE else make_dataset)(data[fw], args.rows) for fw in frameworks}
  variants = [(kind, fw) for fw in frameworks for kind in kinds]
  results = []
  for round_no in range(args.repeats):
    shift = round_no % len(variants)
    for kind, fw in variants[shift:] + variants[:shift]:
      results.append(run_once(kind, fw, args, data[fw], manifests[fw], bundles[fw], round_no))
  table = markdown(results, args, kinds, frameworks)
  os.makedirs(args.work, exist_ok=True)
  with open(os.path.join(args.work, 'results.json'), 'w', encoding='utf-8') as f:
    json.dump({'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               'rows': args.rows, 'results': results}, f, indent=1)
  with open(os.path.join(args.work, 'results.md'), 'w', encoding='utf-8') as f:
    f.write(table + '\n')
  print(table)
  return 0 if all(r['ok'] for r in results) else 1


if __name__ == '__main__':
  sys.exit(main())
