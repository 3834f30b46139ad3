"""The `ray-data` variant: Ray Data `map_batches` over the same files and the same feature code.

    python -m benchmarks.ray_data --input 'DIR/*.parquet' --model BUNDLE --output DIR

Runs in its own virtualenv (build/bench/ray-venv, made by `./launch.sh bench`)
so Ray's dependencies never touch the pinned stack.
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import pyarrow as pa

from benchmarks.raw import complete_rows

BATCH_ROWS = 65536


class PredictBatches:
  """A Ray Data actor: loads the bundle once, predicts whole Arrow batches."""

  def __init__(self, model: str):
    from models.bundle import ModelBundle
    from models.handlers.tensorflow import SavedModelPredictor
    from models.inference import PredictionColumns
    from transforms.rows import dead_letters as dl
    bundle = ModelBundle.load(model)
    self._key = dl.KEY
    self._spec = bundle.features
    self._required = [f.name for f in self._spec.features if f.required]
    self._predictor = SavedModelPredictor(bundle.saved_model_path, bundle.outputs.signature,
                                          bundle.outputs.output_key)
    self._columns = PredictionColumns(bundle.outputs, 'id', (), bundle.name, bundle.version, 'ray-data')

  def __call__(self, table: pa.Table) -> pa.Table:
    batch = table.combine_chunks().to_batches()[0] if table.num_rows else None
    if batch is None:
      return self._columns.schema.empty_table()
    batch = complete_rows(batch, self._required)
    scores = self._predictor.predict(self._spec.transform(batch))
    keys = pa.RecordBatch.from_arrays([batch.column('id').cast(pa.string())], names=[self._key])
    return pa.Table.from_batches([self._columns.format(keys, scores)])


def main(argv=None) -> None:
  import ray
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', required=True)
  parser.add_argument('--model', required=True)
  parser.add_argument('--output', required=True)
  parser.add_argument('--batch_rows', type=int, default=BATCH_ROWS)
  parser.add_argument('--actors', type=int, default=os.cpu_count())
  args = parser.parse_args(argv)
  ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
  files = sorted(glob.glob(args.input))
  ds = ray.data.read_parquet(files, columns=['id', *_feature_columns(args.model)])
  ds = ds.map_batches(PredictBatches, fn_constructor_args=(args.model,), batch_format='pyarrow',
                      batch_size=args.batch_rows, concurrency=args.actors, num_cpus=0.5)
  ds.write_parquet(args.output)
  ray.shutdown()
  print(json.dumps({'variant': 'ray-data', 'files': len(files)}))


def _feature_columns(model: str) -> list[str]:
  from models.bundle import ModelBundle
  return ModelBundle.load(model).features.columns


if __name__ == '__main__':
  main()
