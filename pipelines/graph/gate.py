"""The publish gate: thresholds a run must meet before its output is published.

`--gate=agreement>=0.97,psi<=0.1,rejected_rate<=0.01` names metrics of the
run and the bound each must keep. The job's final step (`pipelines.graph.finish`)
measures them once every row is counted, after the counts reconcile and before
anything is published. A run that breaks one publishes nothing: its staged
files stay in the attempt's folder for inspection, `gate.json` there says
which threshold broke and by how much, and the launcher exits with
`GATE_EXIT_STATUS`.

Metrics come from the run's own counts and its drift against the bundle's
training statistics, and with `--challenger` from the comparison of the two
models (`models.challenger`).
"""

from __future__ import annotations

import dataclasses
import operator
import re
from typing import Any, Callable, Optional

from apache_beam.io.filesystems import FileSystems

from pipelines.record import status

from transforms.files import publish
from pipelines.record.report import drift_rows  # the report's own drift flags, so the gate and the page agree
from transforms.rows import dead_letters
from transforms.rows.data_profile import psi

GATE_FILE = 'gate.json'
# The launcher's exit status when a gate breaks (0 done, 1 failed, 2 bad flags or preflight).
GATE_EXIT_STATUS = 4
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    '>=': operator.ge, '<=': operator.le, '>': operator.gt, '<': operator.lt}

# name -> (what it measures, needs a challenger, needs training statistics)
METRICS: dict[str, tuple[str, bool, bool]] = {
    'rejected_rate': ('rows rejected (refused by the output included) / rows read', False, False),
    'drifted_features': ('features the report flags as drifted from training', False, True),
    'feature_psi': ('largest population stability index of a categorical feature against training', False, True),
    'missing_rate_shift': ('largest change of a feature\'s share of missing values against training', False, True),
    'agreement': ('share of rows both models scored where the challenger predicts the same class', True, False),
    'psi': ('population stability index of the challenger\'s predictions against the champion\'s', True, False),
    'score_shift': ('largest shift of a score quantile (5% to 95%), challenger minus champion', True, False),
    'challenger_unscored_rate': ('share of predicted rows the challenger could not score', True, False),
    'score_psi': ('largest PSI of a score (a class\'s probability) against the champion\'s, over its deciles', True,
                  False),
    **{f'top{share}_overlap': (f'lowest share of the top {share}% of keys by a score that both models put there', True,
                               False) for share in (1, 5, 10)},
}
_CONDITION = re.compile(r'^\s*([a-z][a-z0-9_]*)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$')


class GateBreachedError(RuntimeError):
  """The run broke a threshold of --gate; nothing was published."""


@dataclasses.dataclass(frozen=True)
class Threshold:
  metric: str
  op: str
  bound: float

  def __str__(self) -> str:
    return f'{self.metric}{self.op}{self.bound:g}'


def parse(text: Optional[str], *, challenger: bool = False) -> tuple[Threshold, ...]:
  """Parses `METRIC OP NUMBER[,...]`; raises ValueError naming every bad condition."""
  if not text:
    return ()
  thresholds, problems = [], []
  for part in text.split(','):
    if not part.strip():
      continue
    match = _CONDITION.match(part)
    if not match:
      problems.append(f'{part.strip()!r} is not METRIC OP NUMBER (OP one of >=, <=, >, <)')
      continue
    metric, op, number = match.groups()
    if metric not in METRICS:
      problems.append(f'{metric!r} is not a gate metric (known: {", ".join(METRICS)})')
      continue
    if METRICS[metric][1] and not challenger:
      problems.append(f'{metric!r} compares two models: it needs --challenger')
      continue
    try:
      bound = float(number)
    except ValueError:
      problems.append(f'{part.strip()!r}: {number!r} is not a number')
      continue
    thresholds.append(Threshold(metric, op, bound))
  if problems:
    raise ValueError('--gate: ' + '; '.join(problems))
  return tuple(thresholds)


def needs_training_statistics(thresholds: tuple[Threshold, ...]) -> list[str]:
  return [t.metric for t in thresholds if METRICS[t.metric][2]]


def _feature_psi(features: dict[str, Any], training: dict[str, Any]) -> Optional[float]:
  """Largest PSI of a categorical feature: its categories (those kept) plus the unseen share."""
  values = []
  for name, stats in features.items():
    trained = training.get('features', {}).get(name)
    if stats['dtype'] != 'string' or not trained or stats.get('oov_rate') is None:
      continue
    def shares(s: dict[str, Any]) -> dict[str, float]:
      known = 1.0 - (s.get('oov_rate') or 0.0)
      return {**{k: v * known for k, v in s.get('frequencies', {}).items()}, '<unseen>': s.get('oov_rate') or 0.0}
    values.append(psi(shares(trained), shares(stats)))
  return max(values) if values else None


def measure(counts: dict[str, int], profile: Optional[dict[str, Any]], comparison: Optional[dict[str, Any]],
            training: Optional[dict[str, Any]]) -> dict[str, Optional[float]]:
  """Every gate metric this run can give (None where it cannot: no profile, training statistics or challenger)."""
  rejected, asked = dead_letters.guarded(counts)  # as --max_rejected_fraction counts: refused rows included
  metrics: dict[str, Optional[float]] = {m: None for m in METRICS}
  metrics['rejected_rate'] = rejected / asked if asked else 0.0
  if profile is not None and training is not None:
    drift = drift_rows(profile['input'], training)
    metrics['drifted_features'] = float(sum(1 for r in drift if r['flags']))
    shifts = [abs(r['missing_rate'] - r['training_missing_rate']) for r in drift
              if r['missing_rate'] is not None and r['training_missing_rate'] is not None]
    metrics['missing_rate_shift'] = max(shifts) if shifts else 0.0
    metrics['feature_psi'] = _feature_psi(profile['input']['features'], training)
  if comparison is not None:
    for name in ('agreement', 'psi', 'score_shift', 'challenger_unscored_rate', 'score_psi', 'top1_overlap',
                 'top5_overlap', 'top10_overlap'):
      metrics[name] = comparison.get(name)
  return metrics


def evaluate(thresholds: tuple[Threshold, ...], metrics: dict[str, Optional[float]]) -> dict[str, Any]:
  """The verdict: each threshold with the measured value, whether it held, and by how much it broke."""
  checks = []
  for t in thresholds:
    value = metrics.get(t.metric)
    held = value is not None and _OPERATORS[t.op](value, t.bound)
    check = {'threshold': str(t), 'metric': t.metric, 'op': t.op, 'bound': t.bound, 'value': value, 'held': held}
    if not held:
      check['by'] = None if value is None else abs(value - t.bound)
      check['message'] = (f'{t.metric} could not be measured ({METRICS[t.metric][0]}), so {t} cannot be shown to hold'
                          if value is None else
                          f'{t.metric} is {value:.4g}, breaking {t} by {abs(value - t.bound):.4g}')
    checks.append(check)
  breaches = [c for c in checks if not c['held']]
  return {'passed': not breaches, 'checks': checks, 'metrics': metrics,
          'breaches': [c['message'] for c in breaches]}


def write_verdict(folder: str, verdict: dict[str, Any]) -> None:
  publish.write_json(FileSystems.join(folder, GATE_FILE), verdict)


def read_verdict(folder: str) -> Optional[dict[str, Any]]:
  return publish.read_json(FileSystems.join(folder, GATE_FILE))


def breach_message(run_id: str, verdict: dict[str, Any]) -> str:
  return (f'run {run_id} broke its publish gate: {"; ".join(verdict["breaches"])}. Nothing was published; '
          'the staged output is kept in the attempt folder for inspection')


def enforce(plan, verdict: dict[str, Any]) -> None:
  """Writes the verdict into the attempt's folder; a breach records the failure for `status` and raises."""
  write_verdict(plan.record_folder, verdict)
  if not verdict['passed']:
    message = breach_message(plan.run_id, verdict)
    status.record_failure(plan, message)
    raise GateBreachedError(message)


def summary_of(verdict: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
  """What the run summary says of the gate."""
  if verdict is None:
    return None
  return {'passed': verdict['passed'],
          'checks': [{k: c[k] for k in ('threshold', 'value', 'held')} for c in verdict['checks']]}
