"""The job's last steps: count and reconcile, write the summary and report, publish.

Production launches (a Flex Template, a schedule) do not wait for the job, so
everything promised after the writes happens inside the job itself, on any
runner: `CountRows` counts rows read, predicted and rejected as PCollections
(the Beam metrics feed the live progress line and the Dataflow page, not the
decision to publish), and `FinishRun` runs once, after every write, because it
takes the writes' results as side inputs. It publishes nothing and fails the
job when the counts do not reconcile.

Everything that may fail (the report, the loads) comes before what commits:
each output's publish (`transforms.destination.Destination.publish`: a table's
load or MERGE, a database's transaction), then the pointer. Publishing is
idempotent, so a runner may retry it: a retry after a table's rows landed
finds them and swaps in the same rows again (`transforms.bigquery.publish`),
and once the pointer names this attempt (`transforms.files.publish`) a retry
only finishes showing its files and the clean-up.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime
import logging
import math
from typing import Any, Iterable, Optional

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from pipelines.graph import gate
from transforms.files import scored_keys as incremental
from pipelines.graph.manifest import MANIFEST_FILE
from pipelines.graph.plan import JobPlan
from transforms.files import publish
from pipelines.record.report import REPORT_FILE, write_report
from pipelines.record.report_sections import challenger_summary, report_sections
from pipelines.record.summary import RunSummary
from transforms.rows import dead_letters as dl
from transforms.rows import ranking
from transforms.destination import TableCounts

# The run's input and prediction statistics, beside the report; the report is drawn from it.
PROFILE_FILE = 'profile.json'
# With --challenger: how the two models' predictions compare (models.challenger), beside the profile.
COMPARISON_FILE = 'comparison.json'


class NotReconciledError(RuntimeError):
  """Rows went missing between reading and writing; the run publishes nothing."""


class TooManyRejectedError(RuntimeError):
  """More rows were rejected than the run allows (`--max_rejected_fraction`); it publishes nothing."""


# Reasons a failure message names, the most frequent first.
_TOP_REASONS = 3


def _reasons(counts: dict[str, int]) -> str:
  found = sorted(((k[len('rejected_'):], n) for k, n in counts.items()
                  if k.startswith('rejected_') and n and k[len('rejected_'):] not in dl.CHOSEN),
                 key=lambda kv: (-kv[1], kv[0]))
  named = ', '.join(f'{code} {n:,}' for code, n in found[:_TOP_REASONS])
  return named + (f' and {len(found) - _TOP_REASONS} more' if len(found) > _TOP_REASONS else '')


def check_rejected(run_id: str, counts: dict[str, int], max_fraction: float, *, dead_letters: str = '') -> None:
  """Fails a run that rejected more than `max_fraction` of the rows it read.

  Every rejection counts (`transforms.rows.dead_letters.guarded`), rows the output refused included,
  except those a flag chose (a superseded duplicate). One line says the share, the top reasons and
  the flag that allows more.
  """
  rejected, asked = dl.guarded(counts)
  if not asked or rejected <= max_fraction * asked:
    return
  share = rejected / asked
  enough = math.ceil(share * 1000) / 1000
  where = f' in {dead_letters}' if dead_letters else ''
  raise TooManyRejectedError(
      f'run {run_id} rejected {share:.2%} of its rows ({rejected:,} of {asked:,}), more than '
      f'--max_rejected_fraction={max_fraction:g} allows; top reasons: {_reasons(counts)}. Nothing was published; '
      f'the dead letters{where} say why each row was rejected. To publish a run like this, pass '
      f'--max_rejected_fraction={enough:g} or more')


class SumCounts(beam.CombineFn):
  """Adds up dicts of counts; an empty input gives {} (a run with no rows)."""

  def create_accumulator(self) -> collections.Counter:
    return collections.Counter()

  def add_input(self, acc: collections.Counter, counts: dict[str, int]) -> collections.Counter:
    acc.update(counts)
    return acc

  def merge_accumulators(self, accumulators: Iterable[collections.Counter]) -> collections.Counter:
    total = collections.Counter()
    for acc in accumulators:
      total.update(acc)
    return total

  def extract_output(self, acc: collections.Counter) -> dict[str, int]:
    return dict(acc)


def _rejections(letters: pa.RecordBatch) -> dict[str, int]:
  counts = pc.value_counts(letters.column('reason_code'))
  by_reason = {f'rejected_{code}': n for code, n in zip(counts.field('values').to_pylist(),
                                                        counts.field('counts').to_pylist())}
  return {'rows_rejected': letters.num_rows, **by_reason}


def _refused(letters: pa.RecordBatch) -> dict[str, int]:
  """Rows the output refused: predicted, then rejected, so they leave the predicted count for the
  rejected one (read = predicted + rejected holds) and count in every guard."""
  return {**_rejections(letters), 'rows_predicted': -letters.num_rows, 'rows_not_written': letters.num_rows}


class CountRows(beam.PTransform):
  """Counts the run's rows from its PCollections into one dict.

  Takes `{'read': batches read, 'unreadable': dead letters of the read step,
  'predicted': prediction batches, 'rejected': every dead letter before the write, 'files':
  input files read, 'not_written': the rows the output refused}` (the last ones may be absent)
  and outputs one dict with rows_read, rows_predicted (the rows written), rows_rejected (refused
  rows included), rejected_<reason_code>, rows_not_written, files_read, and with `top_k` (a ranking)
  short_rankings: predicted rows holding fewer than `top_k` items.
  """

  def __init__(self, top_k: Optional[int] = None):
    super().__init__()
    self._top_k = top_k

  def expand(self, pcolls: dict[str, beam.PCollection]) -> beam.PCollection[dict[str, int]]:
    top_k = self._top_k
    tally = {
        'read': lambda b: {'rows_read': b.num_rows},
        'unreadable': lambda b: {'rows_read': b.num_rows},
        'predicted': (lambda b: {'rows_predicted': b.num_rows, 'short_rankings': ranking.short_rankings(b, top_k)})
        if top_k else (lambda b: {'rows_predicted': b.num_rows}),
        'rejected': _rejections,
        'files': lambda unused_path: {'files_read': 1},
        'not_written': _refused,
        'skipped': lambda n: {'rows_skipped': n},  # --only_unscored: rows scored by an earlier run
        'skipped_by_bigquery': lambda n: {'rows_read': n, 'rows_skipped': n},  # left out by BigQuery's anti-join
    }
    counts = [pcoll | f'Tally{name.title().replace("_", "")}' >> beam.Map(tally[name])
              for name, pcoll in pcolls.items()]
    return counts | 'AllTallies' >> beam.Flatten() | 'Sum' >> beam.CombineGlobally(SumCounts())


def _registry(plan: JobPlan) -> dict[str, str]:
  """The Model Registry version the bundle came from, for the summary's model."""
  found = plan.bundle.metadata.get('registry') or {}
  return {k: found[k] for k in ('resource', 'version_id') if k in found}


def _summary(plan: JobPlan, counts: dict[str, int], *, rows_written: Optional[int], report: bool,
             comparison: Optional[dict] = None, verdict: Optional[dict] = None,
             digest: Optional[dict] = None, keys_kept: Optional[int] = None,
             duplicates: Optional[dict] = None) -> RunSummary:
  now = datetime.datetime.now(datetime.timezone.utc)

  return RunSummary(
      run_id=plan.run_id,
      model={'name': plan.bundle.name, 'version': plan.bundle.version, 'path': plan.bundle.path,
             **_registry(plan)},
      input=plan.source, output=plan.predictions.where, dead_letter=plan.dead_letters.where,
      runner=plan.runner, state='DONE', started_at=plan.started_at.isoformat(timespec='seconds'),
      wall_seconds=round((now - plan.started_at).total_seconds(), 3),
      rows_read=counts.get('rows_read', 0), rows_predicted=counts.get('rows_predicted', 0),
      rows_rejected=counts.get('rows_rejected', 0), rows_skipped=counts.get('rows_skipped', 0),
      rejected_by_reason={k[len('rejected_'):]: n for k, n in sorted(counts.items()) if k.startswith('rejected_')},
      files_read=counts.get('files_read', 0), rows_written=rows_written,
      output_link=plan.predictions.link,
      attempt=plan.attempt, finished_at=now.isoformat(timespec='seconds'),
      input_snapshot=plan.input.snapshot_time,
      report=FileSystems.join(plan.record_folder, REPORT_FILE) if report else None,
      gate=gate.summary_of(verdict), challenger=challenger_summary(plan, comparison),
      manifest=FileSystems.join(plan.record_folder, MANIFEST_FILE) if plan.manifest is not None else None,
      predictions_digest=digest,
      rows_not_written=counts.get('rows_not_written'), keys_kept=keys_kept,
      duplicate_keys=duplicates,
      short_rankings=({'rows': counts.get('short_rankings', 0), 'top_k': plan.columns.top_k}
                      if plan.columns.outputs.kind == 'ranking' else None))


def _publish(plan: JobPlan, prediction_files: list[Any], dead_letter_files: list[Any],
             counts: dict[str, int]) -> Any:
  """Publishes both outputs; returns the run's rows in the predictions' table (None for files).

  Outputs publish side by side (each table waits on its own jobs), except one whose publish makes rows
  live at once with no undo (a serving database): it goes last, so a failure elsewhere leaves it as it was.
  The dead letters hold the rejected rows, the rows an output refused among them.
  """
  writes = {'predictions': (plan.predictions, prediction_files, counts.get('rows_predicted', 0)),
            'dead_letters': (plan.dead_letters, dead_letter_files, counts.get('rows_rejected', 0))}
  logging.info('run %s: publishing to %s', plan.run_id, ' and '.join(d.where for d, _, _ in writes.values()))
  published = {}
  for last in (False, True):
    now = {name: write for name, write in writes.items() if write[0].publishes_last == last}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
      published.update(zip(now, pool.map(lambda write: write[0].publish(write[1], write[2]), now.values())))
  return published['predictions']


class _FinishFn(beam.DoFn):
  """Publishes the run once every write is done: see the module docstring."""

  def __init__(self, plan: JobPlan):
    self._plan = plan

  def process(self, counts: dict[str, int], profile: Optional[dict], prediction_files: list[Any],
              dead_letter_files: list[Any], comparison: Optional[dict] = None, digest: Optional[dict] = None,
              duplicates: Optional[dict] = None):
    plan = self._plan
    current = publish.read_pointer(plan.records, plan.run_id)
    if current is not None and current.get('attempt') == plan.attempt:  # a retry after publishing
      incremental.record(plan)
      self._clean_up()
      yield current
      return
    read, predicted, rejected, skipped = (counts.get(k, 0) for k in ('rows_read', 'rows_predicted', 'rows_rejected',
                                                                      'rows_skipped'))
    if read != predicted + rejected + skipped:
      outcome = (f'predicted {predicted:,}, rejected {rejected:,} and skipped {skipped:,}' if skipped
                 else f'predicted {predicted:,} and rejected {rejected:,}')
      raise NotReconciledError(
          f'run {plan.run_id} did not reconcile: read {read:,} rows but {outcome} '
          f'({read - predicted - rejected - skipped:+,} unaccounted for); nothing was published')
    check_rejected(plan.run_id, counts, plan.max_rejected_fraction, dead_letters=plan.dead_letters.where)
    verdict = gate.evaluate(plan.gate, gate.measure(
        counts, profile, comparison, plan.bundle.training_statistics)) if plan.gate else None
    if comparison is not None:
      publish.write_json(FileSystems.join(plan.record_folder, COMPARISON_FILE), comparison)
    if plan.manifest is not None:
      publish.write_json(FileSystems.join(plan.record_folder, MANIFEST_FILE), {**plan.manifest, 'predictions': digest})
    if profile is not None:  # before the tables: once their rows are swapped in, nothing may fail
      self._write_profile_and_report(counts, profile, comparison, verdict, duplicates)
    if verdict is not None:
      gate.enforce(plan, verdict)  # a breach raises: nothing is published, the staged files stay
    in_table = _publish(plan, prediction_files, dead_letter_files, counts)
    if isinstance(in_table, TableCounts):  # counted in the table itself, with the keys an upsert left
      in_table, keys_kept = in_table.rows, in_table.kept_keys
    else:
      keys_kept = None
    summary = _summary(plan, counts, rows_written=in_table, report=plan.report, comparison=comparison,
                       verdict=verdict, digest=digest, keys_kept=keys_kept,
                       duplicates=duplicates)
    published = summary.to_dict()
    for base in plan.bases:  # the records' pointer last: status reads it
      if not publish.switch_pointer(base, plan.run_id, published):
        return
    incremental.record(plan)  # only now are this run's keys scored
    self._clean_up()
    logging.info('run %s: published attempt %s', plan.run_id, plan.attempt)
    yield published

  def _write_profile_and_report(self, counts: dict[str, int], profile: dict[str, Any], comparison: Optional[dict],
                                verdict: Optional[dict], duplicates: Optional[dict]) -> None:
    plan = self._plan
    publish.write_json(FileSystems.join(plan.record_folder, PROFILE_FILE), profile)
    if plan.report:
      summary = _summary(plan, counts, rows_written=None, report=True, comparison=comparison, verdict=verdict,
                         duplicates=duplicates)
      write_report(plan.record_folder, summary, profile, training_statistics=plan.bundle.training_statistics,
                   model=plan.bundle.metadata, sections=report_sections(comparison, verdict),
                   outputs=plan.bundle.outputs.describe())

  def _clean_up(self) -> None:
    """Shows the published files (`Destination.show`), then deletes older attempts' folders, and what this
    attempt and older ones staged for each output; the published output is untouched."""
    plan = self._plan
    for destination in plan.outputs:
      destination.show()
    for base in plan.bases:
      publish.remove_older_attempts(base, plan.run_id, plan.attempt)
    for destination in plan.outputs:
      destination.clean_up()


@dataclasses.dataclass
class FinishRun(beam.PTransform):
  """The job's last step: reconcile, summarise, report and publish, after every write.

  Applied to the run's counts (one dict, `CountRows`); outputs one dict, the
  published summary. The writes' results are side inputs, so this step starts
  only once both writes are complete. The plan says whether to report
  (`report`), when too many rows were rejected (`max_rejected_fraction`,
  `check_rejected`) and what the gate checks (`gate`).

  Args:
    plan: the resolved job.
    prediction_files: the predictions write's result (file names, rows COPYed, or a stream's refused rows).
    dead_letter_files: the dead letters write's result.
    profile: one dict (`ProfileRun`) as a side input with its default, or None for no profile and no report.
    comparison: one dict (models.challenger.CompareModels), with --challenger.
    digest: one dict (manifest.DigestPredictions) as a side input with its default.
    duplicates: one dict (`transforms.rows.duplicate_keys.describe`), with --key_column.
  """
  plan: JobPlan
  prediction_files: beam.PCollection
  dead_letter_files: beam.PCollection
  profile: Optional[beam.pvalue.AsSingleton] = None
  comparison: Optional[beam.PCollection] = None
  digest: Optional[beam.pvalue.AsSingleton] = None
  duplicates: Optional[beam.PCollection] = None

  def __post_init__(self):
    super().__init__()

  def expand(self, counts: beam.PCollection[dict[str, int]]) -> beam.PCollection[dict[str, Any]]:
    plan = dataclasses.replace(self.plan, report=self.plan.report and self.profile is not None)
    return counts | 'Publish' >> beam.ParDo(
        _FinishFn(plan),
        profile=self.profile,
        comparison=beam.pvalue.AsSingleton(self.comparison) if self.comparison is not None else None,
        digest=self.digest,
        duplicates=beam.pvalue.AsSingleton(self.duplicates) if self.duplicates is not None else None,
        prediction_files=beam.pvalue.AsList(self.prediction_files),
        dead_letter_files=beam.pvalue.AsList(self.dead_letter_files))
