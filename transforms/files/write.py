"""Write RecordBatches as Parquet, JSON Lines or CSV files, local or gs://.

Beam's file sinks write each shard to a temporary file and rename the set only
when the whole write succeeds, so a failed run leaves no half-written final
files. Each sink returns the PCollection of final file names.
"""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes

from transforms.rows import coders as _coders  # noqa: F401  (registers the coders of the declared element types)

OUTPUT_FORMATS = ('parquet', 'jsonl', 'csv')
_SUFFIX = {'parquet': '.parquet', 'jsonl': '.jsonl', 'csv': '.csv'}


def _jsonl(batch: pa.RecordBatch) -> str:
  return '\n'.join(json.dumps(row, default=str, ensure_ascii=False) for row in batch.to_pylist())


def _csv_body(batch: pa.RecordBatch) -> str:
  import pyarrow.csv as pcsv
  buffer = io.BytesIO()
  pcsv.write_csv(batch, buffer, write_options=pcsv.WriteOptions(include_header=False))
  return buffer.getvalue().decode('utf-8').rstrip('\n')


@dataclasses.dataclass
class _OpenParquet:
  writer: pq.ParquetWriter
  handle: Any


class _ParquetSink(filebasedsink.FileBasedSink):
  """Beam's file sink writing each RecordBatch as a Snappy Parquet row group.

  Unlike `WriteToParquetBatched` it takes RecordBatches as they are (no Table
  per batch) and dictionary-encodes only the columns it is told to: trying a
  dictionary on a column of unique keys or scores and falling back costs
  about half the write time.
  """

  def __init__(self, prefix: str, schema: pa.Schema, *, dictionary_columns: Optional[Sequence[str]], num_shards: int):
    super().__init__(prefix, coder=None, file_name_suffix='.parquet', num_shards=num_shards,
                     mime_type='application/x-parquet', compression_type=CompressionTypes.UNCOMPRESSED)
    self._schema = schema
    self._dictionary = True if dictionary_columns is None else list(dictionary_columns)

  def open(self, temp_path: str) -> _OpenParquet:
    handle = super().open(temp_path)
    return _OpenParquet(pq.ParquetWriter(handle, self._schema, compression='snappy', use_dictionary=self._dictionary),
                        handle)

  def write_record(self, file_handle: _OpenParquet, value: pa.RecordBatch) -> None:
    file_handle.writer.write_batch(value)

  def close(self, file_handle: _OpenParquet) -> None:
    file_handle.writer.close()  # writes the footer; the file itself is Beam's to close
    super().close(file_handle.handle)


class WriteBatches(beam.PTransform):
  """Writes RecordBatches of one schema as `{prefix}-SSSSS-of-NNNNN.{format}` files.

  Args:
    prefix: path prefix of the output files, local or gs://.
    schema: the schema every batch has (Parquet needs it up front; CSV uses its names as header).
    file_format: 'parquet', 'jsonl' or 'csv'.
    num_shards: number of files; 0 lets the runner choose.
    dictionary_columns: for Parquet, the columns worth dictionary-encoding
      (few distinct values); None encodes every column that way, pyarrow's default.
  """

  def __init__(self, prefix: str, schema: pa.Schema, *, file_format: str = 'parquet', num_shards: int = 0,
               dictionary_columns: Optional[Sequence[str]] = None):
    super().__init__()
    if file_format not in OUTPUT_FORMATS:
      raise ValueError(f'unknown output format {file_format!r}; expected one of {", ".join(OUTPUT_FORMATS)}')
    self._prefix = prefix
    self._schema = schema
    self._format = file_format
    self._num_shards = num_shards
    self._dictionary_columns = dictionary_columns

  def expand(self, batches):
    non_empty = batches | 'NonEmpty' >> beam.Filter(lambda b: b.num_rows > 0)
    suffix = _SUFFIX[self._format]
    if self._format == 'parquet':
      return non_empty | 'WriteParquet' >> beam.io.Write(_ParquetSink(
          self._prefix, self._schema, dictionary_columns=self._dictionary_columns, num_shards=self._num_shards))
    if self._format == 'jsonl':
      lines, header = non_empty | 'ToJson' >> beam.Map(_jsonl), None
    else:
      lines, header = non_empty | 'ToCsv' >> beam.Map(_csv_body), ','.join(self._schema.names)
    return lines | 'WriteText' >> beam.io.WriteToText(
        self._prefix, file_name_suffix=suffix, num_shards=self._num_shards, header=header)
