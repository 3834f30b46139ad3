"""Models from the Vertex AI Model Registry, through its real client against a local stand-in.

`registry_standin.ModelRegistryStandIn` is a small local HTTP server that
speaks the two Model Registry REST calls we make (get a model version, upload
a version); it is not Google's service nor an emulator of it. The client is
google-cloud-aiplatform's, pointed at the stand-in with its api_endpoint
option and anonymous credentials; nothing reaches a Google endpoint.
"""

import glob
import json
import os

import pyarrow.parquet as pq
import pytest

from models import registry
from models.importer.command import main as import_main
from models.examples.penguins import train
from pipelines import run as run_job
from testing.registry_standin import ModelRegistryStandIn, serve

MODEL = 'projects/my-project/locations/europe-west4/models/penguins'


@pytest.fixture
def standin():
  models = ModelRegistryStandIn()
  with serve(models) as endpoint:
    yield models, endpoint


def test_resolve__a_version_an_alias_or_the_default(standin):
  models, endpoint = standin
  models.add_version(MODEL, 'gs://bucket/bundles/penguins-1')
  models.add_version(MODEL, 'gs://bucket/bundles/penguins-2', aliases=('champion',))

  assert registry.resolve(f'{MODEL}@1', api_endpoint=endpoint).artifact_uri == 'gs://bucket/bundles/penguins-1'
  champion = registry.resolve(f'{MODEL}@champion', api_endpoint=endpoint)
  assert (champion.version_id, champion.artifact_uri) == ('2', 'gs://bucket/bundles/penguins-2')
  assert champion.versioned_name == f'{MODEL}@2'
  assert registry.resolve(MODEL, api_endpoint=endpoint).version_id == '1'  # no @: the default version
  assert ('GET', f'/v1/{MODEL}@champion', {}) in models.requests


@pytest.mark.parametrize('name, message', [
    (f'{MODEL}@7', 'no such model or version'),
    ('projects/my-project/locations/europe-west4/models/other', 'no such model or version'),
])
def test_resolve__an_unknown_version_or_model_is_a_clear_error(standin, name, message):
  models, endpoint = standin
  models.add_version(MODEL, 'gs://bucket/bundles/penguins-1')
  with pytest.raises(registry.RegistryError, match=message):
    registry.resolve(name, api_endpoint=endpoint)


def test_is_registry_model__only_full_resource_names():
  assert registry.is_registry_model(f'{MODEL}@champion') and registry.is_registry_model(MODEL)
  assert not registry.is_registry_model('gs://bucket/bundles/penguins')
  assert not registry.is_registry_model('models/penguins@1')


@pytest.mark.slow
def test_import_registers_a_checked_bundle_and_a_run_stamps_the_resolved_version(standin, tmp_path, penguin_bundle):
  models, endpoint = standin
  models.add_version(MODEL, 'gs://bucket/bundles/penguins-0', aliases=('champion',))
  output = str(tmp_path / 'penguins-2')
  code = import_main([f'--saved_model={penguin_bundle.saved_model_path}',
                      f'--features={penguin_bundle.path}/features.json',
                      f'--outputs={penguin_bundle.path}/outputs.json', '--name=penguin-species', '--version=2',
                      f'--output={output}', f'--register={MODEL}', '--alias=champion',
                      f'--vertex_api_endpoint={endpoint}'])
  assert code == 0
  upload = [body for method, _, body in models.requests if method == 'POST']
  assert upload[0]['parentModel'] == MODEL and upload[0]['model']['artifactUri'] == output
  assert registry.resolve(f'{MODEL}@champion', api_endpoint=endpoint).version_id == '2'  # the alias moved

  summary = run_job.run([f'--input={train.EXAMPLE_DATA}', f'--model={MODEL}@champion',
                         f'--vertex_api_endpoint={endpoint}', f'--output={tmp_path / "out"}', '--run_id=reg',
                         '--report=false'])
  assert summary.model['resource'] == f'{MODEL}@2' and summary.model['version_id'] == '2'
  assert summary.model['path'] == output
  rows = pq.read_table(glob.glob(os.path.join(summary.output, 'predictions-*.parquet'))).to_pylist()
  assert len(rows) == summary.rows_predicted == 342
  assert {r['model_resource'] for r in rows} == {f'{MODEL}@2'} and {r['model_version'] for r in rows} == {'2'}
  with open(os.path.join(tmp_path, 'out', 'reg', '_run_summary.json'), encoding='utf-8') as f:
    assert json.load(f)['model']['resource'] == f'{MODEL}@2'


def test_run__an_unknown_registry_model_fails_preflight(standin, tmp_path, capsys):
  _, endpoint = standin
  code = run_job.main([f'--input={train.EXAMPLE_DATA}', f'--model={MODEL}@champion',
                       f'--vertex_api_endpoint={endpoint}', f'--output={tmp_path / "out"}', '--preflight_only'])
  assert code == 2 and 'no such model or version in the Vertex AI Model Registry' in capsys.readouterr().err
