"""Where the model is shared across processes by default: where several share a machine and the model needs the
memory, or was measured faster shared."""

import pytest

from models.bundle import SAVED_MODEL
from pipelines.options import SHARED_MODEL_BYTES, BatchInferenceOptions

TWO_PROCESSES = ['--direct_num_workers=2', '--direct_running_mode=multi_processing']
SMALL, LARGE = 50_000, SHARED_MODEL_BYTES


@pytest.mark.parametrize('flags, shared', [
    ([], False),  # the DirectRunner in one process: nothing to share
    (['--runner=DirectRunner', '--direct_num_workers=2', '--direct_running_mode=multi_threading'], False),
    (TWO_PROCESSES, True),
    (['--runner=DataflowRunner'], True),
    (['--runner=PortableRunner'], True),
    (['--share_model_across_processes=true'], True),  # the flag wins
    (['--runner=DataflowRunner', '--share_model_across_processes=false'], False),
])
def test_share_model__before_the_model_is_known__follows_the_runner_and_the_flag_wins(flags, shared):
  assert BatchInferenceOptions(flags).share_model() is shared


@pytest.mark.parametrize('flags, formats, model_bytes, shared', [
    (TWO_PROCESSES, ['onnx'], SMALL, False),  # a small model on CPUs: a copy per process
    (['--runner=DataflowRunner'], ['xgboost'], SMALL, False),
    (['--runner=DataflowRunner'], ['sklearn'], LARGE, True),  # a copy per process would cost its size in each
    (['--runner=DataflowRunner'], ['onnx'], LARGE - 1, False),
    (TWO_PROCESSES, [SAVED_MODEL], SMALL, True),  # TensorFlow's runtime in each process costs more
    (TWO_PROCESSES, ['torch'], SMALL, True),  # measured faster shared
    (TWO_PROCESSES, ['onnx', SAVED_MODEL], SMALL, True),  # a champion and a challenger share one setting
    (['--runner=DataflowRunner', '--device=gpu'], ['onnx'], SMALL, True),  # one copy per GPU
    (['--runner=DataflowRunner', '--inference_accelerator=type:nvidia-l4;count:1'], ['sklearn'], SMALL, True),
    (['--runner=DataflowRunner', '--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1'],
     ['xgboost'], SMALL, True),
    ([], [SAVED_MODEL], LARGE, False),  # one process: nothing to share, whatever the model
    ([*TWO_PROCESSES, '--share_model_across_processes=true'], ['onnx'], SMALL, True),  # the flag wins
    (['--runner=DataflowRunner', '--device=gpu', '--share_model_across_processes=false'], [SAVED_MODEL], LARGE,
     False),
])
def test_fill_share_model__shares_where_the_model_needs_the_memory_or_runs_faster_so(flags, formats, model_bytes,
                                                                                    shared):
  opts = BatchInferenceOptions(flags)
  opts.fill_share_model(formats, lambda: model_bytes)
  assert opts.share_model_across_processes is shared and opts.share_model() is shared


def test_fill_share_model__sizes_the_model_only_when_the_choice_depends_on_it():
  def unsized() -> int:
    raise AssertionError('the model was sized')
  for flags, formats in ((['--runner=DataflowRunner', '--device=gpu'], ['onnx']), (TWO_PROCESSES, [SAVED_MODEL]),
                         (TWO_PROCESSES, ['onnx', 'torch']), ([], ['onnx']),
                         (['--share_model_across_processes=false'], ['onnx'])):
    BatchInferenceOptions(flags).fill_share_model(formats, unsized)
