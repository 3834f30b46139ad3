"""The reproducibility manifest: exactly what a run read and ran, so it can be replayed.

Built on the launcher (it reads the bundle and hashes the input files), carried
in the plan, and written by the job's final step beside the summary
(`ATTEMPT/manifest.json`, and as `manifest` in `run_summary.json`):

- the model bundle's content digest (and the challenger's): SHA-256 over every
  file's relative path and SHA-256;
- the exact inputs: each file with its size and checksum (SHA-256 of a local
  file; the object's CRC32C on gs://, which Cloud Storage keeps), or the table
  with the snapshot time its read session pinned (and the filter or query);
- the code version (`git describe` of a checkout, else the package version)
  and the versions of the libraries that compute predictions;
- every option of ours, and the Beam options that differ from their defaults;
- a digest of the predictions (`PredictionDigestFn`), for replay to compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import os
import platform
import re
import subprocess
from typing import Any, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from models.handlers.base import available_cores, model_threads
from pipelines import ROOT
from pipelines.options import BatchInferenceOptions
from transforms.files.read import sha256_of

MANIFEST_FILE = 'manifest.json'
PACKAGE = 'beam-batch-inference'
LIBRARIES = ('apache-beam', 'tensorflow', 'pyarrow', 'numpy', 'google-cloud-bigquery',
             'google-cloud-bigquery-storage')
# Scores enter the predictions' digest rounded to this many decimals, so a replay whose model
# calls group rows differently (float sums in another order) still matches.
DIGEST_DECIMALS = 4


def bundle_digest(path: str) -> dict[str, Any]:
  """SHA-256 over the bundle's files (relative path and content), in path order."""
  base = path.rstrip('/') + '/'
  files = sorted(m.path for m in FileSystems.match([base + '**'])[0].metadata_list)
  digest = hashlib.sha256()
  for f in files:
    digest.update(f[len(base):].encode('utf-8') + b'\0' + sha256_of(f).encode('ascii') + b'\n')
  return {'path': path, 'sha256': digest.hexdigest(), 'files': len(files)}


def code_version() -> dict[str, Optional[str]]:
  """`git describe` of this checkout when it is one, and the installed package version."""
  described = None
  if os.path.isdir(os.path.join(ROOT, '.git')) or os.path.isfile(os.path.join(ROOT, '.git')):
    try:
      described = subprocess.run(['git', 'describe', '--always', '--dirty', '--tags'], cwd=ROOT, capture_output=True,
                                 text=True, timeout=10, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
      described = None
  try:
    version = importlib.metadata.version(PACKAGE)
  except importlib.metadata.PackageNotFoundError:
    version = None
  return {'git': described, 'package': version}


def library_versions() -> dict[str, Optional[str]]:
  versions: dict[str, Optional[str]] = {'python': platform.python_version()}
  for name in LIBRARIES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def _jsonable(value: Any) -> Any:
  if isinstance(value, (str, int, float, bool)) or value is None:
    return value
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  return str(value)


# Options whose values are credentials (Beam's --s3_secret_access_key, --azure_connection_string, ...):
# the manifest names them but never holds their values; a replay takes them from its own flags.
_CREDENTIAL = re.compile(r'secret|password|token|credential|access_key|private_key|connection_string', re.I)
REDACTED = '<redacted>'


def _kept(name: str, value: Any) -> Any:
  return REDACTED if value is not None and _CREDENTIAL.search(name) else _jsonable(value)


def options_of(options: PipelineOptions) -> tuple[dict[str, Any], dict[str, Any]]:
  """Every option of ours (defaults included), and the other options set away from their defaults;
  credentials are named, not kept."""
  ours = options.view_as(BatchInferenceOptions).get_all_options(drop_default=False)
  parser = argparse.ArgumentParser()
  BatchInferenceOptions._add_argparse_args(parser)  # pylint: disable=protected-access
  names = {a.dest for a in parser._actions}  # pylint: disable=protected-access
  everything = options.get_all_options(drop_default=True, retain_unknown_options=True)
  return ({k: _kept(k, ours.get(k)) for k in sorted(names) if k != 'help'},
          {k: _kept(k, v) for k, v in sorted(everything.items()) if k not in names})


def build(options: PipelineOptions, plan) -> dict[str, Any]:
  """The manifest of a resolved plan (reads the bundle and the input files: launcher only)."""
  ours, beam_options = options_of(options)
  return {
      'run_id': plan.run_id, 'attempt': plan.attempt,
      'model': {**bundle_digest(plan.bundle.path), 'name': plan.bundle.name, 'version': plan.bundle.version},
      'challenger': ({**bundle_digest(plan.challenger.path), 'name': plan.challenger.name,
                      'version': plan.challenger.version} if plan.challenger else None),
      'input': plan.input.describe(), 'code': code_version(), 'libraries': library_versions(),
      'model_threads': model_threads_choice(plan.model),
      'options': ours, 'beam_options': beam_options,
  }


def model_threads_choice(settings) -> dict[str, Any]:
  """The model's thread pool as chosen: --model_threads, or the rule the workers size it by (and the number
  that gives where the job runs on this machine's cores)."""
  if settings.threads:
    return {'threads': settings.threads, 'from': '--model_threads'}
  processes = settings.worker_processes
  return {'threads': model_threads(None, processes) if processes else 1,
          'from': f'the cores each worker process owns ({available_cores()} cores here, {processes} process(es))'
          if processes else 'the cores each worker process owns (one process per core)'}


class PredictionDigestFn(beam.CombineFn):
  """An order-free digest of the predictions: the sum (mod 2^64) of a hash of each row's key,
  class and scores (rounded to DIGEST_DECIMALS), and the row count.

  Rows are hashed with numpy over the Arrow buffers (`hash_column`), one pass per column per batch:
  no Python object per row.
  """

  def __init__(self, score_names: list[str]):
    self._score_names = score_names

  def create_accumulator(self) -> tuple[int, int]:
    return 0, 0

  def add_input(self, acc: tuple[int, int], batch: pa.RecordBatch) -> tuple[int, int]:
    total, rows = acc
    return (total + batch_digest(batch, self._score_names)) % (1 << 64), rows + batch.num_rows

  def merge_accumulators(self, accumulators):
    total, rows = 0, 0
    for t, r in accumulators:
      total, rows = (total + t) % (1 << 64), rows + r
    return total, rows

  def extract_output(self, acc: tuple[int, int]) -> dict[str, Any]:
    return {'sum64': f'{acc[0]:016x}', 'rows': acc[1], 'decimals': DIGEST_DECIMALS}


_U64 = np.uint64


def _mix(h: np.ndarray) -> np.ndarray:
  """splitmix64's finaliser: spreads every input bit over the output."""
  with np.errstate(over='ignore'):
    h = (h ^ (h >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> _U64(27))) * _U64(0x94D049BB133111EB)
    return h ^ (h >> _U64(31))


def hash_column(column: pa.Array, *, few_values: bool = False) -> np.ndarray:
  """A 64-bit hash per value: strings from their UTF-8 bytes, numbers from their float64 bits.

  With `few_values` (a class column), each distinct value is hashed once and the hashes are
  gathered by row, which gives the same hashes as hashing every row's bytes.
  """
  if few_values:
    if pa.types.is_dictionary(column.type):  # re-encoded below, so that a missing value is an entry too
      column = column.cast(column.type.value_type)
    encoded = pc.dictionary_encode(column, null_encoding='encode')
    return hash_column(encoded.dictionary)[encoded.indices.to_numpy(zero_copy_only=False)]
  if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
    values = np.round(pc.fill_null(column.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False),
                      DIGEST_DECIMALS) + 0.0  # -0.0 and 0.0 alike
    return _mix(values.view(np.uint64).copy())
  strings = pc.fill_null(column.cast(pa.large_string()), '')
  strings = pa.concat_arrays([strings]) if strings.offset else strings
  n = len(strings)
  offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64, count=n + 1)
  data = strings.buffers()[2]
  data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
  lengths = np.diff(offsets)
  h = lengths.astype(np.uint64) + _U64(0x9E3779B97F4A7C15)  # the empty string does not hash to 0
  total = int(offsets[-1] - offsets[0])
  if total:
    with np.errstate(over='ignore'):
      powers = np.cumprod(np.full(int(lengths.max()), 1099511628211, dtype=np.uint64))  # FNV prime, wrapping
      starts = offsets[:-1] - offsets[0]
      position = np.arange(total, dtype=np.int64)
      position -= np.repeat(starts, lengths)
      contributions = powers[position]
      contributions *= data[offsets[0]:offsets[-1]].astype(np.uint64) + _U64(1)
      nonempty = lengths > 0
      h[nonempty] += np.add.reduceat(contributions, starts[nonempty])
  return _mix(h)


def batch_digest(batch: pa.RecordBatch, score_names: list[str]) -> int:
  """The sum mod 2^64 of the rows' hashes (key, class, scores)."""
  names = [batch.schema.names[0]] + (['predicted_class'] if 'predicted_class' in batch.schema.names else [])
  h = np.zeros(batch.num_rows, dtype=np.uint64)
  with np.errstate(over='ignore'):
    for name in names + list(score_names):
      h = _mix(h * _U64(31) + hash_column(batch.column(name), few_values=name == 'predicted_class'))
    return int(h.sum(dtype=np.uint64))


@dataclasses.dataclass
class DigestPredictions(beam.PTransform):
  """One dict (`PredictionDigestFn`), or nothing for a run that predicted nothing: read it as a
  side input with `empty()` as its default (the combine then needs none of Beam's default steps)."""

  score_names: list[str]

  def __post_init__(self):
    super().__init__()

  def empty(self) -> dict[str, Any]:
    """The digest of no predictions."""
    fn = PredictionDigestFn(self.score_names)
    return fn.extract_output(fn.create_accumulator())

  def expand(self, predictions):
    return predictions | 'Combine' >> beam.CombineGlobally(PredictionDigestFn(self.score_names)).without_defaults()
