"""One run of a GPU-row variant, in its own process (benchmarks/gpu.py measures it from outside).

    python -m benchmarks.gpu_variants raw --input 'DIR/*.parquet' --output DIR --device cuda
    python -m benchmarks.gpu_variants ours --input 'DIR/*.parquet' --output DIR --device cuda [--workers 8]

`raw` is benchmarks/raw.py with the PyTorch model: pyarrow reads large
batches, `FeatureSpec.transform`, one model call per batch, pyarrow writes.
`ours` is `build_pipeline` on the DirectRunner with the same model injected
as its handler (preflight is skipped: it would load a SavedModel). Both print
one JSON line of counts.
"""

from __future__ import annotations

import argparse
import json
import sys

from benchmarks import torch_model
from benchmarks.raw import predict_files
from models.inference import PredictionColumns

RAW_BATCH_ROWS = 65536


def run_raw(args) -> dict:
  bundle = torch_model.bench_bundle()
  predictor = torch_model.TorchPredictor(len(bundle.features.output_names), bundle.outputs.width,
                                         device=args.device, hidden=args.hidden, layers=args.layers)
  columns = PredictionColumns(bundle.outputs, 'id', (), bundle.name, bundle.version, 'raw')
  return predict_files(args.input, args.output, bundle.features, predictor.predict, columns,
                       batch_rows=RAW_BATCH_ROWS)


def run_ours(args) -> dict:
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions

  from pipelines.graph.batch_inference import build_pipeline
  from pipelines.launcher.resolve import resolve
  from pipelines.options import BatchInferenceOptions
  from pipelines.record.summary import counters

  flags = [f'--input={args.input}', '--model=torch-mlp', f'--output={args.output}', '--key_column=id',
           '--run_id=bench', *args.ours_flags]
  if args.workers > 1:
    flags += [f'--direct_num_workers={args.workers}', '--direct_running_mode=multi_processing']
  options = PipelineOptions(flags)
  opts = options.view_as(BatchInferenceOptions)
  bundle = torch_model.bench_bundle()
  plan, _ = resolve(options, bundle=bundle, check_model=False)  # the injected model is not a SavedModel
  handler = torch_model.handler_for(bundle, device=args.device, max_batch_rows=opts.max_batch_rows,
                                    min_batch_rows=opts.min_batch_rows, share_across_processes=opts.share_model(),
                                    hidden=args.hidden, layers=args.layers)
  pipeline = beam.Pipeline(options=options)
  build_pipeline(pipeline, opts, plan, model_handler=handler)
  result = pipeline.run()
  result.wait_until_finish()
  totals = counters(result)
  return {k: totals.get(k, 0) for k in ('rows_read', 'rows_predicted', 'rows_rejected')}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('variant', choices=('raw', 'ours'))
  parser.add_argument('--input', required=True)
  parser.add_argument('--output', required=True)
  parser.add_argument('--device', default='cuda', help='A torch device: cuda, cuda:1, cpu.')
  parser.add_argument('--workers', type=int, default=1, help='ours: DirectRunner worker processes.')
  parser.add_argument('--hidden', type=int, default=torch_model.HIDDEN)
  parser.add_argument('--layers', type=int, default=torch_model.LAYERS)
  parser.add_argument('--ours_flags', default='', help='Extra pipeline flags for ours, e.g. "--max_batch_rows=65536".')
  args = parser.parse_args(argv)
  args.ours_flags = args.ours_flags.split()
  counts = run_raw(args) if args.variant == 'raw' else run_ours(args)
  print(json.dumps({**counts, 'tensorflow_imported': 'tensorflow' in sys.modules}), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
