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


POISON_MESSAGE = 'poisonous row: first feature too large'


def save_linear_model(path: str, weights, bias, *, softmax: bool = True, poison_at: Optional[float] = None,
                      outputs: tuple[str, ...] = ('probabilities',), signature: str = 'serving_default',
                      poison_message: str = POISON_MESSAGE) -> str:
  """Exports `softmax(x @ weights + bias)` (or the logits) as a SavedModel at `path`.

  Args:
    weights, bias: a (features, outputs) matrix and (outputs,) vector.
    softmax: return probabilities; False returns the raw logits.
    poison_at: when set, the model raises (tf.debugging.assert_less) on any
      batch holding a row whose first feature is >= this value, with `poison_message`.
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
                               message=poison_message)
    result = tf.matmul(features, module.weights) + module.bias
    if softmax:
      result = tf.nn.softmax(result)
    return {name: result for name in outputs}

  tf.saved_model.save(module, path, signatures={signature: serve})
  return path


def save_poisoned_softmax(path: str, *, width: int = 2, poison_at: float, outputs: tuple[str, ...] = ('probabilities',),
                          poison_message: str = POISON_MESSAGE) -> str:
  """The tests' poisoned model: `softmax(features)`, raising on any call that holds a row whose first
  feature is >= `poison_at`, so a runner must retry its batch row by row to isolate that row."""
  return save_linear_model(path, np.eye(width), np.zeros(width), poison_at=poison_at, outputs=outputs,
                           poison_message=poison_message)


def save_image_model(path: str, height: int, width: int, classes: int, *, seed: int = 0,
                     input_name: str = 'image') -> tuple[str, np.ndarray]:
  """A SavedModel over NHWC float32 images: the mean of each channel, times a seeded (3, classes) matrix,
  softmaxed. Returns the path and the matrix, to compute the same in numpy."""
  import tensorflow as tf
  weights = np.random.default_rng(seed).normal(0, 3, (3, classes)).astype(np.float32)
  module = tf.Module()
  module.weights = tf.Variable(weights)

  @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name=input_name)])
  def serve(image):
    return {'probabilities': tf.nn.softmax(tf.matmul(tf.reduce_mean(image, axis=[1, 2]), module.weights))}

  tf.saved_model.save(module, path, signatures={'serving_default': serve})
  return path, weights
