"""The Arrow and numpy coders: exact round trips, sizes without encoding, and Beam picking them."""

import datetime

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that

from transforms.rows.coders import NdarrayCoder, RecordBatchCoder
from transforms.features.spec import ApplyFeatures

AT = datetime.datetime(2026, 11, 25, 17, 30, tzinfo=datetime.timezone.utc)
BATCH = pa.RecordBatch.from_pydict({
    'key': ['a', 'b', None], 'score': pa.array([0.5, None, -1.0], pa.float32()), 'n': [1, 2, None],
    'at': pa.array([AT, None, AT], pa.timestamp('us', tz='UTC'))})


@pytest.mark.parametrize('batch', [BATCH, BATCH.slice(1, 2), BATCH.slice(0, 0)], ids=['whole', 'slice', 'empty'])
def test_record_batch_coder__round_trip_keeps_schema_values_and_nulls(batch):
  coder = RecordBatchCoder()
  decoded = coder.decode(coder.encode(batch))
  assert decoded.schema == batch.schema
  assert decoded.equals(batch)


@pytest.mark.parametrize('array', [np.arange(12, dtype=np.float32).reshape(4, 3), np.zeros((0, 7), np.float32),
                                   np.array([1, 2, 3], dtype=np.int64)], ids=['matrix', 'no-rows', 'vector'])
def test_ndarray_coder__round_trip_keeps_dtype_and_shape(array):
  coder = NdarrayCoder()
  decoded = coder.decode(coder.encode(array))
  assert decoded.dtype == array.dtype and decoded.shape == array.shape
  np.testing.assert_array_equal(decoded, array)


def test_ndarray_coder__refuses_object_arrays_rather_than_pickling():
  with pytest.raises(ValueError):
    NdarrayCoder().encode(np.array([{'a': 1}], dtype=object))


def test_estimated_sizes__are_the_buffer_sizes():
  matrix = np.ones((1000, 8), np.float32)
  assert RecordBatchCoder().estimate_size(BATCH) == BATCH.nbytes
  assert NdarrayCoder().estimate_size(matrix) == matrix.nbytes
  # The sampled size of a (batch, features) element sums its parts (plus length prefixes)
  # instead of pickling the pair.
  pair = beam.coders.registry.get_coder(beam.typehints.Tuple[pa.RecordBatch, np.ndarray])
  assert 0 <= pair.estimate_size((BATCH, matrix)) - (BATCH.nbytes + matrix.nbytes) <= 16


def test_feature_step__declares_batches_and_matrices_so_beam_uses_these_coders(penguin_bundle):
  p = beam.Pipeline()
  pairs = p | beam.Create([BATCH]).with_output_types(pa.RecordBatch) | ApplyFeatures(penguin_bundle.features)
  coder = beam.coders.registry.get_coder(pairs.element_type)
  assert isinstance(coder, beam.coders.TupleCoder)
  assert [type(c) for c in coder.coders()] == [RecordBatchCoder, NdarrayCoder]


def test_typed_batches__cross_a_shuffle_encoded_by_these_coders_intact():
  batches = [BATCH, BATCH.slice(0, 1)]

  def equal_batches(actual):
    assert sorted(b.to_pylist() for b in actual) == sorted(b.to_pylist() for b in batches)
    assert all(b.schema == BATCH.schema for b in actual)

  with test_pipeline.TestPipeline() as p:
    shuffled = (p | beam.Create(batches, reshuffle=False).with_output_types(pa.RecordBatch)
                | beam.Reshuffle())
    assert_that(shuffled, equal_batches)
