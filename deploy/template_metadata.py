"""Flex Template metadata generated from `BatchInferenceOptions`, so each flag is declared once.

`python -m deploy.template_metadata --write` regenerates the committed
`deploy/flex-template/metadata.json`; a test fails when the two differ. Only
our own flags are listed: standard Beam options (`sdk_container_image`,
`dataflow_service_options`, ...) pass through a Flex Template launch without
being declared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional, Sequence

from pipelines.options import REQUIRED_FLAGS, BatchInferenceOptions, parse_bool

METADATA_PATH = os.path.join('deploy', 'flex-template', 'metadata.json')
TEMPLATE_NAME = 'Batch inference'
TEMPLATE_DESCRIPTION = (
    'Predicts every row of Parquet, CSV, JSON Lines, TFRecord or Avro files with a TensorFlow model '
    'bundle; writes predictions and a dead-letter file with the reason for each rejected row.')


class _FlagRecorder(argparse.ArgumentParser):
  """An argument parser that remembers how each flag was declared."""

  def __init__(self):
    super().__init__(add_help=False)
    self.declared: list[tuple[str, dict[str, Any]]] = []

  def add_argument(self, *args, **kwargs):
    self.declared.append((args[0].lstrip('-'), kwargs))
    return super().add_argument(*args, **kwargs)


def _value_regex(declaration: dict[str, Any]) -> Optional[str]:
  """What the launch form accepts for a flag, checked before the launcher starts."""
  if declaration.get('choices'):
    return '^(' + '|'.join(declaration['choices']) + ')$'
  kind = declaration.get('type')
  if kind is int:
    return '^[0-9]+$'
  if kind is float:
    return r'^[0-9]*\.?[0-9]+$'
  if kind is parse_bool:
    return '^(true|false)$'
  return None


def parameters() -> list[dict[str, Any]]:
  """One Flex Template parameter per flag of `BatchInferenceOptions`, in declaration order."""
  recorder = _FlagRecorder()
  BatchInferenceOptions._add_argparse_args(recorder)  # pylint: disable=protected-access
  params = []
  for name, declaration in recorder.declared:
    param = {
        'name': name,
        'label': name.replace('_', ' ').capitalize(),
        'helpText': ' '.join(declaration.get('help', '').split()),
        'isOptional': name not in REQUIRED_FLAGS,
    }
    regex = _value_regex(declaration)
    if regex:
      param['regexes'] = [regex]
    params.append(param)
  return params


def metadata() -> dict[str, Any]:
  return {'name': TEMPLATE_NAME, 'description': TEMPLATE_DESCRIPTION, 'parameters': parameters()}


def render() -> str:
  return json.dumps(metadata(), indent=2) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m deploy.template_metadata', description=__doc__)
  parser.add_argument('--write', action='store_true', help=f'Write {METADATA_PATH} instead of printing.')
  args = parser.parse_args(argv)
  if args.write:
    with open(METADATA_PATH, 'w', encoding='utf-8') as f:
      f.write(render())
    print(f'wrote {METADATA_PATH}')
  else:
    sys.stdout.write(render())
  return 0


if __name__ == '__main__':
  sys.exit(main())
