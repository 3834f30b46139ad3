"""The feature spec: which columns a model reads and how each becomes numbers.

`FitFeatures` learns the spec's statistics from a PCollection of RecordBatches
(one combiner pass per step depth); `ApplyFeatures` turns each batch into the
float32 matrix the model takes. Training and serving share this code, and the
fitted spec is stored in the model bundle, so serving matches training.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.rows import coders as _coders  # noqa: F401  (registers the coders of the declared element types)
from transforms.features.preprocessing import FillMissing, OneHot, Step, Values, Vocabulary

DTYPES = ('float', 'string')


@dataclasses.dataclass(frozen=True)
class Feature:
  """One input column, its type, and the ordered steps that turn it into model inputs.

  A missing value is rejected unless the first step fills it, so `required`
  is derived rather than declared twice.
  """
  name: str
  dtype: str
  steps: tuple[Step, ...] = ()

  def __post_init__(self):
    if self.dtype not in DTYPES:
      raise ValueError(f'feature {self.name!r}: dtype must be one of {DTYPES}, got {self.dtype!r}')
    steps, previous = [], None
    for step in self.steps:  # settle what needs no data, like a one_hot's depth after a given vocabulary
      step = step.resolved(previous)
      if isinstance(step, OneHot) and step.depth is None and not isinstance(previous, Vocabulary):
        raise ValueError(f"feature {self.name!r}: one_hot needs 'depth' (the number of integer ids) unless it "
                         'directly follows a vocabulary step, e.g. "steps": [{"kind": "vocabulary"}, '
                         '{"kind": "one_hot"}]')
      steps.append(step)
      previous = step
    object.__setattr__(self, 'steps', tuple(steps))
    if self.dtype == 'string' and not any(isinstance(s, Vocabulary) for s in self.steps):
      raise ValueError(f'feature {self.name!r}: a string feature needs a vocabulary step, e.g. "steps": '
                       f'[{Vocabulary.example_json()}, {OneHot.example_json()}]')

  @property
  def required(self) -> bool:
    return not (self.steps and isinstance(self.steps[0], FillMissing))

  @property
  def is_fitted(self) -> bool:
    return all(step.is_fitted for step in self.steps)

  @property
  def output_names(self) -> list[str]:
    """Names of the model-input columns this feature produces, in order."""
    last = self.steps[-1] if self.steps else None
    if isinstance(last, OneHot):
      vocab = next((s for s in self.steps if isinstance(s, Vocabulary)), None)
      if vocab is None:  # integer codes, one-hot encoded as they are
        tokens = [str(i) for i in range(last.depth)]
      else:
        oov = [f'<oov{i}>' for i in range(vocab.num_oov_buckets)]
        tokens = oov + list(vocab.vocabulary) if vocab.oov_position == 'first' else list(vocab.vocabulary) + oov
        tokens += [f'<unused{i}>' for i in range(last.depth - len(tokens))]  # a depth set wider than the ids
      return [f'{self.name}={t}' for t in tokens[:last.depth]]
    return [self.name]

  def missing(self) -> list[str]:
    """What is still to be given or fitted, one line per step, each with a working example."""
    lines = []
    for i, step in enumerate(self.steps):
      if not step.missing() or (isinstance(step, OneHot) and i and isinstance(self.steps[i - 1], Vocabulary)):
        continue  # a one_hot's depth follows from its vocabulary
      names = step.missing()
      lines.append(f'feature {self.name!r}, step {step.kind}: no {" or ".join(map(repr, names))}; give '
                   f'{"them" if len(names) > 1 else "it"}, for example {step.example_json()}')
    return lines

  def describe(self) -> list[str]:
    """One line per step with every learned value, and the model-input columns it produces."""
    lines = [step.describe() for step in self.steps]
    last = self.steps[-1] if self.steps else None
    if isinstance(last, OneHot):
      names = self.output_names
      vocab = next((s for s in self.steps if isinstance(s, Vocabulary)), None)
      oov = [n for n in names if n.startswith(f'{self.name}=<oov')]
      lines[-1] += f', in this order: {", ".join(names)}'
      if vocab is not None and oov:
        lines[-1] += (f' ({oov[0]}, column {names.index(oov[0])}, is the out-of-vocabulary bucket)' if len(oov) == 1
                      else f' ({", ".join(oov)} are the out-of-vocabulary buckets)')
    return lines

  def apply(self, values: Values, upto: Optional[int] = None) -> Values:
    for step in self.steps[:upto]:
      values = step.apply(values)
    return values

  def to_dict(self) -> dict[str, Any]:
    return {'name': self.name, 'dtype': self.dtype, 'required': self.required,
            'steps': [s.to_dict() for s in self.steps]}

  @classmethod
  def from_dict(cls, data: dict[str, Any]) -> 'Feature':
    example = ('{"name": "temp_max", "dtype": "float", "steps": [{"kind": "z_score", "mean": 16.4, "std": 7.2}]}')
    if not isinstance(data, dict):
      raise ValueError(f'a feature is a JSON object like {example}, got {data!r}')
    absent = [k for k in ('name', 'dtype') if k not in data]
    unknown = sorted(set(data) - {'name', 'dtype', 'steps', 'required'})
    if absent or unknown:  # a misspelt 'steps' must not pass as a feature with no steps
      problem = f'no {" or ".join(map(repr, absent))}' if absent else f'no key {", ".join(map(repr, unknown))}'
      raise ValueError(f'feature {data.get("name", data)!r}: {problem} (a feature takes name, dtype, steps); '
                       f'for example {example}')
    if not isinstance(data.get('steps', []), list):
      raise ValueError(f'feature {data["name"]!r}: steps must be a list, e.g. {example}')
    try:
      steps = tuple(Step.from_dict(s) for s in data.get('steps', []))
    except ValueError as e:
      raise ValueError(f'feature {data["name"]!r}: {e}') from None
    feature = cls(data['name'], data['dtype'], steps)
    if 'required' in data and data['required'] != feature.required:
      raise ValueError(f"feature {feature.name!r}: 'required' is {data['required']} but its steps "
                       f"make it {feature.required} (only a leading fill_missing makes a column optional)")
    return feature


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """The ordered features of a model; the model input is their outputs side by side."""
  features: tuple[Feature, ...]

  def __post_init__(self):
    object.__setattr__(self, 'features', tuple(self.features))
    names = [f.name for f in self.features]
    if not names:
      raise ValueError('a feature spec needs at least one feature')
    if len(set(names)) != len(names):
      raise ValueError(f'feature names must be unique, got {names}')

  @property
  def columns(self) -> list[str]:
    return [f.name for f in self.features]

  @property
  def is_fitted(self) -> bool:
    return all(f.is_fitted for f in self.features)

  @property
  def output_names(self) -> list[str]:
    return [name for f in self.features for name in f.output_names]

  @property
  def depth(self) -> int:
    return max(len(f.steps) for f in self.features)

  def missing(self) -> list[str]:
    """What every unfitted step still needs, one line each with a working example."""
    return [line for f in self.features for line in f.missing()]

  def describe(self) -> list[str]:
    """Every feature in input order with each step's learned values and the columns it produces."""
    lines, column = [], 0
    for f in self.features:
      width = len(f.output_names)
      where = f'column {column}' if width == 1 else f'columns {column}-{column + width - 1}'
      lines.append(f'{f.name} ({f.dtype}) -> {where}:')
      lines += [f'    {line}' for line in f.describe()]
      column += width
    return lines

  def analyzers(self, stage: int) -> dict[str, beam.CombineFn]:
    """The combiners needed to fit the steps at position `stage`, by feature name."""
    return {f.name: f.steps[stage].analyzer() for f in self.features
            if stage < len(f.steps) and f.steps[stage].analyzer() is not None}

  def with_fitted_stage(self, stage: int, statistics: dict[str, Any]) -> 'FeatureSpec':
    features = []
    for f in self.features:
      if stage < len(f.steps):
        previous = f.steps[stage - 1] if stage else None
        try:
          step = f.steps[stage].fitted(statistics.get(f.name), previous)
        except ValueError as e:
          raise ValueError(f'fitting feature {f.name!r} step {f.steps[stage].kind!r}: {e}') from None
        f = dataclasses.replace(f, steps=f.steps[:stage] + (step,) + f.steps[stage + 1:])
      features.append(f)
    return FeatureSpec(tuple(features))

  def transform(self, batch: pa.RecordBatch, dtype: np.dtype = np.float32) -> np.ndarray:
    """The model input for a validated batch: a (rows, len(output_names)) matrix, float32 unless the model
    takes float64 (a model fitted on float64 disagrees with itself on float32 inputs)."""
    if not self.is_fitted:
      raise ValueError('feature spec is not fitted; fit it on training data first')
    blocks = [np.asarray(f.apply(batch.column(f.name)), dtype=dtype) for f in self.features]
    # reshape(-1, 1), not reshape(rows, -1): the latter cannot size a 0-row block.
    return np.concatenate([b if b.ndim == 2 else b.reshape(-1, 1) for b in blocks], axis=1)

  def to_dict(self) -> dict[str, Any]:
    return {'features': [f.to_dict() for f in self.features]}

  @classmethod
  def from_dict(cls, data: dict[str, Any]) -> 'FeatureSpec':
    if not isinstance(data, dict) or 'features' not in data:
      raise ValueError("a feature spec is a JSON object with a 'features' list")
    return cls(tuple(Feature.from_dict(f) for f in data['features']))

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2)


class _StageStatisticsFn(beam.CombineFn):
  """Runs each feature's analyzer for one step depth over whole batches at once."""

  def __init__(self, analyzers: dict[str, beam.CombineFn]):
    self._analyzers = analyzers

  def create_accumulator(self):
    return {name: fn.create_accumulator() for name, fn in self._analyzers.items()}

  def add_input(self, acc, columns: dict[str, Values]):
    for name, fn in self._analyzers.items():
      acc[name] = fn.add_input(acc[name], columns[name])
    return acc

  def merge_accumulators(self, accumulators):
    accumulators = list(accumulators)
    return {name: fn.merge_accumulators([a[name] for a in accumulators])
            for name, fn in self._analyzers.items()}

  def extract_output(self, acc):
    out = {}
    for name, fn in self._analyzers.items():
      try:
        out[name] = fn.extract_output(acc[name])
      except ValueError as e:
        raise ValueError(f'fitting feature {name!r}: {e}') from None
    return out


def _stage_inputs(batch: pa.RecordBatch, spec: FeatureSpec, stage: int) -> dict[str, Values]:
  """Each analysed column after the already-fitted steps before `stage`."""
  return {name: spec.features[spec.columns.index(name)].apply(batch.column(name), upto=stage)
          for name in spec.analyzers(stage)}


def fit_in_memory(spec: FeatureSpec, batches: Sequence[pa.RecordBatch]) -> FeatureSpec:
  """Fits `spec` on batches held in memory, with the same combiners as `FitFeatures`."""
  for stage in range(spec.depth):
    fn = _StageStatisticsFn(spec.analyzers(stage))
    acc = fn.create_accumulator()
    for batch in batches:
      acc = fn.add_input(acc, _stage_inputs(batch, spec, stage))
    spec = spec.with_fitted_stage(stage, fn.extract_output(acc))
  return spec


@dataclasses.dataclass
class FitFeatures(beam.PTransform):
  """Fits a feature spec on validated RecordBatches; outputs one fitted `FeatureSpec`.

  Steps at the same depth are fitted together in one pass; a step sees its
  column after the earlier (already fitted) steps, as it will when serving.
  """

  spec: FeatureSpec

  def __post_init__(self):
    super().__init__()

  def expand(self, batches: beam.PCollection[pa.RecordBatch]) -> beam.PCollection[FeatureSpec]:
    fitted = batches.pipeline | 'Unfitted' >> beam.Create([self.spec])
    for stage in range(self.spec.depth):
      statistics = (
          batches
          | f'Prepare{stage}' >> beam.Map(_stage_inputs, spec=beam.pvalue.AsSingleton(fitted), stage=stage)
          | f'Analyze{stage}' >> beam.CombineGlobally(_StageStatisticsFn(self.spec.analyzers(stage))))
      fitted = fitted | f'Fit{stage}' >> beam.Map(
          lambda spec, stats, stage: spec.with_fitted_stage(stage, stats),
          stats=beam.pvalue.AsSingleton(statistics), stage=stage)
    return fitted


@dataclasses.dataclass
class ApplyFeatures(beam.PTransform):
  """Pairs each validated batch with its model-input matrix: `(batch, features)`."""

  spec: FeatureSpec

  def __post_init__(self):
    super().__init__()
    if not self.spec.is_fitted:
      raise ValueError('ApplyFeatures needs a fitted feature spec')

  def expand(self, batches: beam.PCollection[pa.RecordBatch]) -> beam.PCollection[tuple[pa.RecordBatch, np.ndarray]]:
    return batches | 'Transform' >> beam.Map(
        lambda batch, spec: (batch, spec.transform(batch)), spec=self.spec).with_output_types(
            beam.typehints.Tuple[pa.RecordBatch, np.ndarray])

