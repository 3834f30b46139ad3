"""--device: GPU inference fails at model load with a clear message when no GPU is visible,
and CPU placement predicts what TensorFlow's own placement predicts."""

import numpy as np
import pytest

from models.handlers.base import NoGpuError

from models.handlers.tensorflow import SavedModelHandler
from models.examples.penguins import train
from pipelines import run as run_job


def _gpus():
  import tensorflow as tf
  return tf.config.list_physical_devices('GPU')


def test_load_model__with_device_gpu_and_no_gpu__fails_saying_what_to_do(penguin_bundle):
  if _gpus():
    pytest.skip('this machine has a GPU; the next test covers it')
  handler = SavedModelHandler(penguin_bundle.saved_model_path, device='gpu')
  with pytest.raises(NoGpuError, match='sees no GPU') as raised:
    handler.load_model()
  message = str(raised.value)
  assert 'worker_accelerator' in message and 'install-nvidia-driver' in message and '--device=cpu' in message


def test_load_model__with_device_gpu_and_a_gpu__predicts_like_the_cpu(penguin_bundle):
  if not _gpus():
    pytest.skip('no GPU on this machine')
  cpu = SavedModelHandler(penguin_bundle.saved_model_path, device='cpu').load_model()
  gpu = SavedModelHandler(penguin_bundle.saved_model_path, device='gpu').load_model()
  features = np.random.default_rng(0).normal(size=(64, cpu.input_width)).astype(np.float32)
  np.testing.assert_allclose(gpu.predict(features), cpu.predict(features), rtol=1e-4, atol=1e-5)


def test_device_cpu__predicts_what_automatic_placement_predicts(penguin_bundle):
  auto = SavedModelHandler(penguin_bundle.saved_model_path).load_model()
  cpu = SavedModelHandler(penguin_bundle.saved_model_path, device='cpu').load_model()
  features = np.random.default_rng(1).normal(size=(32, auto.input_width)).astype(np.float32)
  np.testing.assert_allclose(cpu.predict(features), auto.predict(features), rtol=1e-5, atol=1e-6)


def test_run__with_device_gpu_on_the_direct_runner_and_no_gpu__stops_before_the_pipeline(
    penguin_bundle, tmp_path, capsys):
  if _gpus():
    pytest.skip('this machine has a GPU')
  code = run_job.main([f'--input={train.EXAMPLE_DATA}', f'--model={penguin_bundle.path}',
                       f'--output={tmp_path / "out"}', '--device=gpu'])
  assert code == 2
  assert 'sees no GPU' in capsys.readouterr().err
  assert not (tmp_path / 'out').exists()
