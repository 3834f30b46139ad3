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

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.bundle import ModelBundle
from models.handler import SavedModelPredictor
from transforms import dead_letters as dl
from transforms.inference import PredictionColumns

BATCH_ROWS = 65536


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', required=True)
  parser.add_argument('--model', required=True)
  parser.add_argument('--output', required=True)
  parser.add_argument('--batch_rows', type=int, default=BATCH_ROWS)
  args = parser.parse_args(argv)

  bundle = ModelBundle.load(args.model)
  spec = bundle.features
  required = [f.name for f in spec.features if f.required]
  predictor = SavedModelPredictor(bundle.saved_model_path, bundle.outputs.signature, bundle.outputs.output_key)
  columns = PredictionColumns(bundle.outputs, 'id', (), bundle.name, bundle.version, 'raw')
  os.makedirs(args.output, exist_ok=True)
  writer = None
  read = predicted = 0
  for path in sorted(glob.glob(args.input)):
    for batch in pq.ParquetFile(path).iter_batches(batch_size=args.batch_rows, columns=['id'] + spec.columns):
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
  print(json.dumps({'rows_read': read, 'rows_predicted': predicted, 'rows_rejected': read - predicted}))


if __name__ == '__main__':
  main()
