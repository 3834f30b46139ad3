"""How a challenger's predictions compare with the champion's, computed in the job by combiners over batches.

`models.challenger` pairs both models' verdicts per row in one RecordBatch per
predicted batch; `CompareModels` reduces them to one dict, with nothing kept
per row: agreement and the class-flip matrix, score quantiles and their shift,
the PSI of the predicted classes, per segment the same, and what a risk team
asks of each ranked score (each class's probability, or a regressor's score):

- how far it moved: the mean shift, the mean absolute shift and its quantiles;
- its distribution under each model, and the PSI of the challenger's over the
  champion's deciles;
- the overlap of the keys each model puts in its top 1%, 5% and 10%.

Scores are counted in sparse histograms of fine bins (`RANK_STEP` wide on the
logit of a probability, or on asinh of a regressor's score), so an accumulator
stays small however many rows pass, and a probability near 0 or 1 keeps its
resolution. The top sets need both models' thresholds at once on each row, so
they take a second pass over the batches: the first finds the bin of each
threshold, the second counts the keys above it under both models and gathers
the few rows inside the two boundary bins, which place the thresholds exactly.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.rows.data_profile import significant_digits, unique_counts, psi

# Quantiles at which the two models' scores are compared.
QUANTILES = tuple(round(q, 2) for q in np.arange(0.05, 0.96, 0.05))
# Segments kept in the comparison, the largest first.
TOP_SEGMENTS = 30
# The top shares of keys by score whose overlap between the two models is counted.
TOP_SHARES = (0.01, 0.05, 0.1)
# Bin width of the score histograms: on the logit of a probability, or asinh of a regressor's score.
RANK_STEP = 1 / 256
# A probability that moved at least this far (absolute) counts as a moved row.
MOVED = 0.1
_SEP = '\x1f'
# Columns of a comparison batch holding each ranked score: CHAMPION + name and CHALLENGER + name.
CHAMPION, CHALLENGER = 'champion_score:', 'challenger_score:'


def _value_counts(values: pa.Array) -> dict[Any, int]:
  counts = pc.value_counts(values)
  return dict(zip(counts.field('values').to_pylist(), counts.field('counts').to_pylist()))


def rank_keys(values: np.ndarray, probability: bool) -> np.ndarray:
  """Each score's bin: the floor of its logit (a probability) or asinh (any score), in RANK_STEPs."""
  values = values.astype(np.float64)
  if probability:
    p = np.clip(values, 1e-9, 1 - 1e-9)
    values = np.log(p) - np.log1p(-p)
  else:
    values = np.arcsinh(values)
  return np.floor(values / RANK_STEP).astype(np.int64)


def key_edge(key: float, probability: bool) -> float:
  """The lowest score of bin `key` (a bin and a half for its middle)."""
  t = float(key) * RANK_STEP
  return 1.0 / (1.0 + math.exp(-t)) if probability else math.sinh(t)


Histogram = tuple[np.ndarray, np.ndarray]  # sorted distinct bin keys, and how many scores fell in each


def histogram(keys: np.ndarray) -> Histogram:
  values, counts = np.unique(keys, return_counts=True)
  return values, counts.astype(np.int64)


def merge(a: Histogram, b: Histogram) -> Histogram:
  keys, where = np.unique(np.concatenate([a[0], b[0]]), return_inverse=True)
  return keys, np.bincount(where, weights=np.concatenate([a[1], b[1]]), minlength=len(keys)).astype(np.int64)


def _empty() -> Histogram:
  return np.zeros(0, np.int64), np.zeros(0, np.int64)


def quantile_key(h: Histogram, q: float) -> int:
  cumulative = np.cumsum(h[1])
  return int(h[0][min(np.searchsorted(cumulative, q * cumulative[-1]), len(h[0]) - 1)])


def top_key(h: Histogram, share: float) -> tuple[int, int]:
  """The bin holding the `ceil(share × n)`-th highest score: (its key, that many)."""
  wanted = max(1, math.ceil(share * int(h[1].sum()) - 1e-9))
  return int(h[0][::-1][int(np.searchsorted(np.cumsum(h[1][::-1]), wanted))]), wanted


def binned(h: Histogram, edges: np.ndarray) -> np.ndarray:
  """Counts of a histogram between bin keys `edges` (a key equal to an edge counts in the bin above it)."""
  return np.bincount(np.searchsorted(edges, h[0], side='right'), weights=h[1], minlength=len(edges) + 1)


def _psi_of_arrays(expected: np.ndarray, actual: np.ndarray) -> Optional[float]:
  if not expected.sum() or not actual.sum():
    return None
  return psi(dict(enumerate(expected / expected.sum())), dict(enumerate(actual / actual.sum())))


class ScoreStats:
  """One ranked score under both models (a class's probability, or a regressor's score): the accumulator's
  part for it, and what it gives once every batch is in."""

  @staticmethod
  def create() -> dict[str, Any]:
    return {'rows': 0, 'champion_sum': 0.0, 'challenger_sum': 0.0, 'abs_shift_sum': 0.0, 'moved': 0,
            'champion': _empty(), 'challenger': _empty(), 'shift': _empty()}

  @staticmethod
  def add(acc: dict[str, Any], a: np.ndarray, b: np.ndarray, probability: bool) -> None:
    shift = b - a
    acc['rows'] += len(a)
    acc['champion_sum'] += float(a.sum())
    acc['challenger_sum'] += float(b.sum())
    acc['abs_shift_sum'] += float(np.abs(shift).sum())
    acc['moved'] += int((np.abs(shift) >= MOVED).sum())
    for name, values, as_probability in (('champion', a, probability), ('challenger', b, probability),
                                         ('shift', shift, False)):
      acc[name] = merge(acc[name], histogram(rank_keys(values, as_probability)))

  @staticmethod
  def merge_into(into: dict[str, Any], acc: dict[str, Any]) -> None:
    for key in ('rows', 'champion_sum', 'challenger_sum', 'abs_shift_sum', 'moved'):
      into[key] += acc[key]
    for key in ('champion', 'challenger', 'shift'):
      into[key] = merge(into[key], acc[key])

  @staticmethod
  def extract(name: str, acc: dict[str, Any], probability: bool) -> tuple[dict[str, Any], list[list[int]]]:
    """The score's statistics, and each top share's threshold keys (champion, challenger) for the second pass."""
    n = acc['rows']
    a, b = acc['champion'], acc['challenger']
    edges = np.array(sorted({quantile_key(a, q) for q in np.arange(0.1, 0.91, 0.1)}), dtype=np.int64)
    lo, hi = (0.0, 1.0) if probability else (key_edge(min(a[0][0], b[0][0]), False),
                                             key_edge(max(a[0][-1], b[0][-1]) + 1, False))
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 21)
    middle = lambda h: np.array([key_edge(k + 0.5, probability) for k in h[0]])
    drawn = {m: np.bincount(np.clip(np.searchsorted(bins, middle(h), side='right') - 1, 0, 19), weights=h[1],
                            minlength=20).astype(int).tolist() for m, h in (('champion', a), ('challenger', b))}
    tops, thresholds = [], []
    for share in TOP_SHARES:
      (key_a, wanted), (key_b, _) = top_key(a, share), top_key(b, share)
      tops.append({'share': share, 'keys': wanted})
      thresholds.append([key_a, key_b])
    stats = {
        'score': name, 'rows': n,
        'champion_mean': acc['champion_sum'] / n, 'challenger_mean': acc['challenger_sum'] / n,
        'mean_shift': (acc['challenger_sum'] - acc['champion_sum']) / n, 'mean_abs_shift': acc['abs_shift_sum'] / n,
        'shift_quantiles': {str(q): key_edge(quantile_key(acc['shift'], q) + 0.5, False) for q in (0.05, 0.5, 0.95)},
        'moved_rows': acc['moved'] / n if probability else None,
        'psi': _psi_of_arrays(binned(a, edges), binned(b, edges)),
        'psi_edges': [key_edge(k, probability) for k in edges.tolist()],
        'distribution': {'edges': bins.tolist(), **drawn}, 'top': tops}
    return stats, thresholds


class CompareFn(beam.CombineFn):
  """Reduces the paired verdicts (`models.challenger`'s comparison batches) to the comparison of the two models.

  The predicted class's probability (or a regressor's score) is counted at
  three significant digits for the quantiles; each ranked score in the
  histograms of `ScoreStats`. The output also carries `_top_keys`, each top
  share's threshold bins, for `CompareModels`' second pass.
  """

  def create_accumulator(self) -> dict[str, Any]:
    return {'rows': 0, 'unscored': 0, 'agree': 0, 'flips': collections.Counter(),
            'champion': collections.Counter(), 'challenger': collections.Counter(),
            'segments': {}, 'scores': {}}

  def add_input(self, acc, batch: pa.RecordBatch):
    n = batch.num_rows
    unscored = batch.column('unscored').to_numpy(zero_copy_only=False)
    scored = ~unscored
    acc['rows'] += n
    acc['unscored'] += int(unscored.sum())
    champion = batch.column('champion_score').to_numpy(zero_copy_only=False)
    challenger = batch.column('challenger_score').to_numpy(zero_copy_only=False)
    acc['champion'].update(unique_counts(significant_digits(champion[scored])))
    acc['challenger'].update(unique_counts(significant_digits(challenger[scored])))
    classes = 'champion_class' in batch.schema.names
    if classes:
      same = pc.fill_null(pc.equal(batch.column('champion_class'), batch.column('challenger_class')), False)
      agree = same.to_numpy(zero_copy_only=False)
      acc['agree'] += int(agree.sum())
      pairs = pc.binary_join_element_wise(batch.column('champion_class'),
                                          pc.fill_null(batch.column('challenger_class'), '<unscored>'), _SEP)
      acc['flips'].update(_value_counts(pairs))
    else:
      agree = np.zeros(n, dtype=bool)
    if scored.any():
      for name in (c[len(CHAMPION):] for c in batch.schema.names if c.startswith(CHAMPION)):
        a = batch.column(CHAMPION + name).to_numpy(zero_copy_only=False)[scored]
        b = batch.column(CHALLENGER + name).to_numpy(zero_copy_only=False)[scored]
        ScoreStats.add(acc['scores'].setdefault(name, ScoreStats.create()), a, b, probability=classes)
    table = pa.table({'segment': batch.column('segment'), 'agree': pa.array(agree.astype(np.int64)),
                      'champion': pa.array(np.where(scored, champion, 0.0)),
                      'challenger': pa.array(np.where(scored, challenger, 0.0)),
                      'scored': pa.array(scored.astype(np.int64))})
    grouped = table.group_by('segment').aggregate(
        [('agree', 'count'), ('agree', 'sum'), ('champion', 'sum'), ('challenger', 'sum'), ('scored', 'sum')])
    for row in zip(*(grouped.column(c).to_pylist() for c in ('segment', 'agree_count', 'agree_sum', 'champion_sum',
                                                             'challenger_sum', 'scored_sum'))):
      into = acc['segments'].setdefault(row[0], [0, 0, 0.0, 0.0, 0])
      for i, value in enumerate(row[1:]):
        into[i] += value
    return acc

  def merge_accumulators(self, accumulators):
    merged = self.create_accumulator()
    for acc in accumulators:
      for key in ('rows', 'unscored', 'agree'):
        merged[key] += acc[key]
      for key in ('flips', 'champion', 'challenger'):
        merged[key].update(acc[key])
      for segment, values in acc['segments'].items():
        into = merged['segments'].setdefault(segment, [0, 0, 0.0, 0.0, 0])
        for i, value in enumerate(values):
          into[i] += value
      for name, stats in acc['scores'].items():
        ScoreStats.merge_into(merged['scores'].setdefault(name, ScoreStats.create()), stats)
    return merged

  def extract_output(self, acc) -> dict[str, Any]:
    scored = acc['rows'] - acc['unscored']
    classes = bool(acc['flips'])
    flips: dict[str, dict[str, int]] = {}
    for pair, n in acc['flips'].items():
      a, b = pair.split(_SEP)
      flips.setdefault(a, {})[b] = n
    quantiles = []
    if scored:
      for q in QUANTILES:
        a, b = _quantile(acc['champion'], q), _quantile(acc['challenger'], q)
        quantiles.append({'q': q, 'champion': a, 'challenger': b, 'shift': b - a})
    if classes:
      champion_shares = collections.Counter()
      challenger_shares = collections.Counter()
      for a, row in flips.items():
        for b, n in row.items():
          champion_shares[a] += n
          if b != '<unscored>':
            challenger_shares[b] += n
      class_psi = _psi_of_counts(champion_shares, challenger_shares)
    else:
      class_psi = _binned_psi(acc['champion'], acc['challenger'])
    scores, top_keys = [], {}
    for name, stats in acc['scores'].items():
      if stats['rows']:
        stats_out, top_keys[name] = ScoreStats.extract(name, stats, probability=classes)
        scores.append(stats_out)
    segments = sorted(acc['segments'].items(), key=lambda kv: (-kv[1][0], str(kv[0])))[:TOP_SEGMENTS]
    return {
        'rows': acc['rows'], 'scored_by_both': scored, 'challenger_unscored': acc['unscored'],
        'challenger_unscored_rate': acc['unscored'] / acc['rows'] if acc['rows'] else 0.0,
        'agreement': acc['agree'] / scored if classes and scored else None,
        'flips': flips, 'psi': class_psi, 'quantiles': quantiles,
        'score_shift': max((abs(q['shift']) for q in quantiles), default=None),
        'score_psi': max((s['psi'] for s in scores if s['psi'] is not None), default=None),
        'scores': scores, '_top_keys': top_keys,
        'segments': [{'segment': s, 'rows': v[0], 'agreement': v[1] / v[4] if classes and v[4] else None,
                      'champion_mean': v[2] / v[4] if v[4] else None, 'challenger_mean': v[3] / v[4] if v[4] else None,
                      'mean_shift': (v[3] - v[2]) / v[4] if v[4] else None} for s, v in segments],
        'segments_total': len(acc['segments']),
    }


def _quantile(counts: collections.Counter, q: float) -> float:
  values = np.array(sorted(counts), dtype=np.float64)
  cumulative = np.cumsum([counts[v] for v in values])
  return float(values[min(np.searchsorted(cumulative, q * cumulative[-1]), len(values) - 1)])


def _psi_of_counts(expected: collections.Counter, actual: collections.Counter) -> Optional[float]:
  e_total, a_total = sum(expected.values()), sum(actual.values())
  if not e_total or not a_total:
    return None
  return psi({k: v / e_total for k, v in expected.items()}, {k: v / a_total for k, v in actual.items()})


def _binned_psi(champion: collections.Counter, challenger: collections.Counter) -> Optional[float]:
  """PSI of scores over the champion's deciles."""
  if not champion or not challenger:
    return None
  edges = sorted({_quantile(champion, q) for q in np.arange(0.1, 0.91, 0.1)})
  def bins(counts):
    values = np.array(list(counts), dtype=np.float64)
    which = np.searchsorted(edges, values, side='right')
    out = collections.Counter()
    for b, n in zip(which.tolist(), counts.values()):
      out[b] += n
    return out
  return _psi_of_counts(bins(champion), bins(challenger))


def count_tops(batch: pa.RecordBatch, compared: dict[str, Any]) -> dict[tuple[int, int], list]:
  """The second pass, per batch: for each ranked score and top share, the keys above each model's boundary bin and
  above both, and both scores of the rows in either boundary bin (few: a bin is narrow), to place them exactly."""
  out = {}
  scored = ~batch.column('unscored').to_numpy(zero_copy_only=False)
  probability = 'champion_class' in batch.schema.names
  for i, (name, thresholds) in enumerate(compared['_top_keys'].items()):
    a = batch.column(CHAMPION + name).to_numpy(zero_copy_only=False)[scored]
    b = batch.column(CHALLENGER + name).to_numpy(zero_copy_only=False)[scored]
    keys_a, keys_b = rank_keys(a, probability), rank_keys(b, probability)
    for j, (key_a, key_b) in enumerate(thresholds):
      above_a, above_b = keys_a > key_a, keys_b > key_b
      edge = (keys_a == key_a) | (keys_b == key_b)
      out[(i, j)] = [np.array([above_a.sum(), above_b.sum(), (above_a & above_b).sum()]), a[edge], b[edge]]
  return out


class MergeTops(beam.CombineFn):
  """Adds up `count_tops`' counts and gathers its boundary rows; {} when no batch was scored."""

  def create_accumulator(self) -> dict[tuple[int, int], list]:
    return {}

  @staticmethod
  def _add(acc, where, counts, a: list, b: list) -> None:
    into = acc.setdefault(where, [np.zeros(3, np.int64), [], []])
    into[0] = into[0] + counts
    into[1].extend(a)
    into[2].extend(b)

  def add_input(self, acc, counted):
    for where, (counts, a, b) in counted.items():
      self._add(acc, where, counts, [a], [b])
    return acc

  def merge_accumulators(self, accumulators):
    merged = {}
    for acc in accumulators:
      for where, (counts, a, b) in acc.items():
        self._add(merged, where, counts, a, b)
    return merged

  def extract_output(self, acc):
    return {where: [counts, np.concatenate(a), np.concatenate(b)] for where, (counts, a, b) in acc.items()}


def _members(values: np.ndarray, keys: np.ndarray, boundary: int, above: int, wanted: int) -> tuple[np.ndarray, float]:
  """Which boundary rows are in the top `wanted` (those at or above the `wanted - above`-th highest score in the
  boundary bin: exact ties are kept in), and that score."""
  at = keys == boundary
  threshold = float(np.sort(values[at])[::-1][wanted - above - 1])
  return (keys > boundary) | (at & (values >= threshold)), threshold


def with_overlaps(compared: dict[str, Any], tops: dict[tuple[int, int], list]) -> dict[str, Any]:
  """The comparison with each top share's overlap: keys in both top sets over the larger set (the sets are exact:
  ties at the boundary score are kept in); and the lowest overlap of each share over the scores."""
  out = {k: v for k, v in compared.items() if k != '_top_keys'}
  probability = out['agreement'] is not None
  for i, (stats, thresholds) in enumerate(zip(out['scores'], compared['_top_keys'].values())):
    for j, (top, (key_a, key_b)) in enumerate(zip(stats['top'], thresholds)):
      (above_a, above_b, above_both), a, b = tops[(i, j)]
      in_a, top['champion_threshold'] = _members(a, rank_keys(a, probability), key_a, int(above_a), top['keys'])
      in_b, top['challenger_threshold'] = _members(b, rank_keys(b, probability), key_b, int(above_b), top['keys'])
      top.update(champion_keys=int(above_a + (in_a & (rank_keys(a, probability) == key_a)).sum()),
                 challenger_keys=int(above_b + (in_b & (rank_keys(b, probability) == key_b)).sum()),
                 shared=int(above_both + (in_a & in_b).sum()))
      top['overlap'] = top['shared'] / max(top['champion_keys'], top['challenger_keys'])
  for share in TOP_SHARES:
    overlaps = [t['overlap'] for s in out['scores'] for t in s['top'] if t['share'] == share]
    out[f'top{share * 100:g}_overlap'] = min(overlaps, default=None)
  return out


class CompareModels(beam.PTransform):
  """One dict comparing the two models (`CompareFn`, then the top sets' second pass), also when no row was
  predicted; it names both models when given their bundles."""

  def __init__(self, champion=None, challenger=None):
    super().__init__()
    self._names = {role: {'name': b.name, 'version': b.version} for role, b in
                   (('champion', champion), ('challenger', challenger)) if b is not None}

  def expand(self, pairs: beam.PCollection[pa.RecordBatch]) -> beam.PCollection[dict[str, Any]]:
    compared = pairs | 'Combine' >> beam.CombineGlobally(CompareFn())
    tops = (pairs
            | 'CountTops' >> beam.Map(count_tops, beam.pvalue.AsSingleton(compared))
            | 'MergeTops' >> beam.CombineGlobally(MergeTops()))
    return compared | 'AddOverlaps' >> beam.Map(
        lambda c, t, names: {**names, **with_overlaps(c, t)}, beam.pvalue.AsSingleton(tops), self._names)
