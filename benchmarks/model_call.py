"""What one model call costs in process, and through Beam's model server from another process.

    python -m benchmarks.model_call --bundles build/bench/frameworks/bundles

With `share_model_across_processes`, RunInference calls the model through a
`multiprocessing` proxy (`apache_beam.utils.multi_process_shared`): every
`predict` pickles its feature matrix to the process holding the model and the
outputs back. This times, per bundle, on one batch of random features:

    local      `predictor.predict(x)` in this process
    proxy      the same call from a second process through Beam's proxy
    proxy_row  a one-row call through the proxy: its fixed cost
    block      the batch through a `multiprocessing.shared_memory` block
               instead (the proxy carries its name; the outputs come back
               pickled): what passing batches that way would save
    pickle     pickling x and the outputs and loading them again, alone

Medians of --calls calls. Prints one JSON line per bundle.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import statistics
import sys
import time
import uuid
from multiprocessing import shared_memory
from typing import Callable

import numpy as np

from models.bundle import FRAMEWORK_BATCH_ROWS


def _median_ms(call: Callable[[], object], calls: int) -> float:
  call()  # warm-up: first calls allocate and compile
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return round(statistics.median(times) * 1000, 2)


def _load(bundle_path: str):
  """The bundle's loaded predictor, and the width of its feature matrix."""
  from models.bundle import ModelBundle
  from models.handlers import handler_for
  bundle = ModelBundle.load(bundle_path)
  return handler_for(bundle, share_across_processes=True).load_model(), len(bundle.features.output_names)


class _BlockReader:
  """The served model, also reading its input from a shared-memory block the caller names."""

  def __init__(self, predictor):
    self._predictor = predictor

  def predict(self, features: np.ndarray) -> np.ndarray:
    return self._predictor.predict(features)

  def predict_block(self, name: str, shape: tuple[int, int]) -> np.ndarray:
    block = shared_memory.SharedMemory(name=name)
    try:
      return self._predictor.predict(np.ndarray(shape, np.float32, buffer=block.buf))
    finally:
      block.close()


def _through_block(model, x: np.ndarray) -> np.ndarray:
  block = shared_memory.SharedMemory(create=True, size=x.nbytes)
  try:
    np.ndarray(x.shape, x.dtype, buffer=block.buf)[:] = x
    return model.predict_block(block.name, x.shape)
  finally:
    block.close()
    block.unlink()


def _time_proxy(tag: str, x: np.ndarray, calls: int, answer) -> None:
  """Runs in a second process: acquires the shared model by `tag` and times calls through the proxy."""
  from apache_beam.utils.multi_process_shared import MultiProcessShared
  model = MultiProcessShared(lambda: None, tag=tag, always_proxy=True).acquire()
  answer.send({'proxy_ms': _median_ms(lambda: model.predict(x), calls),
               'proxy_row_ms': _median_ms(lambda: model.predict(x[:1]), calls),
               'block_ms': _median_ms(lambda: _through_block(model, x), calls)})


def measure(bundle_path: str, rows: int, calls: int) -> dict:
  from apache_beam.utils.multi_process_shared import MultiProcessShared
  predictor, width = _load(bundle_path)
  x = np.random.default_rng(0).normal(size=(rows, width)).astype(np.float32)
  out = predictor.predict(x)
  local = _median_ms(lambda: predictor.predict(x), calls)
  # This process serves the model, as the first SDK process on a machine does; a second one calls it.
  tag = f'model_call_{uuid.uuid4().hex[:8]}'
  MultiProcessShared(lambda: _BlockReader(predictor), tag=tag, always_proxy=True).acquire()
  here, there = multiprocessing.get_context('spawn').Pipe()
  child = multiprocessing.get_context('spawn').Process(target=_time_proxy, args=(tag, x, calls, there))
  child.start()
  remote = here.recv()
  child.join()
  copy = _median_ms(lambda: (pickle.loads(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL)),
                             pickle.loads(pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))), calls)
  return {'bundle': os.path.basename(bundle_path.rstrip('/')), 'rows': rows, 'input_mb': round(x.nbytes / 1e6, 1),
          'output_mb': round(out.nbytes / 1e6, 1), 'local_ms': local, **remote, 'pickle_ms': copy}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--bundles', default='build/bench/frameworks/bundles', help='A folder of bundles.')
  parser.add_argument('--formats', default='onnx,torch,xgboost,sklearn', help='Bundles in it to time.')
  parser.add_argument('--rows', type=int, default=FRAMEWORK_BATCH_ROWS, help='Rows per call.')
  parser.add_argument('--calls', type=int, default=20, help='Calls per measurement.')
  args = parser.parse_args(argv)
  for name in args.formats.split(','):
    print(json.dumps(measure(os.path.join(args.bundles, name), args.rows, args.calls)), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
