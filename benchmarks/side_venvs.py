"""The benchmark-only virtualenvs: the project's pinned stack plus one tool on top (Ray, tf.Transform, sentence-transformers).

Each sees the project virtualenv's packages (a .pth file) and installs only its own
requirements, so the tool never changes the stack. If the tool cannot be installed here,
the reason is kept in VENV/UNAVAILABLE and the benchmark reports it instead of a number.
`./launch.sh bench` makes them (`python -m benchmarks.side_venvs`) before it runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from typing import Optional

# Where each side virtualenv lives, and what it adds (benchmarks.run's --ray_venv and --tft_venv).
SIDE_VENVS = (
    ('build/bench/ray-venv', 'benchmarks/requirements-ray.txt'),
    ('build/bench/tft-venv', 'benchmarks/requirements-tft.txt'),
    ('build/bench/st-venv', 'benchmarks/requirements-st.txt'),
)


def _purelib(python: str) -> str:
  return subprocess.run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                        capture_output=True, text=True, check=True).stdout.strip()


def ensure(path: str, requirements: str, stack_requirements: str = 'requirements.txt') -> bool:
  """Makes the side virtualenv at `path` unless it is current; True if it holds the tool.

  Current means made from the same `requirements` and project `stack_requirements`;
  anything else is removed and made again.
  """
  stamp = os.path.join(path, '.installed')
  digest = hashlib.sha256()
  for name in (requirements, stack_requirements):
    with open(name, 'rb') as f:
      digest.update(f.read())
  want = digest.hexdigest()
  if os.path.isfile(stamp):
    with open(stamp, encoding='utf-8') as f:
      if f.read().strip() == want:
        return True
  shutil.rmtree(path, ignore_errors=True)
  venv.create(path, with_pip=True)
  python = os.path.join(path, 'bin', 'python')
  with open(os.path.join(_purelib(python), '_project_stack.pth'), 'w', encoding='utf-8') as f:
    f.write(sysconfig.get_paths()['purelib'] + '\n')
  log = os.path.join(path, 'install.log')
  with open(log, 'w', encoding='utf-8') as f:
    installed = subprocess.run([python, '-m', 'pip', 'install', '--quiet', '-r', requirements],
                               stdout=f, stderr=subprocess.STDOUT, check=False).returncode == 0
  if installed:
    with open(stamp, 'w', encoding='utf-8') as f:
      f.write(want + '\n')
    return True
  with open(log, encoding='utf-8') as f:
    errors = [line.rstrip('\n') for line in f if line.startswith('ERROR')]
  with open(requirements, encoding='utf-8') as f:
    wanted = ' '.join(line.strip() for line in f if line.strip() and not line.startswith('#'))
  shutil.rmtree(os.path.join(path, 'bin'))
  with open(os.path.join(path, 'UNAVAILABLE'), 'w', encoding='utf-8') as f:
    f.write(f'pip could not install {wanted} here: {errors[-1][:200] if errors else "see " + log}\n')
  return False


def main(argv: Optional[list[str]] = None) -> int:
  """Makes every side virtualenv, or those whose tool is named (`ray`, `tft`, `st`)."""
  names = sys.argv[1:] if argv is None else argv
  for path, requirements in SIDE_VENVS:
    if not names or any(path.endswith(f'/{name}-venv') for name in names):
      ensure(path, requirements)
  return 0


if __name__ == '__main__':
  sys.exit(main())
