"""Write RecordBatches as Parquet, JSON Lines or CSV files, local or gs://.

Beam's file sinks write each shard to a temporary file and rename the set only
when the whole write succeeds, so a failed run leaves no half-written final
files. Each sink returns the PCollection of final file names.
"""

from __future__ import annotations

import io
import json
import apache_beam as beam
import pyarrow as pa
from transforms import coders as _coders  # noqa: F401  (registers the coders of the declared element types)

OUTPUT_FORMATS = ('parquet', 'jsonl', 'csv')
_SUFFIX = {'parquet': '.parquet', 'jsonl': '.jsonl', 'csv': '.csv'}


def _jsonl(batch: pa.RecordBatch) -> str:
  return '\n'.join(json.dumps(row, default=str, ensure_ascii=False) for row in batch.to_pylist())


def _csv_body(batch: pa.RecordBatch) -> str:
  import pyarrow.csv as pcsv
  buffer = io.BytesIO()
  pcsv.write_csv(batch, buffer, write_options=pcsv.WriteOptions(include_header=False))
  return buffer.getvalue().decode('utf-8').rstrip('\n')


class WriteBatches(beam.PTransform):
  """Writes RecordBatches of one schema as `{prefix}-SSSSS-of-NNNNN.{format}` files.

  Args:
    prefix: path prefix of the output files, local or gs://.
    schema: the schema every batch has (Parquet needs it up front; CSV uses its names as header).
    file_format: 'parquet', 'jsonl' or 'csv'.
    num_shards: number of files; 0 lets the runner choose.
  """

  def __init__(self, prefix: str, schema: pa.Schema, *, file_format: str = 'parquet', num_shards: int = 0):
    super().__init__()
    if file_format not in OUTPUT_FORMATS:
      raise ValueError(f'unknown output format {file_format!r}; expected one of {", ".join(OUTPUT_FORMATS)}')
    self._prefix = prefix
    self._schema = schema
    self._format = file_format
    self._num_shards = num_shards

  def expand(self, batches):
    non_empty = batches | 'NonEmpty' >> beam.Filter(lambda b: b.num_rows > 0)
    suffix = _SUFFIX[self._format]
    if self._format == 'parquet':
      return (non_empty
              | 'ToTable' >> beam.Map(lambda b: pa.Table.from_batches([b])).with_output_types(pa.Table)
              | 'WriteParquet' >> beam.io.WriteToParquetBatched(
                  self._prefix, self._schema, file_name_suffix=suffix, num_shards=self._num_shards,
                  codec='snappy'))
    if self._format == 'jsonl':
      lines, header = non_empty | 'ToJson' >> beam.Map(_jsonl), None
    else:
      lines, header = non_empty | 'ToCsv' >> beam.Map(_csv_body), ','.join(self._schema.names)
    return lines | 'WriteText' >> beam.io.WriteToText(
        self._prefix, file_name_suffix=suffix, num_shards=self._num_shards, header=header)
