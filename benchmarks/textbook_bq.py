"""The `beam-textbook-bq` variant: the per-element recipe of Beam's docs, BigQuery table to table.

    python -m benchmarks.emulated benchmarks.textbook_bq --input bq://P.D.T --model BUNDLE \
        --output bq://P.D.OUT --temp_location gs://BUCKET/tmp --project P

`ReadFromBigQuery(method=DIRECT_READ)` gives a dict per row; the rest is
`beam-textbook` (benchmarks/textbook.py: per-row preprocessing, `RunInference`
batching single examples, a dict per prediction); `WriteToBigQuery` with
FILE_LOADS writes JSON files under --temp_location and loads them.

Beam's direct read ends by deleting the datasets that carry its temporary-dataset
label; the emulator ignores that label filter and would delete every dataset,
so the benchmark names a dataset of its own (--temp_dataset), where Beam only
deletes its own temporary table. On BigQuery the flag is not needed.
"""

from __future__ import annotations

import argparse
import json

import apache_beam as beam
from apache_beam.io.gcp.bigquery import BigQueryDisposition, ReadFromBigQuery, WriteToBigQuery
from apache_beam.io.gcp.internal.clients.bigquery import DatasetReference
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from benchmarks.textbook import Preprocess, SignatureHandlerNumpy, postprocess
from models.bundle import ModelBundle
from models.inference import PredictionColumns
from transforms.bigquery.tables import TableRef, table_schema


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', required=True, help='bq://PROJECT.DATASET.TABLE')
  parser.add_argument('--model', required=True)
  parser.add_argument('--output', required=True, help='bq://PROJECT.DATASET.TABLE')
  parser.add_argument('--temp_dataset', default=None, help='PROJECT.DATASET for the read\'s temporary table')
  args, beam_args = parser.parse_known_args(argv)  # --temp_location and --project are Beam's
  bundle = ModelBundle.load(args.model)
  columns = PredictionColumns(bundle.outputs, 'id', (), bundle.name, bundle.version, 'beam-textbook-bq')
  source, target = TableRef.parse(args.input), TableRef.parse(args.output)
  read_options = {}
  if args.temp_dataset:
    project, _, dataset = args.temp_dataset.partition('.')
    read_options['temp_dataset'] = DatasetReference(projectId=project, datasetId=dataset)
  with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
    _ = (p
         | 'Read' >> ReadFromBigQuery(method=ReadFromBigQuery.Method.DIRECT_READ, table=source.dotted,
                                      selected_fields=['id'] + bundle.features.columns, **read_options)
         | 'Preprocess' >> beam.ParDo(Preprocess(bundle.features))
         | 'RunInference' >> RunInference(KeyedModelHandler(SignatureHandlerNumpy(bundle.saved_model_path)))
         | 'Postprocess' >> beam.Map(postprocess, columns=columns)
         | 'Write' >> WriteToBigQuery(target.dotted, schema=table_schema(columns.schema),
                                      method=WriteToBigQuery.Method.FILE_LOADS,
                                      create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
                                      write_disposition=BigQueryDisposition.WRITE_APPEND))
  print(json.dumps({'variant': 'beam-textbook-bq'}))


if __name__ == '__main__':
  main()
