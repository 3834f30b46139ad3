"""Renders the Kubernetes manifests from launch.sh settings; standard library only (no virtualenv).

  python3 deploy/render.py manifest deploy/k8s/job.yaml --set IMAGE=... --arg=--input=gs://...

`manifest` fills a Kubernetes manifest's ${NAME} placeholders and appends the
job's flags to its container args. (Cloud Scheduler's launch request is
rendered by settings.py, beside the launch environment it holds.)
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from typing import Optional, Sequence


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
  pairs = {}
  for item in items:
    name, sep, value = item.partition('=')
    if not sep or not name:
      raise SystemExit(f'error: {what} {item!r} is not NAME=VALUE')
    pairs[name] = value
  return pairs


def manifest(template_text: str, values: dict[str, str], args: Sequence[str]) -> str:
  """The manifest with placeholders filled and each of `args` on its own quoted line."""
  try:
    text = string.Template(template_text).substitute(values)
  except KeyError as e:
    raise SystemExit(f'error: the manifest needs {e.args[0]}; set it in the environment or .env') from e
  lines = text.rstrip('\n').split('\n')
  indent = len(lines[-1]) - len(lines[-1].lstrip())
  if not lines[-1].lstrip().startswith('- '):
    raise SystemExit('error: a manifest must end with its container args list')
  lines += [' ' * indent + '- ' + json.dumps(arg) for arg in args]
  return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='deploy/render.py', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  verbs = parser.add_subparsers(dest='verb', required=True)
  kube = verbs.add_parser('manifest', help='a Kubernetes manifest with its settings filled in')
  kube.add_argument('path')
  kube.add_argument('--set', action='append', default=[], help='placeholder NAME=VALUE')
  kube.add_argument('--arg', action='append', default=[], help='a flag appended to the container args')
  args = parser.parse_args(argv)
  with open(args.path, encoding='utf-8') as f:
    sys.stdout.write(manifest(f.read(), _pairs(args.set, '--set'), args.arg))
  return 0


if __name__ == '__main__':
  sys.exit(main())
