"""A text model's raw output → the answer outputs.json describes, one row per text, as text.json says.

Hugging Face models return what training needs: a classifier its logits, an encoder
its last_hidden_state, one vector per token, padding included. The job does the last
step a user's own code would: softmax into probabilities, or pooling into one vector
per text (the mean over its real tokens, or its first, [CLS], token) and L2 normalising,
so cosine similarity is a dot product. Pooling needs the call's attention mask: a
padded position must not count towards a text's mean.
"""

from __future__ import annotations

import numpy as np

from transforms.text.spec import TextSpec


def softmax(logits: np.ndarray) -> np.ndarray:
  """Probabilities over the last axis, stable for large logits."""
  shifted = logits - logits.max(axis=-1, keepdims=True)
  e = np.exp(shifted)
  return e / e.sum(axis=-1, keepdims=True)


def pool(hidden: np.ndarray, mask: np.ndarray, how: str) -> np.ndarray:
  """[rows, tokens, dim] → [rows, dim]: the mean over the tokens the mask keeps, or the first token's."""
  if how == 'cls':
    return hidden[:, 0, :]
  weights = mask.astype(hidden.dtype)[:, :, None]
  return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
  """Each row scaled to length 1 (a zero row stays zero rather than becoming NaN)."""
  norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
  return vectors / np.maximum(norms, np.finfo(vectors.dtype).tiny)


def finish(output: np.ndarray, mask: np.ndarray, spec: TextSpec) -> np.ndarray:
  """The model's output for one call → one row per text, as text.json says; a ValueError naming the shape
  when the output is not what the spec's post-processing takes."""
  output = np.asarray(output, np.float32)
  if spec.pooling is not None:
    if output.ndim != 3 or output.shape[:2] != mask.shape:
      raise ValueError(f'text.json pools an encoder\'s last_hidden_state [rows, tokens, dim] ({mask.shape[0]} rows, '
                       f'{mask.shape[1]} tokens); the model returned {list(output.shape)}: name that output as '
                       'output_key in outputs.json')
    pooled = pool(output, mask, spec.pooling)
    return l2_normalize(pooled) if spec.normalize else pooled
  if output.ndim != 2:
    raise ValueError(f'the model returned {list(output.shape)} per call; without pooling in text.json it returns '
                     'one row per text, [rows, outputs] (an encoder\'s [rows, tokens, dim] needs "pooling")')
  return softmax(output) if spec.softmax else output
