"""Run statistics for the report: what the input looked like and what the model said.

Both profiles are Beam combiners over whole RecordBatches (one pyarrow/numpy
call per column per batch), so they cost little beside the job and run the same
on Dataflow. The input profile is also what training stores in the bundle
(`training_statistics` in metadata.json), so a run can be compared with the
data its model learned from: missing-value rates, out-of-vocabulary rates,
category frequencies and means.
"""

from __future__ import annotations

import dataclasses
import collections
import math
from typing import Any, Iterable, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.features.spec import FeatureSpec
from transforms.features.preprocessing import Vocabulary
from transforms.rows.validation import coerce_column, text_counts

OOV = '<out of vocabulary>'
# Categories kept per feature in a profile; rarer ones are summed into OOV or dropped.
TOP_CATEGORIES = 20


def _vocabulary(spec: FeatureSpec, name: str) -> Optional[tuple[str, ...]]:
  feature = spec.features[spec.columns.index(name)]
  step = next((s for s in feature.steps if isinstance(s, Vocabulary)), None)
  return step.vocabulary if step is not None else None


def _counts(values: pa.Array) -> dict[Any, int]:
  counts = pc.value_counts(values)
  return dict(zip(counts.field('values').to_pylist(), counts.field('counts').to_pylist()))


class InputProfileFn(beam.CombineFn):
  """Per feature of a fitted spec: rows, missing values, moments, vocabulary hits.

  Takes raw RecordBatches, as read (before validation), so rejected rows count
  too: a column that goes missing in production shows here even though its rows
  end in the dead letters. A value is missing when it is null or blank; values
  of the wrong type are neither missing nor counted (they are dead letters).
  """

  def __init__(self, spec: FeatureSpec):
    if not spec.is_fitted:
      raise ValueError('profiling needs a fitted feature spec (its vocabularies)')
    self._spec = spec
    # None: a column the model takes as it is (a table), whose every value is its own category.
    self._vocabularies = {f.name: None if _vocabulary(spec, f.name) is None else frozenset(_vocabulary(spec, f.name))
                          for f in spec.features if f.dtype == 'string'}

  def create_accumulator(self) -> dict[str, Any]:
    return {'rows': 0, 'features': {f.name: {'missing': 0, 'present': 0, 'sum': 0.0, 'sumsq': 0.0,
                                             'tokens': collections.Counter(), 'oov': 0}
                                    for f in self._spec.features}}

  def add_input(self, acc: dict[str, Any], batch: pa.RecordBatch) -> dict[str, Any]:
    n = batch.num_rows
    acc['rows'] += n
    for feature in self._spec.features:
      stats = acc['features'][feature.name]
      if feature.name not in batch.schema.names:
        stats['missing'] += n
        continue
      column = batch.column(feature.name)
      if feature.dtype == 'string':
        # One hash pass counts each distinct value (`text_counts` trims only those); the vocabulary
        # check runs on those few. A column of numbers is first typed as text, as validation types it.
        texts = text_counts(column)
        invalid = 0
        if texts is None:
          typed, wrong, _ = coerce_column(column, 'string')
          texts, invalid = text_counts(typed), int(np.count_nonzero(wrong))
        present = sum(texts.values())
        vocabulary = self._vocabularies[feature.name]
        known = texts if vocabulary is None else {token: c for token, c in texts.items() if token in vocabulary}
        stats['tokens'].update(known)
        stats['oov'] += present - sum(known.values())
      else:
        typed, wrong, non_finite = coerce_column(column, 'float')
        x = typed.to_numpy(zero_copy_only=False)  # nulls become NaN; typed values hold no other NaN
        values = x[~np.isnan(x)]
        present = len(values)
        stats['sum'] += float(values.sum())
        # Not np.dot: that wakes BLAS's thread pool on every batch, which then spins on the cores
        # the model and the job need (about 1 s per million rows on 2 cores).
        stats['sumsq'] += float(np.square(values).sum())
        invalid = int(np.count_nonzero(wrong | non_finite))
      stats['present'] += present
      # Invalid and non-finite values are null when typed too, but they are dead letters, not missing.
      stats['missing'] += n - present - invalid
    return acc

  def merge_accumulators(self, accumulators: Iterable[dict[str, Any]]) -> dict[str, Any]:
    merged = self.create_accumulator()
    for acc in accumulators:
      merged['rows'] += acc['rows']
      for name, stats in acc['features'].items():
        into = merged['features'][name]
        for key in ('missing', 'present', 'sum', 'sumsq', 'oov'):
          into[key] += stats[key]
        into['tokens'].update(stats['tokens'])
    return merged

  def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
    """`{'rows': N, 'features': {name: {missing_rate, mean, std | oov_rate, frequencies}}}`."""
    rows = acc['rows']
    features = {}
    for feature in self._spec.features:
      stats = acc['features'][feature.name]
      present = stats['present']
      out: dict[str, Any] = {'dtype': feature.dtype, 'missing_rate': stats['missing'] / rows if rows else None}
      if feature.dtype == 'float':
        mean = stats['sum'] / present if present else None
        out['mean'] = mean
        out['std'] = math.sqrt(max(stats['sumsq'] / present - mean * mean, 0.0)) if present else None
      else:
        out['oov_rate'] = stats['oov'] / present if present else None
        top = sorted(stats['tokens'].items(), key=lambda item: (-item[1], str(item[0])))[:TOP_CATEGORIES]
        out['frequencies'] = {str(token): count / present for token, count in top} if present else {}
      features[feature.name] = out
    return {'rows': rows, 'features': features}


class PredictionProfileFn(beam.CombineFn):
  """Class counts (or score values), confidence, and rows predicted per second.

  Scores are counted at three significant digits and confidences at two
  decimals, so the accumulator stays small however many rows pass.
  """

  def create_accumulator(self) -> dict[str, collections.Counter]:
    return {'classes': collections.Counter(), 'scores': collections.Counter(),
            'confidence': collections.Counter(), 'per_second': collections.Counter()}

  def add_input(self, acc, batch: pa.RecordBatch):
    names = batch.schema.names
    if 'predicted_class' in names:
      acc['classes'].update(_counts(batch.column('predicted_class')))
      probability = batch.column('predicted_probability').to_numpy(zero_copy_only=False)
      confidence = np.round(probability.astype(np.float64), 2)
      acc['confidence'].update(unique_counts(confidence))
    if 'score' in names:
      acc['scores'].update(unique_counts(significant_digits(batch.column('score').to_numpy(zero_copy_only=False))))
    seconds = pc.cast(batch.column('predicted_at'), pa.int64()).to_numpy(zero_copy_only=False) // 1_000_000
    acc['per_second'].update(unique_counts(seconds))
    return acc

  def merge_accumulators(self, accumulators):
    merged = self.create_accumulator()
    for acc in accumulators:
      for key, counter in acc.items():
        merged[key].update(counter)
    return merged

  def extract_output(self, acc) -> dict[str, Any]:
    """Sorted `[value, count]` pairs, JSON-ready."""
    return {key: sorted([[k, v] for k, v in counter.items()], key=lambda kv: kv[0]) for key, counter in acc.items()}


def psi(expected: dict[Any, float], actual: dict[Any, float], *, floor: float = 1e-4) -> float:
  """Population stability index of two distributions over the same buckets (shares, each summing to 1).

  Empty buckets count as `floor`, so a bucket that appears or vanishes adds a large but finite term.
  """
  total = 0.0
  for bucket in set(expected) | set(actual):
    e, a = max(expected.get(bucket, 0.0), floor), max(actual.get(bucket, 0.0), floor)
    total += (a - e) * math.log(a / e)
  return total


def significant_digits(x: np.ndarray, digits: int = 3) -> np.ndarray:
  x = x.astype(np.float64)
  finite = np.isfinite(x) & (x != 0)
  scale = np.zeros_like(x)
  scale[finite] = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(x[finite]))))
  return np.where(finite, np.round(x * np.where(finite, scale, 1.0)) / np.where(finite, scale, 1.0), x)


def unique_counts(x: np.ndarray) -> dict[Any, int]:
  values, counts = np.unique(x, return_counts=True)
  return dict(zip(values.tolist(), counts.tolist()))


def profile_in_memory(spec: FeatureSpec, batches: Iterable[pa.RecordBatch]) -> dict[str, Any]:
  """`InputProfileFn` over batches held in memory: what training stores in the bundle."""
  fn = InputProfileFn(spec)
  acc = fn.create_accumulator()
  for batch in batches:
    acc = fn.add_input(acc, batch)
  return fn.extract_output(acc)


@dataclasses.dataclass
class ProfileRun(beam.PTransform):
  """Profiles the raw input and the predictions; outputs one dict `{'input': ..., 'predictions': ...}`,
  or nothing when no batch was read: read it as a side input with `empty()` as its default.

  Both combines run without Beam's default-injecting steps (five per combine, each set up every
  run); the empty case costs nothing until it happens.

  Args:
    spec: the bundle's fitted feature spec.
  """

  spec: FeatureSpec

  def __post_init__(self):
    super().__init__()

  def empty(self) -> dict[str, Any]:
    """The profile of a run that read nothing."""
    inputs, predictions = InputProfileFn(self.spec), PredictionProfileFn()
    return {'input': inputs.extract_output(inputs.create_accumulator()),
            'predictions': predictions.extract_output(predictions.create_accumulator())}

  def expand(self, inputs: tuple[beam.PCollection, beam.PCollection]) -> beam.PCollection[dict[str, Any]]:
    raw, predictions = inputs
    input_profile = raw | 'ProfileInput' >> beam.CombineGlobally(InputProfileFn(self.spec)).without_defaults()
    prediction_profile = predictions | 'ProfilePredictions' >> beam.CombineGlobally(
        PredictionProfileFn()).without_defaults()
    return input_profile | 'Join' >> beam.Map(
        lambda i, p: {'input': i, 'predictions': p},
        p=beam.pvalue.AsSingleton(prediction_profile, default_value=self.empty()['predictions']))
