"""What killed attempts staged for a BigQuery table goes once it is old, whatever their run id: the Parquet
files under --temp_location and the staging tables, with `status --clean` and with the next run's `prepare`."""

import datetime

import pyarrow as pa
import pytest
from apache_beam.io.filesystems import FileSystems
from google.cloud import bigquery

from pipelines.record import status
from transforms.bigquery import destination as bqdest, publish as bqpub
from transforms.bigquery.tables import TableRef
from transforms.files import publish

pytestmark = pytest.mark.slow

NOW = datetime.datetime.now(datetime.timezone.utc)


def _left_by_a_killed_attempt(bq_client, target: TableRef, temp: str, run_id: str) -> tuple[TableRef, str]:
  """A staging table and staged Parquet files of a killed attempt of `run_id`, launched an hour ago."""
  attempt = publish.new_attempt(NOW - datetime.timedelta(hours=1))
  table = bqpub.staging_table(target, run_id, attempt)
  bq_client.create_table(bigquery.Table(table.dotted, schema=[bigquery.SchemaField('run_id', 'STRING')]))
  folder = publish.attempt_folder(FileSystems.join(temp, bqdest.PARQUET_STAGING), run_id, attempt)
  with FileSystems.create(f'{folder}/predictions/predictions-00000-of-00001.parquet') as f:
    f.write(b'PAR1')
  return table, folder


def _tables(bq_client, dataset: str) -> set[str]:
  return {t.table_id for t in bq_client.list_tables(dataset)}


def test_status_clean__drops_old_staging_tables_and_files_of_any_run_id_and_keeps_young_ones(
    bq_client, bq_dataset, gcs_prefix, capsys):
  target = TableRef.parse(f'bq://{bq_dataset}.predictions')
  bq_client.create_table(bigquery.Table(target.dotted, schema=[bigquery.SchemaField('run_id', 'STRING')]))
  temp = f'{gcs_prefix}/temp'
  tuesday, tuesday_files = _left_by_a_killed_attempt(bq_client, target, temp, 'tuesday')
  wednesday, wednesday_files = _left_by_a_killed_attempt(bq_client, target, temp, 'wednesday')
  flags = [f'--output=bq://{bq_dataset}.predictions', f'--temp_location={temp}']

  capsys.readouterr()
  assert status.main([*flags, '--clean']) == 0  # made just now: younger than a day
  assert 'removed 0 leftover(s)' in capsys.readouterr().out
  assert _tables(bq_client, bq_dataset) == {'predictions', tuesday.table, wednesday.table}

  assert status.main([*flags, '--clean=0']) == 0
  printed = capsys.readouterr().out
  assert 'removed 4 leftover(s) of attempts killed more than 0 h ago' in printed
  assert tuesday.dotted in printed and wednesday_files in printed
  assert _tables(bq_client, bq_dataset) == {'predictions'}  # the output table stays
  for folder in (tuesday_files, wednesday_files):
    assert not FileSystems.match([folder + '/**'])[0].metadata_list


def test_prepare__the_next_run_drops_what_killed_attempts_of_other_run_ids_staged(
    bq_client, bq_dataset, gcs_prefix, monkeypatch):
  target = TableRef.parse(f'bq://{bq_dataset}.predictions')
  temp = f'{gcs_prefix}/temp'
  killed, files = _left_by_a_killed_attempt(bq_client, target, temp, 'tuesday')
  output = bqdest.LoadedTable(f'bq://{bq_dataset}.predictions',
                              pa.schema([('run_id', pa.string())]), 'friday', publish.new_attempt(),
                              staging_base=FileSystems.join(temp, bqdest.PARQUET_STAGING))

  output.prepare()  # a day has not passed
  assert killed.table in _tables(bq_client, bq_dataset)
  assert FileSystems.match([files + '/**'])[0].metadata_list

  monkeypatch.setattr(bqdest, 'STALE_AFTER', datetime.timedelta(0))  # as if it had: the emulator dates tables now
  output.prepare()
  assert killed.table not in _tables(bq_client, bq_dataset)
  assert not FileSystems.match([files + '/**'])[0].metadata_list
