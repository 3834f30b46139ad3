"""--replay of a BigQuery-input run reads the table at the recorded snapshot (the emulators)."""

import json

import pytest

from pipelines import run as run_job
from transforms.files import publish
from tests.transforms.bigquery.test_pipeline import job_args, load_penguins

pytestmark = pytest.mark.slow


def test_replay_of_a_table_run__reads_the_recorded_snapshot_and_matches(tmp_path, bq_client, bq_dataset,
                                                                         penguin_bundle, capsys):
  load_penguins(bq_client, f'{bq_dataset}.penguins')
  out = tmp_path / 'out'
  assert run_job.main(job_args(penguin_bundle, f'--input=bq://{bq_dataset}.penguins', f'--output={out}',
                               '--run_id=bq-night', '--report=false')) == 0
  original = publish.read_pointer(str(out), 'bq-night')
  recorded = json.load(open(original['manifest']))
  assert recorded['input']['kind'] == 'table' and recorded['input']['table'].endswith('.penguins')
  assert recorded['input']['snapshot_time'] == original['input_snapshot']
  capsys.readouterr()

  assert run_job.main([f'--replay={out}/bq-night/_run_summary.json', '--run_id=bq-replay']) == 0
  assert 'predictions match run bq-night' in capsys.readouterr().out
  replayed = publish.read_pointer(str(out), 'bq-replay')
  assert replayed['input_snapshot'] == original['input_snapshot']  # time travel to the original's snapshot
  assert replayed['predictions_digest'] == original['predictions_digest']
