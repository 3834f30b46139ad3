"""Why a bundle disagrees with the user's own outputs: the likely cause, and the fix to give.

A bundle that reproduces a model's outputs on most rows but not all usually
numbers a category's values differently from the user's training code: another
vocabulary order (frequency, lexical, numeric), or the out-of-vocabulary id
first (as Keras' `StringLookup` puts it) rather than last. A classifier whose
probabilities all come out permuted has its classes listed in another order. A
model fitted on float64 that disagrees on a few rows near its split points is fed
float32: its inputs are tried in float64.
`diagnose` tries those alternatives on the expected rows and names the ones that
make the model agree.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow as pa

from models.bundle import Outputs
from models.importer.parity import Agreement, ExpectedRows, Tolerance, compare
from models.inputs import MATRIX, InputContract
from transforms.features.analyzers import ORDERS, ValueCountsFn, order_tokens
from transforms.features.spec import FeatureSpec
from transforms.features.preprocessing import Vocabulary

# Rows each candidate fix is tried on: enough to tell orders apart, few enough to try dozens.
DIAGNOSIS_ROWS = 2000


def _vocabulary_step(spec: FeatureSpec, name: str) -> tuple[int, Vocabulary]:
  feature = spec.features[spec.columns.index(name)]
  index = next(i for i, s in enumerate(feature.steps) if isinstance(s, Vocabulary))
  return index, feature.steps[index]


@dataclasses.dataclass(frozen=True)
class _Candidate:
  """Another way the user's code may have numbered one feature's values."""
  feature: str
  order: str
  tokens: tuple[str, ...]
  oov_position: str


def _with_vocabulary(spec: FeatureSpec, c: _Candidate) -> FeatureSpec:
  index, step = _vocabulary_step(spec, c.feature)
  features = []
  for f in spec.features:
    if f.name == c.feature:
      step = dataclasses.replace(step, vocabulary=c.tokens, order=c.order, oov_position=c.oov_position)
      f = dataclasses.replace(f, steps=f.steps[:index] + (step,) + f.steps[index + 1:])
    features.append(f)
  return FeatureSpec(tuple(features))


def _counts(spec: FeatureSpec, name: str, batches: Sequence[pa.RecordBatch]) -> dict[str, int]:
  """How often each value reaches the feature's vocabulary step in `batches`."""
  index, _ = _vocabulary_step(spec, name)
  feature = spec.features[spec.columns.index(name)]
  fn = ValueCountsFn()
  acc = fn.create_accumulator()
  for batch in batches:
    acc = fn.add_input(acc, feature.apply(batch.column(name), upto=index))
  return {str(v): c for v, c in acc.items()}


def _alternatives(spec: FeatureSpec, batches: Sequence[pa.RecordBatch]) -> list[_Candidate]:
  """Each other order of each vocabulary's own tokens, with its OOV ids last or first."""
  found = []
  for f in spec.features:
    if not any(isinstance(s, Vocabulary) for s in f.steps):
      continue
    step = _vocabulary_step(spec, f.name)[1]
    counts = _counts(spec, f.name, batches)
    seen = {(step.vocabulary, step.oov_position)}
    for order in ('as given', *ORDERS):
      try:
        tokens = step.vocabulary if order == 'as given' else tuple(order_tokens(step.vocabulary, order, counts))
      except ValueError:  # not every value is a number
        continue
      for oov_position in ('last', 'first'):
        if (tokens, oov_position) not in seen:
          seen.add((tokens, oov_position))
          found.append(_Candidate(f.name, step.order if order == 'as given' else order, tokens, oov_position))
  return found


def _cause(spec: FeatureSpec, c: _Candidate) -> str:
  """What differs for one feature, and the vocabulary step that makes the model agree."""
  step = _vocabulary_step(spec, c.feature)[1]
  fix = {'kind': 'vocabulary', 'vocabulary': list(c.tokens)}
  if c.oov_position != 'last':
    fix['oov_position'] = c.oov_position
  reordered = c.tokens != step.vocabulary
  moved = c.oov_position != step.oov_position
  what = []
  if reordered:
    what.append(f'vocabulary order differs for `{c.feature}`: the model agrees when it is ordered {c.order} '
                f'({", ".join(json.dumps(t) for t in c.tokens)})')
  if moved:
    what.append(f'{"and " if reordered else f"out-of-vocabulary position differs for `{c.feature}`: "}the model '
                f'agrees with its out-of-vocabulary id {c.oov_position}'
                + (' (as Keras StringLookup numbers them)' if c.oov_position == 'first' else ''))
  return f'{" ".join(what)}; give the vocabulary explicitly in features.json: {json.dumps(fix)}'


def diagnose(spec: FeatureSpec, predict: Callable[[np.ndarray], np.ndarray], expected: ExpectedRows,
             outputs: Outputs, tolerance: Tolerance, agreement: Agreement, *,
             count_batches: Sequence[pa.RecordBatch] = (), min_accuracy: Optional[float] = None,
             fitted_on_data: Sequence[str] = (), inputs: InputContract = MATRIX) -> list[str]:
  """The likely causes of a disagreement, each with what to change in features.json or outputs.json.

  Tries, one feature at a time and keeping each change that helps most, every
  other order (lexical, numeric, frequency in `count_batches`, else in the
  expected rows) of each vocabulary, with its out-of-vocabulary id last or
  first; then whether the classes are listed in another order than the model
  returns them. First of all, whether float64 inputs make a model fed float32 agree.
  """
  if expected.valid.num_rows > DIAGNOSIS_ROWS:
    expected = expected.head(DIAGNOSIS_ROWS)
    agreement = compare(predict(inputs.prepare(spec, expected.valid)), expected, outputs, tolerance, min_accuracy)

  def score(candidate: FeatureSpec) -> Agreement:
    return compare(predict(inputs.prepare(candidate, expected.valid)), expected, outputs, tolerance, min_accuracy)

  widened = _float64(inputs)
  if widened is not None:
    try:
      trial = compare(predict(widened.prepare(spec, expected.valid)), expected, outputs, tolerance, min_accuracy)
    except Exception:  # pylint: disable=broad-except  # a model that refuses float64 is not this case
      trial = agreement
    if trial.agreeing > agreement.agreeing:
      return [f'float32 casting: the model agrees on {trial.agreeing} of {trial.rows} rows when its inputs stay '
              f'float64 ({agreement.agreeing} in float32): it was fitted on float64, and rounding to float32 moves '
              f'values across its split points; declare its input as float64 in inputs.json: '
              f'{json.dumps(widened.to_dict())}']

  batches = list(count_batches) or [expected.valid]
  current, best = spec, agreement
  changed: dict[str, _Candidate] = {}
  for _ in range(len(spec.features)):
    trials = [(score(_with_vocabulary(current, c)), c) for c in _alternatives(current, batches)
              if c.feature not in changed]
    if not trials:
      break
    result, candidate = max(trials, key=lambda t: t[0].agreeing)
    if result.agreeing <= best.agreeing:
      break
    changed[candidate.feature] = candidate
    current, best = _with_vocabulary(current, candidate), result
    if result.passed:
      break
  causes = [_cause(spec, c) for c in changed.values()]
  if expected.rejected:
    key, reason = expected.rejected[0]
    causes.append(f'{len(expected.rejected)} expected rows are rejected by the bundle before the model sees them '
                  f'(first, {key}: {reason}); if your code fills such values, start that feature\'s steps with a '
                  'fill_missing step')
  if changed and not best.passed:
    causes.append(f'with that, {best.agreeing} of {best.rows} rows agree: something else differs too')
  if changed:
    return causes

  if outputs.kind == 'classification' and len(expected.probabilities) == len(outputs.classes):
    scores = predict(inputs.prepare(spec, expected.valid))
    # For each expected class column, the model output it matches best.
    match = [int(np.argmin([np.nanmax(np.abs(scores[:, j] - want)) for j in range(scores.shape[1])]))
             for want in (expected.probabilities[i] for i in range(len(outputs.classes)))]
    if sorted(match) == list(range(len(match))) and match != list(range(len(match))):
      reordered = [None] * len(match)
      for i, j in enumerate(match):
        reordered[j] = outputs.classes[i]
      trial = compare(scores, dataclasses.replace(expected, probabilities={
          match[i]: want for i, want in expected.probabilities.items()}, classes=None), outputs, tolerance)
      if trial.passed:
        return [f'the classes are in another order than the model returns them: the model agrees with '
                f'"classes": {json.dumps(reordered)} in outputs.json']
  if fitted_on_data:
    causes.append(f'--data fitted {", ".join(fitted_on_data)}; if your model was trained with other values '
                  '(another sample, another order), give them explicitly in features.json (the values fitted '
                  'are printed above)')
  causes.append('check the feature order (the model-input columns, in order, are printed above), each step and '
                'its statistics, and that the expected outputs come from the model you imported')
  return causes


def _float64(inputs: InputContract) -> Optional[InputContract]:
  """The contract with its float32 inputs widened to float64; None when it has none."""
  if inputs.shape == 'matrix':
    return dataclasses.replace(inputs, dtype='float64') if inputs.dtype == 'float32' else None
  if inputs.shape == 'table' and any(c.dtype == 'float32' for c in inputs.columns):
    return dataclasses.replace(inputs, columns=tuple(
        dataclasses.replace(c, dtype='float64') if c.dtype == 'float32' else c for c in inputs.columns))
  return None
