"""The benchmark-only virtualenvs: real ones, made with the project's own interpreter and pip, offline."""

import os
import subprocess

import pytest

from benchmarks import side_venvs

pytestmark = pytest.mark.slow


def _ensure(tmp_path, name: str, requirement: str) -> tuple[str, bool]:
  """Makes the side virtualenv NAME-venv for one requirement line, over a project stack of numpy alone."""
  requirements = tmp_path / f'requirements-{name}.txt'
  requirements.write_text(requirement + '\n')
  stack = tmp_path / 'requirements.txt'
  stack.write_text('numpy\n')
  path = str(tmp_path / f'{name}-venv')
  return path, side_venvs.ensure(path, str(requirements), str(stack))


def test_side_venv__sees_the_project_stack_and_is_made_once(tmp_path):
  path, made = _ensure(tmp_path, 'numpy', 'numpy')  # satisfied by the project stack, so pip needs no index
  assert made
  python = os.path.join(path, 'bin', 'python')
  seen = subprocess.run([python, '-c', 'import numpy; print(numpy.__file__)'], capture_output=True, text=True,
                        check=True).stdout
  assert not seen.startswith(path)  # the project's numpy, not a copy
  marker = os.path.join(path, 'kept')
  open(marker, 'w', encoding='utf-8').close()
  assert _ensure(tmp_path, 'numpy', 'numpy')[1]
  assert os.path.exists(marker)  # current: not made again


def test_side_venv__that_pip_cannot_install__says_why(tmp_path):
  path, made = _ensure(tmp_path, 'broken', 'not a requirement!')  # a line pip rejects before it looks anything up
  assert not made
  assert not os.path.exists(os.path.join(path, 'bin', 'python'))  # benchmarks.run reads UNAVAILABLE instead
  with open(os.path.join(path, 'UNAVAILABLE'), encoding='utf-8') as f:
    reason = f.read()
  assert reason.startswith('pip could not install not a requirement! here: ERROR'), reason
  assert 'Invalid requirement' in reason, reason
