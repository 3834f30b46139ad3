"""Tiny real SavedModels for tests: a linear layer with a serving signature, exported by TensorFlow."""

from __future__ import annotations

from typing import Optional

import numpy as np


def linear(x: np.ndarray, weights: np.ndarray, bias: np.ndarray, *, softmax: bool = True) -> np.ndarray:
  """What `save_linear_model` computes, in numpy, to compare against."""
  logits = x.astype(np.float64) @ np.asarray(weights, np.float64) + np.asarray(bias, np.float64)
  if not softmax:
    return logits
  e = np.exp(logits - logits.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def save_linear_model(path: str, weights, bias, *, softmax: bool = True, poison_at: Optional[float] = None,
                      outputs: tuple[str, ...] = ('probabilities',), signature: str = 'serving_default') -> str:
  """Exports `softmax(x @ weights + bias)` (or the logits) as a SavedModel at `path`.

  Args:
    weights, bias: a (features, outputs) matrix and (outputs,) vector.
    softmax: return probabilities; False returns the raw logits.
    poison_at: when set, the model raises (tf.debugging.assert_less) on any
      batch holding a row whose first feature is >= this value.
    outputs: names of the signature's outputs; each returns the same tensor.
    signature: the signature's name.
  """
  import tensorflow as tf
  module = tf.Module()
  module.weights = tf.Variable(np.asarray(weights, np.float32))
  module.bias = tf.Variable(np.asarray(bias, np.float32))
  width = module.weights.shape[0]

  @tf.function(input_signature=[tf.TensorSpec([None, width], tf.float32, name='features')])
  def serve(features):
    if poison_at is not None:
      tf.debugging.assert_less(features[:, 0], tf.constant(poison_at, tf.float32),
                               message='poisonous row: first feature too large')
    result = tf.matmul(features, module.weights) + module.bias
    if softmax:
      result = tf.nn.softmax(result)
    return {name: result for name in outputs}

  tf.saved_model.save(module, path, signatures={signature: serve})
  return path
