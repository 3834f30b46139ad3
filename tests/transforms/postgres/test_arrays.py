"""List columns in PostgreSQL: an embedding and a classifier's top classes, typed, COPYed and read back."""

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from models.bundle import Outputs
from models.inference import PredictionColumns
from transforms.postgres import arrays
from transforms.postgres import publish as pgpub
from transforms.postgres.tables import PgTarget, accepts, pg_type
from transforms.postgres.write import WritePostgres
from transforms.rows import dead_letters as dl


def test_pg_type__an_embedding_is_real_array_or_pgvector_when_the_database_has_it():
  # The test server (Debian 12's PostgreSQL) has no pgvector, so the vector(n) branch is checked here, on the DDL.
  embedding = pa.list_(pa.float32(), 768)
  assert pg_type(embedding) == 'real[]'
  assert pg_type(embedding, pgvector=True) == 'vector(768)'
  assert pg_type(pa.list_(pa.float32(), arrays.VECTOR_MAX_DIMENSIONS + 1), pgvector=True) == 'real[]'
  assert pg_type(pa.list_(pa.float32()), pgvector=True) == 'real[]'  # no length, no vector column
  assert pg_type(pa.list_(pa.string()), pgvector=True) == 'text[]'


def test_accepts__arrays_of_a_fitting_element_and_a_vector_of_the_same_length():
  embedding = pa.list_(pa.float32(), 4)
  assert accepts('real[]', embedding) and accepts('double precision[]', embedding) and accepts('vector(4)', embedding)
  assert not accepts('vector(3)', embedding) and not accepts('real', embedding) and not accepts('text[]', embedding)
  assert accepts('text[]', pa.list_(pa.string())) and not accepts('integer[]', pa.list_(pa.string()))


def test_array_text__arrays_vectors_quoted_text_and_nulls_for_a_sliced_batch():
  batch = pa.record_batch({
      'e': pa.array([[0.1, 2.0], [3.0, None], None, []], pa.list_(pa.float32())),
      't': pa.array([['a "b"', 'c\\d,e'], ['x'], None, ['']]), 'k': [1, 2, 3, 4]})
  assert arrays.array_text(batch).to_pydict() == {
      'e': ['{0.1,2}', '{3,NULL}', None, '{}'], 't': ['{"a \\"b\\"","c\\\\d,e"}', '{"x"}', None, '{""}'],
      'k': [1, 2, 3, 4]}
  assert arrays.array_text(batch.slice(1, 3), {'e'}).column('e').to_pylist() == ['[3,NULL]', None, '[]']


def _run(postgres_server, table: str, columns: PredictionColumns, values: np.ndarray) -> PgTarget:
  """What a run does with the table: create it and its staging table, COPY the batches, publish."""
  target = PgTarget.parse(postgres_server.url(table))
  pgpub.create_tables(target, columns.table_schema, columns.primary_key, run_id='r1', attempt='a1', key_name='id')
  rows = pa.record_batch({dl.KEY: pa.array([f'k{i}' for i in range(len(values))])})
  batches = [columns.format(rows.slice(0, 3), values[:3]), columns.format(rows.slice(3), values[3:])]
  with TestPipeline() as p:
    written = p | beam.Create(batches) | WritePostgres(target, target.staging_table('r1', 'a1'), key_name='id',
                                                       run_id='r1', layout=columns.table_rows)
    assert_that(written['written'], equal_to([3, len(values) - 3]))
  pgpub.publish_run(target, columns.table_schema, columns.primary_key, run_id='r1', attempt='a1', rows=len(values),
                    key_name='id')
  assert pgpub.check_target(target, columns.table_schema, columns.primary_key) == []  # the table it made fits it
  return target


def _types(postgres_server, table: str) -> dict[str, str]:
  with postgres_server.connect() as conn:
    return dict(conn.execute('SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute '
                             'WHERE attrelid = %s::regclass AND attnum > 0', (table,)).fetchall())


def test_embedding__a_real_array_column_reads_back_row_for_row(postgres_server):
  values = np.random.default_rng(5).normal(size=(7, 16)).astype(np.float32)
  values[0, 0] = 1e-30
  columns = PredictionColumns(Outputs('embedding', dimension=16), 'id', (), 'm', '1', 'r1')
  _run(postgres_server, 'embedded', columns, values)
  with postgres_server.connect() as conn, conn.cursor() as cursor:
    pgvector = arrays.has_pgvector(cursor)  # False on Debian 12's server; where installed, the vector route runs
  assert _types(postgres_server, 'embedded')['embedding'] == ('vector(16)' if pgvector else 'real[]')
  with postgres_server.connect() as conn:
    got = conn.execute('SELECT id, embedding::real[], array_length(embedding::real[], 1) FROM embedded '
                       'ORDER BY id').fetchall()
  assert [r[0] for r in got] == [f'k{i}' for i in range(7)] and {r[2] for r in got} == {16}
  np.testing.assert_array_equal(np.array([r[1] for r in got], np.float32), values)  # every float32 exactly


def test_top_k_classes__text_and_real_arrays_with_awkward_class_names(postgres_server):
  classes = ('plain', 'with "quotes"', 'comma, and \\ backslash', '{braces}')
  outputs = Outputs('classification', classes=classes, top_k=3)
  values = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], [0.25, 0.5, 0.15, 0.1], [0.1, 0.1, 0.7, 0.1]],
                    np.float32)
  columns = PredictionColumns(outputs, 'id', (), 'm', '1', 'r1')
  _run(postgres_server, 'top_classes', columns, values)
  types = _types(postgres_server, 'top_classes')
  assert (types['top_classes'], types['top_probabilities']) == ('text[]', 'real[]')
  with postgres_server.connect() as conn:
    got = conn.execute('SELECT top_classes, top_probabilities, predicted_class FROM top_classes ORDER BY id').fetchall()
  order = np.argsort(-values, axis=1, kind='stable')[:, :3]
  assert [r[0] for r in got] == [[classes[j] for j in row] for row in order]
  np.testing.assert_array_equal(np.array([r[1] for r in got], np.float32), np.take_along_axis(values, order, axis=1))
  assert [r[2] for r in got] == [r[0][0] for r in got]


def test_preflight__an_existing_table_whose_embedding_column_is_one_real_is_named(postgres_server):
  with postgres_server.connect(autocommit=True) as conn:
    conn.execute('CREATE TABLE flat_embedding (id text PRIMARY KEY, embedding real)')
  columns = PredictionColumns(Outputs('embedding', dimension=4), 'id', (), 'm', '1', 'r1')
  problems = pgpub.check_target(PgTarget.parse(postgres_server.url('flat_embedding')), columns.table_schema,
                                columns.primary_key)
  assert any("column 'embedding' is real, which cannot take real[] values" in p for p in problems), problems


@pytest.mark.parametrize('kind', ['real[]', 'double precision[]'])
def test_an_existing_array_column_of_another_float_type_takes_the_embedding(postgres_server, kind):
  table = 'wide_' + kind.split()[0].rstrip('[]')
  with postgres_server.connect(autocommit=True) as conn:
    conn.execute(f'DROP TABLE IF EXISTS {table}')
    conn.execute(f'CREATE TABLE {table} (id text PRIMARY KEY, embedding {kind}, model_name text, model_version text, '
                 'run_id text, predicted_at timestamptz)')
  values = np.arange(20, dtype=np.float32).reshape(5, 4) / 7
  _run(postgres_server, table, PredictionColumns(Outputs('embedding', dimension=4), 'id', (), 'm', '1', 'r1'), values)
  with postgres_server.connect() as conn:
    got = [r[0] for r in conn.execute(f'SELECT embedding FROM {table} ORDER BY id').fetchall()]
  np.testing.assert_array_equal(np.array(got, np.float32), values)
