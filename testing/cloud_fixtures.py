"""Fixtures that run the job's Cloud Storage and BigQuery paths against local emulators.

Every redirection lives here, none in the job's code:
- google-cloud-storage and google-cloud-bigquery clients honour
  STORAGE_EMULATOR_HOST and BIGQUERY_EMULATOR_HOST;
- Beam's BigQuery IO has no endpoint option, so its apitools client's BASE_URL
  and its Storage Read client are pointed at the emulator;
- anonymous credentials stand in for google.auth.default(), which would
  otherwise probe for credentials (Beam retries that for about 25 s).

The emulators start once per test session, on free 127.0.0.1 ports, only when a
test asks for them, and stop at its end.
"""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from testing import emulators

PROJECT = 'test-project'
BUCKET = 'test-bucket'


@pytest.fixture(scope='session')
def emulator_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('emulators')


@pytest.fixture(scope='session')
def anonymous_credentials() -> Iterator[None]:
  """google.auth.default() answers at once with anonymous credentials, for every client."""
  import google.auth
  from google.auth.credentials import AnonymousCredentials
  from apache_beam.internal.gcp import auth as beam_auth
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(google.auth, 'default', lambda *args, **kwargs: (AnonymousCredentials(), PROJECT))
    mp.setattr(beam_auth._Credentials, '_credentials_init', False)  # pylint: disable=protected-access
    mp.setenv('GOOGLE_CLOUD_PROJECT', PROJECT)
    yield
  beam_auth._Credentials._credentials_init = False  # pylint: disable=protected-access


@pytest.fixture(scope='session')
def gcs(emulator_dir, anonymous_credentials) -> Iterator[emulators.GcsEmulator]:
  """The Cloud Storage emulator with bucket BUCKET; Beam's gs:// filesystem talks to it."""
  emulator = emulators.GcsEmulator(emulator_dir)
  try:
    with pytest.MonkeyPatch.context() as mp:
      mp.setenv('STORAGE_EMULATOR_HOST', emulator.endpoint)
      from google.cloud import storage
      storage.Client(project=PROJECT).create_bucket(BUCKET)
      yield emulator
  finally:
    emulator.stop()


@pytest.fixture
def gcs_prefix(gcs) -> str:
  """A fresh gs:// folder for one test."""
  return f'gs://{BUCKET}/{uuid.uuid4().hex[:8]}'


def _redirect_beam_bigquery_io(mp: pytest.MonkeyPatch, emulator: emulators.BigQueryEmulator) -> None:
  import grpc
  from apache_beam.io.gcp import bigquery as beam_bigquery
  from apache_beam.io.gcp.internal.clients.bigquery import BigqueryV2
  from google.cloud import bigquery_storage_v1
  from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport

  mp.setattr(BigqueryV2, 'BASE_URL', f'{emulator.rest_url}/bigquery/v2/')
  read_client = bigquery_storage_v1.BigQueryReadClient

  def emulator_read_client(*unused_args, **unused_kwargs):
    channel = grpc.insecure_channel(emulator.grpc_endpoint, options=[  # no 4 MiB cap: Google's client sets none
        ('grpc.max_receive_message_length', -1), ('grpc.max_send_message_length', -1)])
    return read_client(transport=BigQueryReadGrpcTransport(channel=channel))

  mp.setattr(beam_bigquery.bq_storage, 'BigQueryReadClient', emulator_read_client)


@pytest.fixture(scope='session')
def bigquery_emulator(emulator_dir, gcs) -> Iterator[emulators.BigQueryEmulator]:
  """The BigQuery emulator; load jobs read gs:// from the GCS emulator's disk."""
  emulator = emulators.BigQueryEmulator(emulator_dir, project=PROJECT, gcs_root=gcs.objects_root)
  try:
    with pytest.MonkeyPatch.context() as mp:
      mp.setenv('BIGQUERY_EMULATOR_HOST', emulator.rest_url)
      _redirect_beam_bigquery_io(mp, emulator)
      yield emulator
  finally:
    emulator.stop()


@pytest.fixture
def bq_client(bigquery_emulator):
  from google.cloud import bigquery
  return bigquery.Client(project=PROJECT)


@pytest.fixture
def bq_dataset(bq_client) -> Iterator[str]:
  """A fresh dataset for one test, as PROJECT.DATASET."""
  name = f'{PROJECT}.test_{uuid.uuid4().hex[:8]}'
  bq_client.create_dataset(name)
  yield name
  from google.api_core.exceptions import NotFound
  try:
    bq_client.get_dataset(name)
  except NotFound:
    pytest.fail(f'{name} was deleted during the test: the emulator ignores datasets.list filters, so a read '
                'without --bq_temp_dataset lets Beam\'s clean-up delete every dataset')
  bq_client.delete_dataset(name, delete_contents=True)

