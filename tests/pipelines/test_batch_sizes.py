"""Rows per batch default to the model format's number, and a flag given wins."""

import pytest

from models.bundle import FRAMEWORK_BATCH_ROWS, SAVED_MODEL, SAVED_MODEL_BATCH_ROWS, batch_rows
from pipelines.options import BatchInferenceOptions


def _filled(*flags: str, fmt: str = 'onnx') -> tuple[int, int]:
  opts = BatchInferenceOptions(list(flags))
  opts.fill_batch_sizes(batch_rows(fmt))
  return opts.read_batch_size, opts.max_batch_rows


def test_defaults__follow_the_format():
  assert _filled(fmt=SAVED_MODEL) == (SAVED_MODEL_BATCH_ROWS, SAVED_MODEL_BATCH_ROWS)
  for fmt in ('onnx', 'torch', 'xgboost', 'sklearn'):
    assert _filled(fmt=fmt) == (FRAMEWORK_BATCH_ROWS, FRAMEWORK_BATCH_ROWS)


def test_a_champion_and_its_challenger__take_the_smaller_size():
  assert batch_rows('onnx', SAVED_MODEL) == batch_rows(SAVED_MODEL, 'xgboost') == SAVED_MODEL_BATCH_ROWS
  assert batch_rows('onnx', 'sklearn') == FRAMEWORK_BATCH_ROWS


@pytest.mark.parametrize('flags, expected', [
    (['--read_batch_size=100'], (100, FRAMEWORK_BATCH_ROWS)),
    (['--max_batch_rows=1000'], (1000, 1000)),  # a read batch never outgrows a model call
    (['--read_batch_size=10', '--max_batch_rows=20'], (10, 20)),
    (['--min_batch_rows=100000'], (FRAMEWORK_BATCH_ROWS, 100000)),  # the bound stays consistent
    (['--read_batch_size=100000'], (100000, 100000)),  # a model call takes a whole element read
])
def test_flags_given__win(flags, expected):
  assert _filled(*flags) == expected


def test_bad_sizes__are_refused_before_any_default():
  with pytest.raises(ValueError, match='--read_batch_size must be at least 1'):
    BatchInferenceOptions(['--input=a', '--model=m', '--output=o', '--read_batch_size=0']).validate_flags()
  with pytest.raises(ValueError, match='--max_batch_rows must be at least 1'):
    BatchInferenceOptions(['--input=a', '--model=m', '--output=o', '--max_batch_rows=0']).validate_flags()
  with pytest.raises(ValueError, match='--min_batch_rows must be at least 1 and at most --max_batch_rows'):
    BatchInferenceOptions(['--input=a', '--model=m', '--output=o', '--min_batch_rows=9',
                           '--max_batch_rows=8']).validate_flags()
