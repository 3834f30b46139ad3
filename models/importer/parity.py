"""The import's proof: does the bundle predict what the user's own code predicted?

`--expected FILE` holds sample rows, in any input format, with the feature
columns and the outputs the user's own code produced for them, under the names
the job itself writes:

  classification  `probability_<class>` for some or all classes, and/or
                  `predicted_class`
  regression      `score`

The import runs the bundle on those rows and refuses to write it unless every
row agrees: a probability or score within `atol + rtol * |expected|`, a class
equal (or tied within `atol` with the bundle's top class). A row the bundle's
validation rejects disagrees too. With `--expected_label COLUMN` (classification
only) the file holds the true class instead, and the bundle must reach
`--min_accuracy` on it: a sanity bound, not a proof.

When the rows disagree, `models.importer.diagnosis` looks for the likely cause.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.bundle import BundleError, Outputs
from models.importer.samples import read_validated
from transforms.rows import dead_letters as dl
from transforms.features.spec import FeatureSpec

PREDICTED_CLASS = 'predicted_class'
SCORE = 'score'
# Mismatching rows the error shows.
SHOWN = 5


def probability_column(class_name: str) -> str:
  """The job's column for one class's probability (as `models.inference` names it)."""
  return 'probability_' + re.sub(r'\W', '_', str(class_name))


@dataclasses.dataclass(frozen=True)
class Tolerance:
  """How close a probability or score must be: |bundle - expected| <= atol + rtol * |expected|."""
  atol: float = 1e-4
  rtol: float = 1e-3

  def close(self, actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Elementwise agreement; a missing expected value (NaN) agrees with anything."""
    return np.isnan(expected) | (np.abs(actual - expected) <= self.atol + self.rtol * np.abs(expected))


@dataclasses.dataclass(frozen=True)
class ExpectedRows:
  """The rows of `--expected` the bundle can read, what was expected for them, and those it rejects."""
  path: str
  valid: pa.RecordBatch  # typed feature columns, the expected columns, and dl.KEY (`file:row`)
  rejected: tuple[tuple[str, str], ...]  # (key, reason) of rows validation turned away
  probabilities: dict[int, np.ndarray]  # model output index -> expected values (NaN where not given)
  classes: Optional[np.ndarray]  # expected class names (None where not given)
  scores: Optional[np.ndarray]
  labels: Optional[np.ndarray]

  @property
  def keys(self) -> list[str]:
    return self.valid.column(dl.KEY).to_pylist()

  def head(self, n: int) -> 'ExpectedRows':
    """The first `n` valid rows (and every rejected one), to try many candidate fixes quickly."""
    cut = lambda a: None if a is None else a[:n]  # noqa: E731
    return dataclasses.replace(self, valid=self.valid.slice(0, n), classes=cut(self.classes),
                               scores=cut(self.scores), labels=cut(self.labels),
                               probabilities={i: a[:n] for i, a in self.probabilities.items()})


def _contract(outputs: Outputs) -> str:
  if outputs.kind == 'regression':
    return f'a `{SCORE}` column'
  return (f'`{PREDICTED_CLASS}` and/or probability columns ({", ".join(probability_column(c) for c in outputs.classes)})'
          ', or --expected_label naming a column of true classes')


def read_expected(path: str, spec: FeatureSpec, outputs: Outputs, *, file_format: Optional[str] = None,
                  label: Optional[str] = None) -> ExpectedRows:
  """Reads and validates `--expected` as the pipeline reads input; raises unless it holds an expected output."""
  if outputs.kind == 'embedding':
    raise BundleError(f'--expected checks a classifier\'s or a regressor\'s outputs; an embedding model '
                      f'({outputs.describe()}) has none to compare: import it without --expected (--data still '
                      'checks that it returns finite values of the right width)')
  sample = read_validated(path, spec, flag='--expected', file_format=file_format)
  valid, rejected = sample.valid_rows(), sample.rejected
  names = valid.schema.names

  def floats(name: str) -> np.ndarray:
    return pc.cast(valid.column(name), pa.float64()).to_numpy(zero_copy_only=False)

  def texts(name: str) -> np.ndarray:
    return np.array(pc.cast(valid.column(name), pa.string()).to_pylist(), dtype=object)

  if label is not None and outputs.kind != 'classification':
    raise BundleError('--expected_label is for classifiers; for a regressor give the expected `score` column')
  if label is not None and label not in names:
    raise BundleError(f'--expected {path} has no column {label!r} (--expected_label); it has {names}')
  known = {probability_column(c) for c in outputs.classes}
  strays = [n for n in names if n.startswith('probability_') and n not in known and n != 'probability_']
  if strays:  # a misnamed class would otherwise go unchecked
    raise BundleError(f'--expected {path}: {strays} name no class of outputs.json; its probability columns are '
                      f'{[probability_column(c) for c in outputs.classes]}')
  probabilities = {i: floats(probability_column(c)) for i, c in enumerate(outputs.classes)
                   if probability_column(c) in names}
  expected = ExpectedRows(
      path=path, valid=valid, rejected=rejected, probabilities=probabilities,
      classes=texts(PREDICTED_CLASS) if outputs.kind == 'classification' and PREDICTED_CLASS in names else None,
      scores=floats(SCORE) if outputs.kind == 'regression' and SCORE in names else None,
      labels=texts(label) if label is not None else None)
  if not (probabilities or expected.classes is not None or expected.scores is not None or label):
    raise BundleError(f'--expected {path} holds no expected output: give {_contract(outputs)} '
                      f'(its columns: {[n for n in names if n not in dl.META_COLUMNS]})')
  return expected


@dataclasses.dataclass(frozen=True)
class Agreement:
  """How the bundle's outputs on the expected rows compare with what was expected."""
  rows: int
  agreeing: int  # rows within tolerance (outputs given), or predicted correctly (label only)
  passed: bool
  mismatches: tuple[str, ...]  # the first few rows that disagree, described
  summary: str

  @property
  def fraction(self) -> float:
    return self.agreeing / self.rows if self.rows else 0.0


def compare(scores: np.ndarray, expected: ExpectedRows, outputs: Outputs, tolerance: Tolerance,
            min_accuracy: Optional[float] = None) -> Agreement:
  """Compares the bundle's `scores` on `expected.valid` with the expected outputs or labels."""
  n = expected.valid.num_rows
  scores = np.asarray(scores, np.float64).reshape(n, -1)
  ok = np.ones(n, dtype=bool)
  problems: list[list[str]] = [[] for _ in range(n)]
  checks_outputs = bool(expected.probabilities) or expected.classes is not None or expected.scores is not None
  for i, want in expected.probabilities.items():
    close = tolerance.close(scores[:, i], want)
    for r in np.flatnonzero(~close):
      problems[r].append(f'{probability_column(outputs.classes[i])} expected {want[r]:.6g}, bundle {scores[r, i]:.6g}')
    ok &= close
  if expected.scores is not None:
    close = tolerance.close(scores[:, 0], expected.scores)
    for r in np.flatnonzero(~close):
      problems[r].append(f'{SCORE} expected {expected.scores[r]:.6g}, bundle {scores[r, 0]:.6g}')
    ok &= close
  classes = np.array(outputs.classes, dtype=object)
  predicted = classes[scores.argmax(axis=1)] if outputs.kind == 'classification' else None
  if expected.classes is not None:
    index = {c: i for i, c in enumerate(outputs.classes)}
    for r, want in enumerate(expected.classes):
      if want is None or want == predicted[r]:
        continue
      # A class tied (within atol) with the top one is not a disagreement: argmax picks either.
      tied = want in index and scores[r, index[want]] >= scores[r].max() - tolerance.atol
      if not tied:
        ok[r] = False
        problems[r].append(f'{PREDICTED_CLASS} expected {want}, bundle {predicted[r]}')
  rejected = [f'{key}: rejected by the bundle ({reason})' for key, reason in expected.rejected]
  keys = expected.keys
  mismatches = rejected[:SHOWN] + [f'{keys[r]}: ' + '; '.join(problems[r]) for r in np.flatnonzero(~ok)]
  agreeing, passed, parts = int(ok.sum()), True, []
  if checks_outputs:
    passed = bool(ok.all()) and not rejected
    parts.append(f'{agreeing} of {n + len(rejected)} rows agree with the expected outputs '
                 f'(|bundle - expected| <= {tolerance.atol:g} + {tolerance.rtol:g}·|expected|)')
  if expected.labels is not None:
    labelled = np.array([v is not None for v in expected.labels])
    correct = labelled & (predicted == expected.labels)
    accuracy = float(correct.sum() / max(labelled.sum(), 1))
    if min_accuracy is None:  # the bundle must beat always guessing the most common label
      values, counts = np.unique(expected.labels[labelled].astype(str), return_counts=True)
      min_accuracy = float(counts.max() / counts.sum()) if counts.size else 0.0
    passed = passed and accuracy >= min_accuracy
    parts.append(f'accuracy {accuracy:.4f} on {int(labelled.sum())} labelled rows (at least {min_accuracy:.4f} needed)')
    if not checks_outputs:
      agreeing = int(correct.sum())
      mismatches = rejected[:SHOWN] + [f'{keys[r]}: label {expected.labels[r]}, bundle {predicted[r]}'
                                       for r in np.flatnonzero(labelled & ~correct)]
  return Agreement(rows=n + len(rejected), agreeing=agreeing, passed=passed, mismatches=tuple(mismatches[:SHOWN]),
                   summary='; '.join(parts))
