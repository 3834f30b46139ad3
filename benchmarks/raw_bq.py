"""The `raw-bq` variant: a BigQuery table through the model into a BigQuery table, with no Beam.

    python -m benchmarks.emulated benchmarks.raw_bq --input bq://P.D.T --model BUNDLE \
        --output bq://P.D.OUT --temp_location gs://BUCKET/tmp --project P

The practical limit of table to table here: one Storage Read session in
Arrow, its streams read one after another and each response decoded with
`pa.ipc.read_record_batch`, then exactly what `raw` does (benchmarks/raw.py:
large batches, `FeatureSpec.transform`, the SavedModel signature), predictions
written as one Parquet file to Cloud Storage and loaded by one load job into a
new table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Iterator

import pyarrow as pa
from google.cloud import bigquery, bigquery_storage_v1, storage

from benchmarks.raw import BATCH_ROWS, predict_batches
from models.bundle import ModelBundle
from models.handlers.tensorflow import SavedModelPredictor
from models.inference import PredictionColumns
from transforms.bigquery.tables import TableRef, table_schema
from transforms.bigquery.read import rechunk

_TYPES = bigquery_storage_v1.types


def read_table(table: TableRef, columns: list[str], project: str) -> Iterator[pa.RecordBatch]:
  """Every row of `table`'s `columns`: one Arrow read session, its streams in turn."""
  client = bigquery_storage_v1.BigQueryReadClient()
  session = client.create_read_session(
      parent=f'projects/{project}', max_stream_count=0,
      read_session=_TYPES.ReadSession(table=f'projects/{table.project}/datasets/{table.dataset}/tables/{table.table}',
                                      data_format=_TYPES.DataFormat.ARROW,
                                      read_options=_TYPES.ReadSession.TableReadOptions(selected_fields=columns)))
  schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
  for stream in session.streams:
    for response in client.read_rows(stream.name):
      if response.row_count:
        yield pa.ipc.read_record_batch(pa.py_buffer(response.arrow_record_batch.serialized_record_batch), schema)


def load_parquet(path: str, temp_location: str, table: TableRef, schema: pa.Schema, project: str) -> None:
  """Uploads one Parquet file under `temp_location` and loads it into a new `table` with one load job.

  The schema is explicit, in the file's column order: the emulator infers none
  from Parquet and loads columns by position.
  """
  bucket, _, prefix = temp_location[len('gs://'):].partition('/')
  name = f'{prefix.rstrip("/")}/raw-bq/predictions.parquet'.lstrip('/')
  storage.Client(project=project).bucket(bucket).blob(name).upload_from_filename(path)
  fields = [bigquery.SchemaField.from_api_repr(f) for f in table_schema(schema)['fields']]
  config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET, schema=fields,
                                  write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE)
  bigquery.Client(project=project).load_table_from_uri(f'gs://{bucket}/{name}', table.dotted,
                                                       job_config=config).result()


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', required=True, help='bq://PROJECT.DATASET.TABLE')
  parser.add_argument('--model', required=True)
  parser.add_argument('--output', required=True, help='bq://PROJECT.DATASET.TABLE, a table that does not exist yet')
  parser.add_argument('--temp_location', required=True, help='gs:// folder for the Parquet file to load')
  parser.add_argument('--project', required=True)
  parser.add_argument('--batch_rows', type=int, default=BATCH_ROWS)
  args = parser.parse_args(argv)

  bundle = ModelBundle.load(args.model)
  predictor = SavedModelPredictor(bundle.saved_model_path, bundle.outputs.signature, bundle.outputs.output_key)
  columns = PredictionColumns(bundle.outputs, 'id', (), bundle.name, bundle.version, 'raw-bq')
  batches = rechunk(read_table(TableRef.parse(args.input), ['id'] + bundle.features.columns, args.project),
                    args.batch_rows)
  with tempfile.TemporaryDirectory() as local:
    path = os.path.join(local, 'predictions.parquet')
    counts = predict_batches(batches, path, bundle.features, predictor.predict, columns)
    load_parquet(path, args.temp_location, TableRef.parse(args.output), columns.schema, args.project)
  print(json.dumps(counts))


if __name__ == '__main__':
  main()
