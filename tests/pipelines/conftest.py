"""Fixtures the job's end-to-end tests share: a folder's file digests, and the dead letters a run wrote.

Each is a function handed out as a fixture, so the test files of this folder
read a run's output one way, without importing one another.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from typing import Callable

import pytest


def _snapshot(folder) -> dict[str, str]:
  """Every file under a folder with a hash of its bytes."""
  return {os.path.relpath(p, folder): hashlib.sha256(open(p, 'rb').read()).hexdigest()
          for p in glob.glob(os.path.join(folder, '**'), recursive=True) if os.path.isfile(p)}


def _dead_letters(folder: str) -> list[dict]:
  """The dead letters of every dead_letters-*.jsonl file in `folder`, blank lines skipped."""
  rows = []
  for path in glob.glob(os.path.join(folder, 'dead_letters-*.jsonl')):
    with open(path, encoding='utf-8') as f:
      rows += [json.loads(line) for line in f if line.strip()]
  return rows


@pytest.fixture
def snapshot() -> Callable[..., dict[str, str]]:
  """snapshot(folder): every file under the folder with a hash of its bytes, to show a run left it as it was."""
  return _snapshot


@pytest.fixture
def read_dead_letters() -> Callable[[str], list[dict]]:
  """read_dead_letters(folder): the dead letters a run wrote to its dead-letter folder."""
  return _dead_letters
