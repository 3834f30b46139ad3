"""List columns (an embedding, a classifier's top classes) through the Parquet load into BigQuery, on the emulators."""

import numpy as np
import pyarrow as pa
import pytest
from google.cloud import bigquery

from models.bundle import Outputs
from models.inference import PredictionColumns
from transforms.bigquery import checks, publish
from transforms.bigquery.tables import TableRef, table_schema
from transforms.rows import dead_letters as dl
from tests.transforms.bigquery.test_publish import write_parquet


def _columns(outputs: Outputs) -> PredictionColumns:
  return PredictionColumns(outputs, 'id', (), 'm', '1', 'r1')


def _load_and_read(bq_client, bq_dataset, gcs_prefix, columns: PredictionColumns, values: np.ndarray) -> list[dict]:
  rows = pa.record_batch({dl.KEY: pa.array([f'k{i}' for i in range(len(values))])})
  batch = columns.format(rows, values)
  schema = table_schema(columns.schema, columns.descriptions)
  target = TableRef.parse(f'bq://{bq_dataset}.predictions')
  staging = publish.staging_table(target, 'r1', 'a1')
  assert publish.load_parquet(bq_client, write_parquet(gcs_prefix, pa.Table.from_batches([batch])), staging,
                              schema) == len(values)
  publish.ensure_table(bq_client, target, schema, partition_field='predicted_at')
  publish.replace_run_rows(bq_client, target, staging, 'r1')
  table = bq_client.get_table(target.dotted)
  return table, [dict(r) for r in bq_client.query(f'SELECT * FROM {target.sql} ORDER BY id').result()]


def test_embedding__a_repeated_float64_column_that_reads_back_row_for_row(bq_client, bq_dataset, gcs_prefix):
  values = np.random.default_rng(3).normal(size=(5, 8)).astype(np.float32)
  table, rows = _load_and_read(bq_client, bq_dataset, gcs_prefix, _columns(Outputs('embedding', dimension=8)), values)
  field = next(f for f in table.schema if f.name == 'embedding')
  assert (field.field_type, field.mode) in (('FLOAT', 'REPEATED'), ('FLOAT64', 'REPEATED'))  # BigQuery, emulator
  assert [r['id'] for r in rows] == [f'k{i}' for i in range(5)]
  np.testing.assert_array_equal(np.array([r['embedding'] for r in rows], np.float32), values)


def test_top_k_classes__repeated_string_and_float64_columns_best_first(bq_client, bq_dataset, gcs_prefix):
  outputs = Outputs('classification', classes=('a', 'b', 'c', 'd'), top_k=2)
  values = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.15, 0.05]], np.float32)
  table, rows = _load_and_read(bq_client, bq_dataset, gcs_prefix, _columns(outputs), values)
  modes = {f.name: (f.field_type, f.mode) for f in table.schema}
  assert modes['top_classes'] == ('STRING', 'REPEATED')
  assert modes['top_probabilities'] in (('FLOAT', 'REPEATED'), ('FLOAT64', 'REPEATED'))
  assert [r['top_classes'] for r in rows] == [['d', 'c'], ['a', 'c']]
  np.testing.assert_allclose([r['top_probabilities'] for r in rows], [[0.4, 0.3], [0.7, 0.15]], rtol=1e-6)
  assert [r['predicted_class'] for r in rows] == ['d', 'a']


def test_preflight__an_existing_single_float_column_cannot_take_an_embedding(bq_client, bq_dataset):
  bq_client.create_table(bigquery.Table(f'{bq_dataset}.old', schema=[
      bigquery.SchemaField('id', 'STRING'), bigquery.SchemaField('embedding', 'FLOAT64')]))
  want = table_schema(_columns(Outputs('embedding', dimension=4)).schema)
  with pytest.raises(ValueError, match='embedding is NULLABLE, the job writes REPEATED'):
    checks.check_output_table(bq_client, TableRef.parse(f'bq://{bq_dataset}.old'), want)



def test_entities__a_repeated_record_column_of_each_entity_s_fields():
  # Schema only: the BigQuery emulator answers 500 to any table with a field named `end` (a reserved word it
  # does not quote), which BigQuery itself takes, so no round trip here.
  columns = PredictionColumns(Outputs('entities', labels=('O', 'B-ORG', 'I-ORG', 'B-PER')), 'id', (), 'm', '1', 'r1',
                              text_column='text')
  texts = ['Acme Corp hired Ann', 'nothing here']
  # Per token: tag (-1 none), probability, start, end; [CLS] Acme Corp hired Ann [SEP] / [CLS] nothing here [SEP].
  tags = np.array([[-1, 0, -1, -1, 1, .9, 0, 4, 2, .7, 5, 9, 0, .8, 10, 15, 3, .6, 16, 19, -1, 0, -1, -1],
                   [-1, 0, -1, -1, 0, .9, 0, 7, 0, .9, 8, 12, -1, 0, -1, -1, -1, 0, -1, -1, -1, 0, -1, -1]], np.float32)
  batch = columns.format(pa.record_batch({dl.KEY: pa.array(['k0', 'k1']), 'text': pa.array(texts)}), tags)
  field = next(f for f in table_schema(columns.schema, columns.descriptions)['fields'] if f['name'] == 'entities')
  assert (field['type'], field['mode'], 'description' in field) == ('RECORD', 'REPEATED', True)
  assert [(f['name'], f['type']) for f in field['fields']] == [
      ('text', 'STRING'), ('label', 'STRING'), ('start', 'INT64'), ('end', 'INT64'), ('score', 'FLOAT64')]
  got = [[{**e, 'score': round(e['score'], 5)} for e in row] for row in batch.column('entities').to_pylist()]
  assert got == [[{'text': 'Acme Corp', 'label': 'ORG', 'start': 0, 'end': 9, 'score': 0.8},
                  {'text': 'Ann', 'label': 'PER', 'start': 16, 'end': 19, 'score': 0.6}], []]
