"""The `raw` variant: the model over Parquet files with no Beam, the practical limit here.

    python -m benchmarks.raw --input 'DIR/*.parquet' --model BUNDLE --output DIR

pyarrow reads large batches, the bundle's `FeatureSpec.transform` makes the
numpy features, the SavedModel signature predicts, pyarrow writes the same
output columns the pipeline writes. Rows missing a required value are counted
and skipped, as the pipeline's validation would reject them.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.bundle import ModelBundle
from models.handlers.tensorflow import SavedModelPredictor
from models.inference import PredictionColumns
from transforms.rows import dead_letters as dl
from transforms.features.spec import FeatureSpec

BATCH_ROWS = 65536


def complete_rows(batch: pa.RecordBatch, required: list[str]) -> pa.RecordBatch:
  """The rows with every required value, as the pipeline's validation would keep them."""
  complete = np.ones(batch.num_rows, dtype=bool)
  for name in required:
    complete &= batch.column(name).is_valid().to_numpy(zero_copy_only=False)
  return batch if complete.all() else batch.filter(pa.array(complete))


def predict_batches(batches: Iterable[pa.RecordBatch], path: str, spec: FeatureSpec,
                    predict: Callable[[np.ndarray], np.ndarray], columns: PredictionColumns) -> dict[str, int]:
  """Validates, predicts and formats `batches` (input columns, with `id`) into one Parquet file at `path`.

  The part every raw variant shares, whatever it reads from. Returns the row counts.
  """
  required = [f.name for f in spec.features if f.required]
  writer = None
  read = predicted = 0
  for batch in batches:
    read += batch.num_rows
    batch = complete_rows(batch, required)
    scores = predict(spec.transform(batch))
    keys = pa.RecordBatch.from_arrays([batch.column('id').cast(pa.string())], names=[dl.KEY])
    out = columns.format(keys, scores)
    if writer is None:
      writer = pq.ParquetWriter(path, out.schema, compression='snappy')
    writer.write_batch(out)
    predicted += out.num_rows
  if writer is not None:
    writer.close()
  return {'rows_read': read, 'rows_predicted': predicted, 'rows_rejected': read - predicted}


def predict_files(pattern: str, output: str, spec: FeatureSpec, predict: Callable[[np.ndarray], np.ndarray],
                  columns: PredictionColumns, *, batch_rows: int = BATCH_ROWS) -> dict[str, int]:
  """The whole job without Beam: every file matching `pattern` into OUTPUT/predictions.parquet.

  `predict` maps a feature matrix to scores (the SavedModel here, a PyTorch
  model in the GPU row). Returns the row counts.
  """
  os.makedirs(output, exist_ok=True)
  batches = (batch for path in sorted(glob.glob(pattern))
             for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=['id'] + spec.columns))
  return predict_batches(batches, os.path.join(output, 'predictions.parquet'), spec, predict, columns)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', required=True)
  parser.add_argument('--model', required=True)
  parser.add_argument('--output', required=True)
  parser.add_argument('--batch_rows', type=int, default=BATCH_ROWS)
  args = parser.parse_args(argv)

  bundle = ModelBundle.load(args.model)
  predictor = SavedModelPredictor(bundle.saved_model_path, bundle.outputs.signature, bundle.outputs.output_key)
  columns = PredictionColumns(bundle.outputs, 'id', (), bundle.name, bundle.version, 'raw')
  counts = predict_files(args.input, args.output, bundle.features, predictor.predict, columns,
                         batch_rows=args.batch_rows)
  print(json.dumps(counts))


if __name__ == '__main__':
  main()
