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
import glob
import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import torch_model
from transforms import dead_letters as dl
from transforms.inference import PredictionColumns

RAW_BATCH_ROWS = 65536


def run_raw(args) -> dict:
  bundle = torch_model.bench_bundle()
  spec = bundle.features
  required = [f.name for f in spec.features if f.required]
  predictor = torch_model.TorchPredictor(len(spec.output_names), bundle.outputs.width, device=args.device,
                                         hidden=args.hidden, layers=args.layers)
  columns = PredictionColumns(bundle.outputs, 'id', (), bundle.name, bundle.version, 'raw')
  os.makedirs(args.output, exist_ok=True)
  writer = None
  read = predicted = 0
  for path in sorted(glob.glob(args.input)):
    for batch in pq.ParquetFile(path).iter_batches(batch_size=RAW_BATCH_ROWS, columns=['id'] + spec.columns):
      read += batch.num_rows
      complete = np.ones(batch.num_rows, dtype=bool)
      for name in required:
        complete &= batch.column(name).is_valid().to_numpy(zero_copy_only=False)
      if not complete.all():
        batch = batch.filter(pa.array(complete))
      scores = predictor.predict(spec.transform(batch))
      keys = pa.RecordBatch.from_arrays([batch.column('id').cast(pa.string())], names=[dl.KEY])
      out = columns.format(keys, scores)
      if writer is None:
        writer = pq.ParquetWriter(os.path.join(args.output, 'predictions.parquet'), out.schema, compression='snappy')
      writer.write_batch(out)
      predicted += out.num_rows
  if writer is not None:
    writer.close()
  return {'rows_read': read, 'rows_predicted': predicted, 'rows_rejected': read - predicted}


def run_ours(args) -> dict:
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions

  from pipelines.batch_inference import build_pipeline
  from pipelines.options import BatchInferenceOptions
  from pipelines.summary import counters

  flags = [f'--input={args.input}', '--model=torch-mlp', f'--output={args.output}', '--key_column=id',
           '--run_id=bench', *args.ours_flags]
  if args.workers > 1:
    flags += [f'--direct_num_workers={args.workers}', '--direct_running_mode=multi_processing']
  options = PipelineOptions(flags)
  opts = options.view_as(BatchInferenceOptions)
  bundle = torch_model.bench_bundle()
  handler = torch_model.handler_for(bundle, device=args.device, max_batch_rows=opts.max_batch_rows,
                                    min_batch_rows=opts.min_batch_rows, share_across_processes=opts.share_model(),
                                    hidden=args.hidden, layers=args.layers)
  pipeline = beam.Pipeline(options=options)
  build_pipeline(pipeline, opts, bundle, model_handler=handler)
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
