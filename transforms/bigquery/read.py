"""A BigQuery table as RecordBatches, read column by column with the Storage Read API.

The launcher creates one read session (`create_read_session`): the server fixes
the columns, the row restriction and the table snapshot, and splits the rows
into streams. Workers read the streams in parallel (`ReadBigQueryStreams`); each
response is an Arrow record batch that is decoded as is, cast to the job's
schema and re-chunked, so no row or cell ever becomes a Python object and a
table gives the same batches as a Parquet file of the same data.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Iterable, Iterator, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
from google.api_core import exceptions
from google.cloud import bigquery_storage_v1

from transforms.rows import coders as _coders  # noqa: F401  (registers the coders of the declared element types)
from transforms.rows import counters
from transforms.rows import dead_letters as dl
from transforms.bigquery.tables import TableRef
from transforms.rows.dead_letters import DEAD_LETTERS

_STORAGE_TYPES = bigquery_storage_v1.types
# What the server answers for a session or stream that has expired (FAILED_PRECONDITION,
# "session expired at ...") or that it does not know (NOT_FOUND).
_GONE = (exceptions.FailedPrecondition, exceptions.NotFound)


@dataclasses.dataclass(frozen=True)
class ReadSession:
  """A Storage Read session created once at launch; the workers read its streams.

  Attributes:
    name: the session's resource name ('' for an offline placeholder).
    table: the table read.
    streams: the streams' resource names; together they hold every row once.
    schema: the Arrow schema of the batches to yield (see `transforms.bigquery.tables.arrow_schema`).
    snapshot_time: ISO-8601 UTC time of the table snapshot the session reads.
    row_restriction: the SQL predicate the server applies, or None.
    server_schema: the session's Arrow schema as the server serialized it; the
      streams' record batches carry no schema of their own.
  """
  name: str
  table: TableRef
  streams: tuple[str, ...]
  schema: pa.Schema
  snapshot_time: Optional[str]
  row_restriction: Optional[str] = None
  server_schema: bytes = b''


def _table_path(table: TableRef) -> str:
  return f'projects/{table.project}/datasets/{table.dataset}/tables/{table.table}'


def create_read_session(table: TableRef, schema: pa.Schema, *, project: str, row_restriction: Optional[str] = None,
                        max_streams: int = 0, snapshot_time: Optional[datetime.datetime] = None) -> ReadSession:
  """Creates the job's one read session: the only call to BigQuery at launch.

  Pinning the snapshot time makes every stream, and a stream re-read after a
  failure, see the same rows however the table changes meanwhile.

  Args:
    table: the table to read.
    schema: the columns to read and the Arrow types to yield them as.
    project: the billing project, which runs the session.
    row_restriction: a SQL predicate the server applies, e.g. "region = 'EU'".
    max_streams: most streams to split the rows into; 0 lets the server decide.
    snapshot_time: the table snapshot to read; None is now (a naive time is UTC).

  Raises:
    ValueError: the table does not exist, lacks a column of `schema`, or refuses
      the row restriction.
  """
  when = snapshot_time or datetime.datetime.now(datetime.timezone.utc)
  when = when.replace(tzinfo=datetime.timezone.utc) if when.tzinfo is None else when.astimezone(datetime.timezone.utc)
  request = _STORAGE_TYPES.ReadSession(
      table=_table_path(table), data_format=_STORAGE_TYPES.DataFormat.ARROW,
      read_options=_STORAGE_TYPES.ReadSession.TableReadOptions(
          selected_fields=schema.names, row_restriction=row_restriction or '',
          # Compressed buffers: fewer bytes on the wire; pyarrow decodes them in read_record_batch.
          arrow_serialization_options=_STORAGE_TYPES.ArrowSerializationOptions(
              buffer_compression=_STORAGE_TYPES.ArrowSerializationOptions.CompressionCodec.LZ4_FRAME)),
      table_modifiers=_STORAGE_TYPES.ReadSession.TableModifiers(snapshot_time=when))
  client = bigquery_storage_v1.BigQueryReadClient()
  try:
    answer = client.create_read_session(parent=f'projects/{project}', read_session=request,
                                        max_stream_count=max_streams)
  except (exceptions.NotFound, exceptions.InvalidArgument) as e:
    raise _session_error(client, table, schema, row_restriction, project, e) from e
  return ReadSession(name=answer.name, table=table, streams=tuple(s.name for s in answer.streams), schema=schema,
                     snapshot_time=when.isoformat(timespec='microseconds'), row_restriction=row_restriction,
                     server_schema=bytes(answer.arrow_schema.serialized_schema))


def _session_error(client: bigquery_storage_v1.BigQueryReadClient, table: TableRef, schema: pa.Schema, row_restriction: Optional[str], project: str,
                   error: exceptions.GoogleAPICallError) -> ValueError:
  """Says which of table, columns or filter was wrong, asking the server once more.

  Servers word a refused session differently (the emulator answers NOT_FOUND
  for all three), so a bare session of the table tells them apart: it fails
  when the table is missing, and lists the table's columns otherwise.
  """
  detail = error.message.splitlines()[0] if error.message else type(error).__name__
  try:
    bare = client.create_read_session(parent=f'projects/{project}', max_stream_count=1, read_session=(
        _STORAGE_TYPES.ReadSession(table=_table_path(table), data_format=_STORAGE_TYPES.DataFormat.ARROW)))
  except exceptions.NotFound:
    return ValueError(f'{table} does not exist ({detail}); check the project, dataset and table names')
  columns = pa.ipc.read_schema(pa.py_buffer(bare.arrow_schema.serialized_schema)).names
  missing = [name for name in schema.names if name not in columns]
  if missing:
    return ValueError(f'{table} has no column {", ".join(missing)} (it has {", ".join(columns)}); '
                      'fix the column names the job reads, or read another table')
  return ValueError(f'BigQuery refused to read {table} with the row restriction {row_restriction!r}: {detail}; '
                    'fix the filter (a SQL predicate on the table\'s columns)')


def rechunk(batches: Iterable[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
  """Batches of exactly `size` rows (the last may be shorter), in order.

  Large batches are sliced without copying; only rows that straddle a
  boundary are copied, once, to join small batches together.
  """
  if size < 1:
    raise ValueError(f'batch size must be at least 1, not {size}')
  pending: list[pa.RecordBatch] = []
  count = 0
  for batch in batches:
    offset = 0
    while offset < batch.num_rows:
      take = min(size - count, batch.num_rows - offset)
      pending.append(batch.slice(offset, take))
      count += take
      offset += take
      if count == size:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)
        pending, count = [], 0
  if count:
    yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)


def _repeated(text: str, n: int) -> pa.Array:
  """`n` copies of `text` as a string array, built from buffers rather than from n Python strings."""
  data = text.encode()
  offsets = np.arange(n + 1, dtype=np.int32) * np.int32(len(data))
  return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))


class _ReadStreamFn(beam.DoFn):
  """Reads one stream of a session as RecordBatches of `batch_size` rows.

  Retries never duplicate rows. A bundle that fails is retried whole: the
  runner discards the failed attempt's outputs and the stream is read again
  from offset 0 (the session pins the snapshot, so it holds the same rows).
  Within one attempt, google-cloud-bigquery-storage's ReadRowsStream resumes a
  broken stream itself: on UNAVAILABLE, UNKNOWN, INTERNAL mentioning
  RST_STREAM, or RESOURCE_EXHAUSTED carrying a RetryInfo delay, it calls
  ReadRows again at its offset, the row count of the responses it already
  handed over, so the rows continue where they stopped (opening a call is also
  retried on UNAVAILABLE with backoff). Any other error fails the bundle; an
  expired or unknown session fails it with a ValueError that says to re-run.
  """

  def __init__(self, session: ReadSession, batch_size: int):
    self._session = session
    self._batch_size = batch_size
    self._rows_read = counters.counter('rows_read')

  def setup(self):
    self._client = bigquery_storage_v1.BigQueryReadClient()
    self._server_schema = pa.ipc.read_schema(pa.py_buffer(self._session.server_schema))
    self._sources = _repeated(str(self._session.table), self._batch_size)

  def teardown(self):
    if getattr(self, '_client', None) is not None:
      self._client.transport.close()

  def _decoded(self, stream: str) -> Iterator[pa.RecordBatch]:
    schema = self._session.schema
    for response in self._client.read_rows(stream, 0):
      if response.row_count:
        batch = pa.ipc.read_record_batch(
            pa.py_buffer(response.arrow_record_batch.serialized_record_batch), self._server_schema)
        # By name: a server may send the columns in the table's order, not the order asked for.
        yield pa.RecordBatch.from_arrays([batch.column(f.name).cast(f.type) for f in schema], schema=schema)

  def process(self, stream: str) -> Iterator[pa.RecordBatch]:
    try:
      for batch in rechunk(self._decoded(stream), self._batch_size):
        n = batch.num_rows
        self._rows_read.inc(n)
        yield pa.RecordBatch.from_arrays([*batch.columns, self._sources.slice(0, n), pa.nulls(n, pa.int64())],
                                         names=[*batch.schema.names, dl.SOURCE, dl.ROW])
    except _GONE as e:
      raise ValueError(f'cannot read {self._session.table}: BigQuery no longer knows stream {stream} '
                       f'({(e.message or type(e).__name__).splitlines()[0]}); '
                       'read sessions expire about 6 hours after the job launched: re-run the job to create '
                       'a new one') from e


@dataclasses.dataclass
class ReadBigQueryStreams(beam.PTransform):
  """Reads every stream of a read session as RecordBatches, streams in parallel.

  Returns a tagged result like `ReadRecordBatches`: `batches` holds batches of
  `batch_size` rows (the last of each stream may be shorter) with the
  session's schema plus the source columns; `dead_letters` stays empty,
  since typed table rows cannot be unparsable. A table has no row order, so
  rows carry no position: the job keys them by a key column. A retried
  bundle re-reads its streams from the start without duplicating rows (see
  `_ReadStreamFn`).

  Args:
    session: the session `create_read_session` made at launch.
    batch_size: rows per RecordBatch.
  """
  session: ReadSession
  batch_size: int = 8192

  def __post_init__(self):
    super().__init__()

  def expand(self, pbegin):
    return (pbegin
            | 'Streams' >> beam.Create(self.session.streams)
            | 'Spread' >> beam.Reshuffle()
            | 'Read' >> beam.ParDo(_ReadStreamFn(self.session, self.batch_size))
            .with_output_types(pa.RecordBatch).with_outputs(DEAD_LETTERS, main='batches'))
