"""Paths the emulators cannot serve, run against real BigQuery when a project is given.

Beam's STORAGE_WRITE_API method runs through its Java expansion service, a jar
fetched from Maven Central at launch, which an offline test run cannot start;
the BigQuery emulator also loads no Avro files and ignores a query job's
destination table, which real BigQuery honours. The tests here run the job
against a real project; they are skipped unless
BATCH_INFERENCE_REAL_BIGQUERY=PROJECT.DATASET and
BATCH_INFERENCE_REAL_TEMP_LOCATION=gs://BUCKET/PREFIX are set and Google
credentials are available. The job runs in a child process whose environment
has no emulator redirection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest

from testing import penguin_tables as penguins

REAL = os.environ.get('BATCH_INFERENCE_REAL_BIGQUERY', '')
TEMP_LOCATION = os.environ.get('BATCH_INFERENCE_REAL_TEMP_LOCATION', '')
_EMULATOR_VARIABLES = ('STORAGE_EMULATOR_HOST', 'BIGQUERY_EMULATOR_HOST')

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (REAL and TEMP_LOCATION), reason=(
        'runs against real BigQuery, which the emulators cannot stand in for here (STORAGE_WRITE_API needs '
        'Beam\'s Java expansion service from Maven Central; real SQL and load jobs): set '
        'BATCH_INFERENCE_REAL_BIGQUERY=PROJECT.DATASET and BATCH_INFERENCE_REAL_TEMP_LOCATION=gs://... '
        'with Google credentials to run it')),
]


@pytest.fixture
def real_client():
  """A client of real BigQuery, even when emulator fixtures redirected this process earlier."""
  from google.auth import _default  # the real lookup; the emulator fixtures replace google.auth.default
  from google.cloud import bigquery
  credentials, _ = _default.default()
  project = REAL.split('.')[0]
  return bigquery.Client(project=project, credentials=credentials,
                         client_options={'api_endpoint': 'https://bigquery.googleapis.com'})


@pytest.fixture
def real_table(real_client):
  """The penguins, loaded into a fresh table of the real dataset; dropped afterwards."""
  name = f'{REAL}.penguins_{uuid.uuid4().hex[:8]}'
  real_client.load_table_from_json(penguins.table().to_pylist(), name).result()
  yield name
  real_client.delete_table(name, not_found_ok=True)


def _run_job(*argv: str) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k not in _EMULATOR_VARIABLES}
  return subprocess.run([sys.executable, '-m', 'pipelines.run', *argv], env=env, capture_output=True, text=True,
                        check=False, timeout=900)


@pytest.mark.skipif(shutil.which('java') is None, reason='STORAGE_WRITE_API runs through Beam\'s Java expansion '
                    'service, and no java is on PATH')
def test_storage_write_api__writes_every_prediction(real_client, real_table, penguin_bundle):
  output = f'{REAL}.predictions_{uuid.uuid4().hex[:8]}'
  try:
    done = _run_job(f'--input=bq://{real_table}', f'--output=bq://{output}', f'--model={penguin_bundle.path}',
                    f'--key_column={penguins.KEY}', '--bq_write_method=STORAGE_WRITE_API', '--run_id=real-swa',
                    f'--temp_location={TEMP_LOCATION}', f'--project={REAL.split(".")[0]}')
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(real_client.query(f'SELECT COUNT(*) AS n FROM `{output}`').result())
    assert rows[0]['n'] == 342
  finally:
    real_client.delete_table(output, not_found_ok=True)
    real_client.delete_table(f'{output}_dead_letters', not_found_ok=True)


def test_query_input_and_file_loads__on_real_bigquery(real_client, real_table, penguin_bundle):
  output = f'{REAL}.predictions_{uuid.uuid4().hex[:8]}'
  try:
    done = _run_job(f'--input_query=SELECT * FROM `{real_table}` WHERE year = @year',
                    '--query_parameter=year=INT64:2008', f'--bq_temp_dataset={REAL}', f'--output=bq://{output}',
                    f'--model={penguin_bundle.path}',
                    f'--key_column={penguins.KEY}', '--run_id=real-query', f'--temp_location={TEMP_LOCATION}',
                    f'--project={REAL.split(".")[0]}')
    assert done.returncode == 0, done.stderr[-3000:]
    want = sum(1 for r in penguins.table().to_pylist() if r['year'] == 2008 and r['bill_length_mm'] is not None)
    rows = list(real_client.query(f'SELECT COUNT(*) AS n FROM `{output}`').result())
    assert rows[0]['n'] == want
  finally:
    real_client.delete_table(output, not_found_ok=True)
    real_client.delete_table(f'{output}_dead_letters', not_found_ok=True)
