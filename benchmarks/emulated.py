"""Runs a benchmark module with its BigQuery and Cloud Storage clients pointed at local emulators.

    python -m benchmarks.emulated MODULE ARGS...

Each variant runs in its own process, and some of its clients have no endpoint
setting that an environment variable reaches, so the process redirects them
itself before the module runs. The driver (benchmarks/run.py) starts the
emulators and passes their addresses in the environment (`environment`).
What is redirected, as testing/cloud_fixtures.py does for the tests:
- google-cloud-bigquery and google-cloud-storage honour BIGQUERY_EMULATOR_HOST
  and STORAGE_EMULATOR_HOST;
- the Storage Read client (ours and Beam's) gets an insecure gRPC channel to
  the emulator, and Beam's apitools BigQuery client its REST address;
- google.auth.default() answers with anonymous credentials at once (otherwise
  it probes for credentials, and Beam retries that for about 25 s).
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Optional, Sequence

REST_URL = 'BIGQUERY_EMULATOR_HOST'
GCS_ENDPOINT = 'STORAGE_EMULATOR_HOST'
# Not a Google variable: the Storage Read API's gRPC address, which no client reads from the environment.
GRPC_ENDPOINT = 'BENCH_BIGQUERY_GRPC_ENDPOINT'
PROJECT = 'GOOGLE_CLOUD_PROJECT'


def environment(rest_url: str, grpc_endpoint: str, gcs_endpoint: str, project: str) -> dict[str, str]:
  """The variables a child process needs for `main` to find the emulators."""
  return {REST_URL: rest_url, GRPC_ENDPOINT: grpc_endpoint, GCS_ENDPOINT: gcs_endpoint, PROJECT: project}


def use_emulators(rest_url: str, grpc_endpoint: str, gcs_endpoint: str, project: str) -> None:
  """Points every Google client of this process at the emulators, before any client is made.

  Args:
    rest_url: the BigQuery emulator's REST address, http://HOST:PORT.
    grpc_endpoint: its Storage Read gRPC address, HOST:PORT.
    gcs_endpoint: the Cloud Storage emulator's address, http://HOST:PORT.
    project: the project anonymous credentials report.
  """
  import google.auth
  import grpc
  from apache_beam.internal.gcp import auth as beam_auth
  from apache_beam.io.gcp.internal.clients.bigquery import BigqueryV2
  from google.auth.credentials import AnonymousCredentials
  from google.cloud import bigquery_storage_v1
  from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport

  os.environ.update(environment(rest_url, grpc_endpoint, gcs_endpoint, project))
  google.auth.default = lambda *args, **kwargs: (AnonymousCredentials(), project)
  beam_auth._Credentials._credentials_init = False  # pylint: disable=protected-access
  BigqueryV2.BASE_URL = f'{rest_url}/bigquery/v2/'
  read_client = bigquery_storage_v1.BigQueryReadClient

  def emulator_read_client(*unused_args, **unused_kwargs) -> bigquery_storage_v1.BigQueryReadClient:
    channel = grpc.insecure_channel(grpc_endpoint, options=[  # no 4 MiB cap: Google's client sets none
        ('grpc.max_receive_message_length', -1), ('grpc.max_send_message_length', -1)])
    return read_client(transport=BigQueryReadGrpcTransport(channel=channel))

  # Ours (transforms.bigquery.read) and Beam's (bigquery.bq_storage) both look the class up in this module.
  bigquery_storage_v1.BigQueryReadClient = emulator_read_client


def main(argv: Optional[Sequence[str]] = None) -> None:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv:
    sys.exit('usage: python -m benchmarks.emulated MODULE ARGS... (with the variables of `environment` set)')
  missing = [name for name in (REST_URL, GRPC_ENDPOINT, GCS_ENDPOINT, PROJECT) if not os.environ.get(name)]
  if missing:
    sys.exit(f'benchmarks.emulated needs {", ".join(missing)} in the environment: the benchmark driver '
             '(python -m benchmarks.run) sets them when it starts the emulators')
  use_emulators(os.environ[REST_URL], os.environ[GRPC_ENDPOINT], os.environ[GCS_ENDPOINT], os.environ[PROJECT])
  module, *args = argv
  sys.argv = [module, *args]
  runpy.run_module(module, run_name='__main__', alter_sys=True)


if __name__ == '__main__':
  main()
