"""Where a command's output goes: our own lines on the console, the full log in a file.

TensorFlow writes its start-up lines ("All log messages before
absl::InitializeLog()", "Could not find cuda drivers", "failed call to cuInit"
on a machine without a GPU) from C++ straight to file descriptor 2 while its
libraries load, before it reads TF_CPP_MIN_LOG_LEVEL. Nothing in Python can
turn them off, so `start` points descriptor 2 at the log file before
TensorFlow is imported, and gives Python's `sys.stderr` the console back. What
the libraries print, and Python logging at INFO from our code and Beam, goes to
the file; the console gets the log records of our own modules, one line each.
Tracebacks go to the file only: a library's error (Beam logs the error that
fails a run, with its traceback, before it raises it) is the error the run
reports in one line at its end (`failure`), and an uncaught exception prints
one line too. DirectRunner worker processes inherit descriptor 2 and the
environment, so their start-up lines land in the same file. `--verbose` keeps
everything on the console, as before.

`start` runs once, first thing in the `python -m pipelines.run` process,
and `settle` moves the file beside a local output once the run passed preflight;
`pipelines.run.main` called in-process (tests, other code) leaves logging as
the caller set it.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import shutil
import sys
import tempfile
from typing import Optional, Sequence

from pipelines import ROOT

# TensorFlow's C++ INFO and WARNING lines (CPU instruction sets, oneDNN notes). Errors stay. Set before
# TensorFlow is imported; worker processes inherit it (the container image sets the same for Dataflow's).
TF_CPP_MIN_LOG_LEVEL = '2'
# The folder of the log files under a local --output, beside _watch and _estimates.
LOGS_FOLDER = '_logs'
# Our top-level packages: log records from their modules are our own lines.
_OURS = tuple(os.path.join(ROOT, package) + os.sep for package in ('pipelines', 'transforms', 'models'))
_FORMAT = '%(asctime)s %(levelname)s %(name)s: %(message)s'
# A log record's attribute: False keeps it off the console (a traceback already told in one line there).
_CONSOLE = 'on_console'

_started = False
_path: Optional[str] = None


def path() -> Optional[str]:
  """The log file of this process, once `start` has opened one (not with --verbose)."""
  return _path


def started() -> bool:
  """Whether `start` has set up this process's logging."""
  return _started


class _OurLines(logging.Filter):
  """Records logged by our modules, except those meant for the file alone (`failure`)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.pathname.startswith(_OURS) and getattr(record, _CONSOLE, True)


class _ConsoleFormat(logging.Formatter):
  """A progress line as it is; a warning or an error says so. Never a traceback: it is in the file."""

  def format(self, record: logging.LogRecord) -> str:
    text = record.getMessage()
    return text if record.levelno == logging.INFO else f'{record.levelname.lower()}: {text}'


def failure(error: BaseException, message: str = 'the run failed') -> None:
  """Logs `error` with its traceback to the log file only: the console gets the one line the caller
  prints. Outside a `start`ed process (tests, other code) it logs as the caller set logging up."""
  logging.getLogger(__name__).error(message, exc_info=(type(error), error, error.__traceback__),
                                    extra={_CONSOLE: False})


def _uncaught(kind: type, error: BaseException, trace) -> None:
  """An exception nothing caught: its traceback to the file, one line to the console."""
  if issubclass(kind, KeyboardInterrupt):
    sys.__excepthook__(kind, error, trace)
    return
  logging.getLogger(__name__).critical('uncaught exception', exc_info=(kind, error, trace), extra={_CONSOLE: False})
  first = (str(error).strip().splitlines() or [''])[0]
  print(f'error: unexpected {kind.__name__}: {first}\nlog: {_path}', file=sys.stderr, flush=True)


def _drop_beam_memory_notice(record: logging.LogRecord) -> bool:
  """Beam's RunInference warns "Resource module is not available" at every model load when `torch`
  is not installed: an optional import of torch shares a try block with `resource`
  (apache_beam/ml/inference/base.py). It only means Beam's model-memory metric reads 0."""
  return not (record.pathname.endswith(os.path.join('apache_beam', 'ml', 'inference', 'base.py'))
              and str(record.msg).startswith('Resource module is not available'))


def _verbose(argv: Sequence[str]) -> bool:
  """--verbose (or --help), read before Beam parses the flags: Beam's parser logs through the root
  logger, which would give it a handler before `start` has chosen where the log goes."""
  parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  parser.add_argument('--verbose', nargs='?', const='true', default='false')
  parser.add_argument('-h', '--help', action='store_true')
  flags, _ = parser.parse_known_args(list(argv))
  return flags.help or flags.verbose.lower() in ('true', '1', 'yes')


def log_folder(output: Optional[str]) -> str:
  """OUTPUT/_logs for a local folder --output; else (gs://, bq://, a database URL) the system's temporary folder."""
  if output and '://' not in output:
    return os.path.join(output, LOGS_FOLDER)
  return os.path.join(tempfile.gettempdir(), 'batch-inference-logs')


def start(argv: Sequence[str]) -> Optional[str]:
  """Sends library output to a log file and our own lines to the console; returns the file.

  The file starts in the system's temporary folder: the flags are not checked
  yet, and a run refused before it starts leaves nothing in its --output.
  `settle` moves it beside the output once the run passed preflight. Call before
  TensorFlow (or anything that loads it) is imported. With --verbose, or --help,
  only sets TF_CPP_MIN_LOG_LEVEL's default and logs to the console as before.
  """
  global _path, _started
  if _started:
    return _path
  _started = True
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', TF_CPP_MIN_LOG_LEVEL)
  logging.getLogger().addFilter(_drop_beam_memory_notice)
  # Beam's "Converting string literal type hint to Any", once per annotated transform at construction.
  logging.getLogger('apache_beam.typehints.native_type_compatibility').setLevel(logging.WARNING)
  if _verbose(argv):
    logging.basicConfig(level=logging.INFO, format=_FORMAT)
    return None
  folder = log_folder(None)
  os.makedirs(folder, exist_ok=True)
  now = datetime.datetime.now(datetime.timezone.utc)
  log_path = os.path.join(folder, f'{now:%Y%m%dT%H%M%SZ}-{os.getpid()}.log')
  sys.stdout.flush()
  sys.stderr.flush()
  console = os.fdopen(os.dup(2), 'w', buffering=1, encoding=sys.stderr.encoding, errors='backslashreplace')
  _point_stderr_at(log_path)  # C and C++ writes to stderr, this process's and its children's
  sys.stderr = console  # Python's: our messages, tracebacks
  to_console = logging.StreamHandler(console)
  to_console.setLevel(logging.INFO)
  to_console.addFilter(_OurLines())
  to_console.setFormatter(_ConsoleFormat('%(message)s'))
  root = logging.getLogger()
  root.setLevel(logging.INFO)
  root.addHandler(_ToFile(log_path))
  root.addHandler(to_console)
  logging.captureWarnings(True)  # a library's Python warnings go to the file, not the console
  sys.excepthook = _uncaught
  _path = log_path
  return log_path


def settle(output: Optional[str]) -> None:
  """Moves the log file to OUTPUT/_logs once a run with a local folder --output has passed preflight."""
  global _path
  folder = log_folder(output)
  if _path is None or os.path.dirname(_path) == folder or folder == log_folder(None):
    return
  os.makedirs(folder, exist_ok=True)
  moved = os.path.join(folder, os.path.basename(_path))
  sys.stderr.flush()
  shutil.copyfile(_path, moved)  # the output may be on another file system than the temporary folder
  _point_stderr_at(moved)
  for handler in logging.getLogger().handlers:
    if isinstance(handler, _ToFile):
      handler.move(moved)
  os.remove(_path)
  _path = moved


def _point_stderr_at(log_path: str) -> None:
  log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  os.dup2(log_fd, 2)
  os.close(log_fd)


class _ToFile(logging.FileHandler):
  """The log file's handler: every record, in full."""

  def __init__(self, log_path: str):
    super().__init__(log_path, encoding='utf-8')
    self.setFormatter(logging.Formatter(_FORMAT))

  def move(self, log_path: str) -> None:
    self.acquire()
    try:
      self.close()
      self.baseFilename = log_path
      self.stream = self._open()
    finally:
      self.release()
