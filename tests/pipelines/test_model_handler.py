"""build_pipeline with an injected model handler: another model behind the same read, features and writes."""

import glob
import os

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from models.handlers.tensorflow import SavedModelHandler
from models.examples.penguins import train
from pipelines.graph.batch_inference import build_pipeline
from pipelines.launcher.resolve import resolve
from pipelines.record.summary import counters
from transforms.rows.validation import validate

pytestmark = pytest.mark.slow


class LinearSoftmax:
  """A tiny numpy model with fixed random weights: nothing like the trained one."""

  def __init__(self, width_in: int, width_out: int):
    self.weights = np.random.default_rng(3).normal(size=(width_in, width_out)).astype(np.float32)

  def predict(self, features: np.ndarray) -> np.ndarray:
    logits = features @ self.weights
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class LinearSoftmaxHandler(SavedModelHandler):
  """Our handler with the model load swapped for a numpy model."""

  def __init__(self, width_in: int, width_out: int):
    super().__init__('numpy:linear-softmax', max_batch_rows=64, share_across_processes=False)
    self._widths = (width_in, width_out)

  def load_model(self) -> LinearSoftmax:
    return LinearSoftmax(*self._widths)


def test_build_pipeline__injected_handler_predicts_every_valid_row(tmp_path, penguin_bundle):
  bundle = penguin_bundle
  width_in, width_out = len(bundle.features.output_names), bundle.outputs.width
  options = PipelineOptions([f'--input={train.EXAMPLE_DATA}', f'--model={bundle.path}',
                             f'--output={tmp_path / "out"}', '--run_id=injected', '--report=false'])
  pipeline = beam.Pipeline(options=options)
  plan, _ = resolve(options, bundle=bundle)
  build_pipeline(pipeline, plan, model_handler=LinearSoftmaxHandler(width_in, width_out))
  result = pipeline.run()
  result.wait_until_finish()

  # The injected model's own outputs for each valid row, keyed as the pipeline keys them.
  table = pcsv.read_csv(train.EXAMPLE_DATA, convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
  batch = table.combine_chunks().to_batches()[0]
  batch = batch.append_column('__source', pa.array([train.EXAMPLE_DATA] * batch.num_rows))
  batch = batch.append_column('__row', pa.array(np.arange(2, batch.num_rows + 2), pa.int64()))
  valid, _ = validate(batch, bundle.features)
  expected = dict(zip(valid.column('__key').to_pylist(),
                      LinearSoftmax(width_in, width_out).predict(bundle.features.transform(valid))))

  files = glob.glob(os.path.join(plan.predictions.where, 'predictions-*.parquet'))
  rows = pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()
  assert len(rows) == len(expected) == 342
  names = [f'probability_{c}' for c in train.CLASSES]
  for row in rows:
    np.testing.assert_allclose([row[n] for n in names], expected[row['row_id']], rtol=1e-5, atol=1e-6)
    assert row['predicted_class'] == train.CLASSES[int(np.argmax(expected[row['row_id']]))]
  totals = counters(result)
  assert totals['rows_read'] == totals['rows_predicted'] + totals['rows_rejected'] == 344
  assert totals['rows_predicted'] == 342
