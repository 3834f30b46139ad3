"""The run summary: what was read, predicted and rejected, and where it went.

The job's last step (`pipelines.graph.finish`) counts the rows from its PCollections
and writes the summary; a launcher that waits reads it back. The same counts
are Beam counters in the `batch_inference` namespace, so on Dataflow they show
in the job page under the same names: rows_read, rows_predicted,
rows_rejected, rejected_<reason_code>, files_read.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

from apache_beam.metrics.metric import MetricsFilter

from transforms.rows.counters import NAMESPACE


def counters(result) -> dict[str, int]:
  """Committed counter values of our namespace, summed over steps."""
  totals: dict[str, int] = {}
  query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
  for counter in query['counters']:
    value = counter.committed if counter.committed is not None else counter.attempted
    totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (value or 0)
  return totals


@dataclasses.dataclass
class RunSummary:
  run_id: str
  model: dict[str, str]
  input: str
  output: str
  dead_letter: str
  runner: str
  state: str
  started_at: str
  wall_seconds: float
  rows_read: int
  rows_predicted: int
  rows_rejected: int
  rejected_by_reason: dict[str, int]
  files_read: int
  # For a bq:// output: rows of this run in the table, as BigQuery counts them, and where to see it.
  rows_written: Optional[int] = None
  output_link: Optional[str] = None
  attempt: Optional[str] = None  # the attempt folder this summary publishes (transforms.files.publish)
  finished_at: Optional[str] = None
  input_snapshot: Optional[str] = None  # the BigQuery snapshot time a table input was read at
  report: Optional[str] = None  # the run report's path, when one was written
  gate: Optional[dict[str, Any]] = None  # --gate: passed, and each threshold with its measured value
  challenger: Optional[dict[str, Any]] = None  # --challenger: the model and the headline of its comparison
  manifest: Optional[str] = None  # the run's reproducibility manifest (pipelines.graph.manifest), for --replay
  predictions_digest: Optional[dict[str, Any]] = None  # an order-free digest of the predictions
  rows_skipped: int = 0  # --only_unscored: rows an earlier run of this model version scored
  # Rows the output refused (a database constraint; streamed BigQuery rows): rejected, among rows_rejected
  # (reason write_error) and in every guard; for a ranking, a key with a refused rank is refused whole.
  rows_not_written: Optional[int] = None
  # An upserted table's keys that hold only an earlier run's rows: they were not in this run's input.
  keys_kept: Optional[int] = None
  # With --key_column: keys the input held on several rows (transforms.rows.duplicate_keys.describe):
  # keys, rows, examples {key: rows}, on_duplicate_key.
  duplicate_keys: Optional[dict[str, Any]] = None
  # For a ranking: predicted rows with fewer than top_k items {'rows', 'top_k'}.
  short_rankings: Optional[dict[str, int]] = None

  @classmethod
  def from_dict(cls, data: dict[str, Any]) -> 'RunSummary':
    """The summary as `to_dict` wrote it (derived fields dropped, unknown ones ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})

  @property
  def reconciled(self) -> bool:
    return self.rows_read == self.rows_predicted + self.rows_rejected + self.rows_skipped

  @property
  def rows_per_second(self) -> float:
    return self.rows_read / self.wall_seconds if self.wall_seconds > 0 else 0.0

  def to_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), 'reconciled': self.reconciled,
            'rows_per_second': round(self.rows_per_second, 1)}

  def render(self) -> str:
    """A one-screen, human-first summary."""
    check = 'yes' if self.reconciled else 'NO: some rows are unaccounted for'
    lines = [
        f'Run {self.run_id}: {self.state} on {self.runner} in {self.wall_seconds:.1f}s',
        f'  model      {self.model["name"]} v{self.model["version"]} ({self.model["path"]})',
        f'  input      {self.input}' + (f' ({self.files_read} files)' if self.files_read else '')
        + (f' at snapshot {self.input_snapshot}' if self.input_snapshot else ''),
        f'  output     {self.output}',
        *([f'  table      {self.output_link}'] if self.output_link else []),
        f'  rejected   {self.dead_letter}',
        f'  rows read       {self.rows_read:>12,}',
        f'  rows predicted  {self.rows_predicted:>12,}',
        f'  rows rejected   {self.rows_rejected:>12,}',
    ]
    lines += [f'    {code:<20} {count:>9,}' for code, count in sorted(self.rejected_by_reason.items())]
    if self.rows_not_written:
      lines.append(f'    (of them refused by the output, after the model: {self.rows_not_written:,})')
    found = self.duplicate_keys
    if found and found.get('keys'):
      examples = ', '.join(f'{k!r} ×{n}' for k, n in found['examples'].items())
      lines.append(f'  duplicate keys  {found["keys"]:>12,}  on {found["rows"]:,} rows, e.g. {examples} '
                   f'(--on_duplicate_key={found["on_duplicate_key"]})')
    if self.short_rankings and self.short_rankings.get('rows'):
      lines.append(f'  short rankings  {self.short_rankings["rows"]:>12,}  (fewer than {self.short_rankings["top_k"]} '
                   'items: the model ranked fewer)')
    if self.rows_skipped:
      lines.append(f'  rows skipped    {self.rows_skipped:>12,}  (scored before by this model version)')
    if self.rows_written is not None:
      lines.append(f'  rows in table   {self.rows_written:>12,}')
    if self.keys_kept:
      lines.append(f'  keys kept       {self.keys_kept:>12,}  (not in this input: they keep an earlier run\'s rows)')
    skipped = ' + skipped' if self.rows_skipped else ''
    lines += [f'  read = predicted + rejected{skipped}: {check}',
              f'  throughput      {self.rows_per_second:>12,.0f} rows/s']
    if self.challenger:
      c = self.challenger
      agreement = f'agreement {c["agreement"]:.2%}, ' if c.get('agreement') is not None else ''
      psi = f'{c["psi"]:.3g}' if c.get('psi') is not None else '–'
      lines.append(f'  challenger      {c["name"]} v{c["version"]}: {agreement}PSI {psi}')
    if self.gate:
      checks = ', '.join(f'{c["threshold"]} ({_value(c["value"])})' for c in self.gate['checks'])
      lines.append(f'  gate            {"passed" if self.gate["passed"] else "BROKEN"}: {checks}')
    return '\n'.join(lines)


def _value(value: Optional[float]) -> str:
  return '–' if value is None else f'{value:.4g}'


# What the launcher's `pipelines.run.run` is: flags in, the run's summary out (None when it did not wait).
# The launcher hands it to what runs the job more than once (`--watch`, `--estimate`).
RunJob = Callable[[Sequence[str]], Optional[RunSummary]]
