"""Where the model is shared across processes by default: wherever a machine runs several."""

import pytest

from pipelines.options import BatchInferenceOptions


@pytest.mark.parametrize('flags, shared', [
    ([], False),  # the DirectRunner in one process: nothing to share
    (['--runner=DirectRunner', '--direct_num_workers=2', '--direct_running_mode=multi_threading'], False),
    (['--direct_num_workers=2', '--direct_running_mode=multi_processing'], True),
    (['--runner=DataflowRunner'], True),
    (['--runner=PortableRunner'], True),
    (['--share_model_across_processes=true'], True),  # the flag wins
    (['--runner=DataflowRunner', '--share_model_across_processes=false'], False),
])
def test_share_model__defaults_by_runner_and_the_flag_wins(flags, shared):
  assert BatchInferenceOptions(flags).share_model() is shared
