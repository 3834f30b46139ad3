"""The container recipe and the Flex Template metadata, checked against the code they describe."""

import json
import os
import re
import subprocess

import pytest

from deploy import template_metadata
from pipelines.options import DEVICES, REQUIRED_FLAGS, BatchInferenceOptions
from tests.deploy.helpers import REPO, tool

DOCKERFILE = os.path.join(REPO, 'Dockerfile')


def _dockerfile() -> str:
  with open(DOCKERFILE, encoding='utf-8') as f:
    return f.read()


def _pins() -> dict[str, str]:
  """Package name → pinned version from requirements.txt."""
  pins = {}
  with open(os.path.join(REPO, 'requirements.txt'), encoding='utf-8') as f:
    for line in f:
      match = re.match(r'^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s#]+)', line.strip())
      if match:
        pins[match.group(1).lower()] = match.group(3)
  return pins


def _arg(name: str) -> str:
  values = re.findall(rf'^ARG {name}=(\S+)$', _dockerfile(), flags=re.MULTILINE)
  assert len(values) == 1, f'Dockerfile should declare ARG {name}=... once, found {values}'
  return values[0]


def test_dockerfile__passes_hadolint():
  result = subprocess.run([tool('hadolint'), DOCKERFILE], capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile__beam_and_tensorflow_match_the_pinned_versions():
  pins = _pins()
  assert _arg('BEAM_VERSION') == pins['apache-beam']
  assert _arg('TENSORFLOW_VERSION') == pins['tensorflow']
  # The worker boot comes from the SDK image of the same Beam and Python.
  assert 'FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam_sdk' in _dockerfile()
  assert 'FROM python:${PYTHON_VERSION}-slim' in _dockerfile()


def test_dockerfile__copies_only_files_that_exist_and_that_the_build_context_keeps():
  sources = []
  for line in _dockerfile().splitlines():
    if line.startswith('COPY ') and '--from=' not in line:
      sources += line.split()[1:-1]
  assert sources, 'no COPY from the build context'
  with open(os.path.join(REPO, '.dockerignore'), encoding='utf-8') as f:
    kept = {line.strip()[1:].rstrip('/') for line in f if line.startswith('!')}
  for source in sources:
    assert os.path.exists(os.path.join(REPO, source)), f'Dockerfile copies {source}, which does not exist'
    assert source.rstrip('/') in kept, f'.dockerignore drops {source}, which the Dockerfile copies'


def test_dockerfile__model_frameworks_match_the_setup_py_extras_the_gpu_needs():
  with open(os.path.join(REPO, 'setup.py'), encoding='utf-8') as f:
    setup = f.read()
  extras = {}
  for name in ('onnx-gpu', 'torch', 'xgboost', 'sklearn', 'images', 'text'):
    listed, = re.findall(rf"^    '{name}': \[([^\]]*)\],$", setup, flags=re.MULTILINE)
    extras.update(dict(re.findall(r"'([A-Za-z0-9_.-]+)==([^']+)'", listed)))
  in_image = dict(re.findall(r'\b(onnxruntime-gpu|torch|xgboost|scikit-learn|skops|simplejpeg|pillow|pydicom|tokenizers|pypdf|pylance)==(\S+)', _dockerfile()))
  assert in_image == extras and len(extras) == 11


def test_dockerfile__launcher_runs_the_entry_point_and_workers_boot_beam():
  text = _dockerfile()
  py_file, = re.findall(r'FLEX_TEMPLATE_PYTHON_PY_FILE=(\S+)', text)
  workdir, = re.findall(r'^WORKDIR (\S+)$', text, flags=re.MULTILINE)
  assert py_file.startswith(workdir + '/')
  assert os.path.isfile(os.path.join(REPO, py_file[len(workdir) + 1:]))
  assert 'pip check' in text
  assert text.rstrip().endswith('ENTRYPOINT ["/opt/apache/beam/boot"]')


def test_committed_metadata__equals_the_generated_one():
  with open(os.path.join(REPO, template_metadata.METADATA_PATH), encoding='utf-8') as f:
    committed = f.read()
  assert committed == template_metadata.render(), (
      'deploy/flex-template/metadata.json is stale: run python -m deploy.template_metadata --write')


def test_metadata__declares_every_flag_once_with_required_ones_not_optional():
  params = template_metadata.parameters()
  names = [p['name'] for p in params]
  options = BatchInferenceOptions([])
  assert len(names) == len(set(names))
  assert set(names) <= set(options.get_all_options())  # each is a real flag
  assert {p['name'] for p in params if not p['isOptional']} == set(REQUIRED_FLAGS)
  assert all(p['helpText'] and p['label'] for p in params)


@pytest.mark.parametrize('name, good, bad', [
    ('device', DEVICES, ['tpu', 'GPU']),
    ('output_format', ['parquet', 'csv'], ['xlsx']),
    ('max_batch_rows', ['16384'], ['-1', '1e3']),
    ('share_model_across_processes', ['true', 'false'], ['maybe']),
])
def test_metadata_regexes__accept_what_the_flag_accepts(name, good, bad):
  param, = [p for p in template_metadata.parameters() if p['name'] == name]
  regex, = param['regexes']
  assert all(re.fullmatch(regex, value) for value in good)
  assert not any(re.fullmatch(regex, value) for value in bad)


def test_metadata_main__prints_the_json(capsys):
  assert template_metadata.main([]) == 0
  assert json.loads(capsys.readouterr().out)['name'] == template_metadata.TEMPLATE_NAME


def test_inference_accelerator_with_device_cpu__is_refused():
  options = BatchInferenceOptions(['--input=a', '--model=m', '--output=o', '--device=cpu',
                                   '--inference_accelerator=type:nvidia-l4;count:1'])
  with pytest.raises(ValueError, match='--inference_accelerator asks for a GPU but --device is cpu'):
    options.validate_flags()
