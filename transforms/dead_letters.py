"""Rejected rows: one schema for every stage, built a batch at a time.

A dead letter keeps the original record (as JSON text, so any input schema
fits one table), where it came from, and why it was rejected: a stable
`reason_code` to count and filter on, and a `reason` a person can act on.
"""

from __future__ import annotations

import json
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

# Columns every source adds so a row can be traced back to its file and position.
SOURCE = '__source'
ROW = '__row'
# The row key, as text, once validation has chosen or generated it.
KEY = '__key'
META_COLUMNS = (SOURCE, ROW, KEY)

# Reason codes, one Beam counter each (`rejected_<code>`).
UNPARSABLE = 'unparsable'
MISSING_KEY = 'missing_key'
MISSING_VALUE = 'missing_value'
INVALID_TYPE = 'invalid_type'
NON_FINITE = 'non_finite'
MODEL_ERROR = 'model_error'
REASON_CODES = (UNPARSABLE, MISSING_KEY, MISSING_VALUE, INVALID_TYPE, NON_FINITE, MODEL_ERROR)

SCHEMA = pa.schema([
    pa.field('key', pa.string()),
    pa.field('source', pa.string()),
    pa.field('row', pa.int64()),
    pa.field('stage', pa.string()),
    pa.field('reason_code', pa.string()),
    pa.field('reason', pa.string()),
    pa.field('record', pa.string()),
])


def _record_json(row: dict) -> str:
  return json.dumps({k: v for k, v in row.items() if k not in META_COLUMNS}, default=str, ensure_ascii=False)


def from_batch(batch: pa.RecordBatch, mask: np.ndarray, *, stage: str, codes: Sequence[str],
               reasons: Sequence[str]) -> pa.RecordBatch:
  """Dead letters for the rows of `batch` selected by `mask`, with one code and reason each."""
  rejected = batch.filter(pa.array(mask))
  rows = rejected.to_pylist()
  names = rejected.schema.names
  keys = rejected.column(KEY).cast(pa.string()) if KEY in names else pa.nulls(len(rows), pa.string())
  return pa.RecordBatch.from_arrays([
      keys,
      rejected.column(SOURCE).cast(pa.string()) if SOURCE in names else pa.nulls(len(rows), pa.string()),
      rejected.column(ROW).cast(pa.int64()) if ROW in names else pa.nulls(len(rows), pa.int64()),
      pa.array([stage] * len(rows), pa.string()),
      pa.array(list(codes), pa.string()),
      pa.array(list(reasons), pa.string()),
      pa.array([_record_json(r) for r in rows], pa.string()),
  ], schema=SCHEMA)


def from_records(records: Sequence[str], *, source: str, rows: Sequence[Optional[int]], code: str,
                 reasons: Sequence[str], stage: str = 'read',
                 keys: Optional[Sequence[Optional[str]]] = None) -> pa.RecordBatch:
  """Dead letters for raw records that never became a row (unparsable lines, corrupt files), with
  their keys where those could still be read."""
  n = len(records)
  return pa.RecordBatch.from_arrays([
      pa.array(list(keys), pa.string()) if keys is not None else pa.nulls(n, pa.string()),
      pa.array([source] * n, pa.string()),
      pa.array(list(rows), pa.int64()),
      pa.array([stage] * n, pa.string()),
      pa.array([code] * n, pa.string()),
      pa.array(list(reasons), pa.string()),
      pa.array(list(records), pa.string()),
  ], schema=SCHEMA)
