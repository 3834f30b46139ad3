"""Where a command's output goes: our own lines on the console, the full log in a file.

TensorFlow writes its start-up lines ("All log messages before
absl::InitializeLog()", "Could not find cuda drivers", "failed call to cuInit"
on a machine without a GPU) from C++ straight to file descriptor 2 while its
libraries load, before it reads TF_CPP_MIN_LOG_LEVEL. Nothing in Python can
turn them off, so `start` points descriptor 2 at the log file before
TensorFlow is imported, and gives Python's `sys.stderr` the console back. What
the libraries print, and Python logging at INFO from our code and Beam, goes to
the file; the console gets the log records of our own modules and any
library's errors. DirectRunner worker processes inherit descriptor 2 and the
environment, so their start-up lines land in the same file. `--verbose` keeps
everything on the console, as before.

`start` runs once, first thing in the `python -m pipelines.run` process;
`pipelines.run.main` called in-process (tests, other code) leaves logging as
the caller set it.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import tempfile
from typing import Optional, Sequence

# TensorFlow's C++ INFO and WARNING lines (CPU instruction sets, oneDNN notes). Errors stay. Set before
# TensorFlow is imported; worker processes inherit it (the container image sets the same for Dataflow's).
TF_CPP_MIN_LOG_LEVEL = '2'
# The folder of the log files under a local --output, beside _watch and _estimates.
LOGS_FOLDER = '_logs'
# Our top-level packages: log records from their modules are our own lines.
_OURS = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), package) + os.sep
              for package in ('pipelines', 'transforms', 'models'))
# Outputs that are not a local folder: their log file goes to the system's temporary folder.
_REMOTE = ('gs://', 'bq://', 'postgresql://', 'postgres://', 'cloudsql://')
_FORMAT = '%(asctime)s %(levelname)s %(name)s: %(message)s'

_started = False
_path: Optional[str] = None


def path() -> Optional[str]:
  """The log file of this process, once `start` has opened one (not with --verbose)."""
  return _path


def started() -> bool:
  """Whether `start` has set up this process's logging."""
  return _started


class _OurLines(logging.Filter):
  """Records logged by our modules, and any library's errors."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or record.pathname.startswith(_OURS)


class _ConsoleFormat(logging.Formatter):
  """A progress line as it is; a warning or an error says so."""

  def format(self, record: logging.LogRecord) -> str:
    text = super().format(record)
    return text if record.levelno == logging.INFO else f'{record.levelname.lower()}: {text}'


def _drop_beam_memory_notice(record: logging.LogRecord) -> bool:
  """Beam's RunInference warns "Resource module is not available" at every model load when `torch`
  is not installed: an optional import of torch shares a try block with `resource`
  (apache_beam/ml/inference/base.py). It only means Beam's model-memory metric reads 0."""
  return not (record.pathname.endswith(os.path.join('apache_beam', 'ml', 'inference', 'base.py'))
              and str(record.msg).startswith('Resource module is not available'))


def _flags(argv: Sequence[str]) -> argparse.Namespace:
  """--verbose, --output and the modes that write no run, read before Beam parses the flags."""
  parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  parser.add_argument('--verbose', nargs='?', const='true', default='false')
  parser.add_argument('--output', default=None)
  parser.add_argument('--preflight_only', nargs='?', const='true', default='false')
  parser.add_argument('-h', '--help', action='store_true')
  flags, _ = parser.parse_known_args(list(argv))
  flags.verbose = flags.verbose.lower() in ('true', '1', 'yes')
  flags.preflight_only = flags.preflight_only.lower() in ('true', '1', 'yes')
  return flags


def log_folder(output: Optional[str], writes_run: bool = True) -> str:
  """OUTPUT/_logs for a local folder --output of a run; else the system's temporary folder."""
  if output and writes_run and not output.startswith(_REMOTE):
    return os.path.join(output, LOGS_FOLDER)
  return os.path.join(tempfile.gettempdir(), 'batch-inference-logs')


def _open(folder: str) -> str:
  now = datetime.datetime.now(datetime.timezone.utc)
  name = f'{now:%Y%m%dT%H%M%SZ}-{os.getpid()}.log'
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError:  # an output folder we may not create: preflight will say so
    folder = log_folder(None)
    os.makedirs(folder, exist_ok=True)
  return os.path.join(folder, name)


def start(argv: Sequence[str]) -> Optional[str]:
  """Sends library output to the log file and our own lines to the console; returns the file.

  Call before TensorFlow (or anything that loads it) is imported. With --verbose,
  or --help, only sets TF_CPP_MIN_LOG_LEVEL's default and logs as before.
  """
  global _path, _started
  if _started:
    return _path
  _started = True
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', TF_CPP_MIN_LOG_LEVEL)
  logging.getLogger().addFilter(_drop_beam_memory_notice)
  # Beam's "Converting string literal type hint to Any", once per annotated transform at construction.
  logging.getLogger('apache_beam.typehints.native_type_compatibility').setLevel(logging.WARNING)
  flags = _flags(argv)
  if flags.verbose or flags.help:
    logging.basicConfig(level=logging.INFO, format=_FORMAT)
    return None
  log_path = _open(log_folder(flags.output, writes_run=not flags.preflight_only))
  sys.stdout.flush()
  sys.stderr.flush()
  console = os.fdopen(os.dup(2), 'w', buffering=1, encoding=sys.stderr.encoding, errors='backslashreplace')
  log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  os.dup2(log_fd, 2)  # C and C++ writes to stderr, this process's and its children's
  os.close(log_fd)
  sys.stderr = console  # Python's: our messages, tracebacks
  to_console = logging.StreamHandler(console)
  to_console.setLevel(logging.INFO)
  to_console.addFilter(_OurLines())
  to_console.setFormatter(_ConsoleFormat('%(message)s'))
  to_file = logging.FileHandler(log_path, encoding='utf-8')
  to_file.setFormatter(logging.Formatter(_FORMAT))
  root = logging.getLogger()
  root.setLevel(logging.INFO)
  root.addHandler(to_file)
  root.addHandler(to_console)
  logging.captureWarnings(True)  # a library's Python warnings go to the file, not the console
  _path = log_path
  return log_path
