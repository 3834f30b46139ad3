"""A real PostgreSQL server for the tests: initdb into a temporary folder, a unix socket there, stopped at the end.

The server binaries come from the Debian `postgresql` package (`./launch.sh
test` installs it where missing). PostgreSQL refuses to run as root, so under
root the folder is handed to the unprivileged `nobody` user and the server runs
as that user (`runuser`). The tests connect over the socket as the `postgres`
superuser, trusted locally (the `app` role needs its password); nothing
listens on a network port.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from typing import Iterator, Optional

import pytest


# Who may connect over the socket: the `app` role only with its password (so a test can tell that the
# job took it from libpq's environment), every other role trusted.
PASSWORD_ROLE = 'app'
HBA = f"""local all {PASSWORD_ROLE} scram-sha-256
local all all trust
"""


def binaries() -> Optional[str]:
  """The folder holding initdb and pg_ctl, newest PostgreSQL first; None when not installed."""
  found = shutil.which('initdb')
  if found:
    return os.path.dirname(found)
  folders = sorted(glob.glob('/usr/lib/postgresql/*/bin'), key=lambda p: int(p.split('/')[-2]), reverse=True)
  return next((f for f in folders if os.path.exists(os.path.join(f, 'initdb'))), None)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@dataclasses.dataclass
class PostgresServer:
  folder: str
  port: int
  bin: str
  as_user: Optional[str]

  def url(self, table: str, *, database: str = 'postgres', user: str = 'postgres') -> str:
    """A job --output URL for `table` in this server."""
    return f'postgresql://{user}@/{database}?host={self.folder}&port={self.port}&table={table}'

  @property
  def conninfo(self) -> str:
    return f'host={self.folder} port={self.port} user=postgres dbname=postgres'

  def connect(self, **kwargs):
    import psycopg
    return psycopg.connect(self.conninfo, **kwargs)

  def _run(self, *argv: str, **kwargs) -> subprocess.CompletedProcess:
    prefix = ['runuser', '-u', self.as_user, '--'] if self.as_user else []
    return subprocess.run(prefix + list(argv), check=True, capture_output=True, text=True, **kwargs)

  def stop(self) -> None:
    with contextlib.suppress(subprocess.CalledProcessError):
      self._run(os.path.join(self.bin, 'pg_ctl'), '-D', os.path.join(self.folder, 'data'), '-m', 'immediate',
                '-w', 'stop')


@contextlib.contextmanager
def running_server(*, durable: bool = False) -> Iterator[PostgresServer]:
  """Starts a fresh server in a new temporary folder; stops it and deletes the folder on exit.

  Args:
    durable: keep PostgreSQL's default fsync and full-page writes (benchmarks);
      tests turn them off, as nothing they write must survive a power cut.
  """
  folder_bin = binaries()
  if folder_bin is None:
    pytest.skip('PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql, '
                'which ./launch.sh test does')
  folder = tempfile.mkdtemp(prefix='batch-inference-pg-')
  as_user = 'nobody' if os.geteuid() == 0 else None
  if as_user:
    shutil.chown(folder, as_user)
  server = PostgresServer(folder, _free_port(), folder_bin, as_user)
  data = os.path.join(folder, 'data')
  settings = ['-c', f'unix_socket_directories={folder}', '-c', "listen_addresses=''", '-p', str(server.port),
              '-c', 'max_connections=40', '-c', 'shared_buffers=128MB']
  if not durable:
    settings += ['-c', 'fsync=off', '-c', 'full_page_writes=off', '-c', 'synchronous_commit=off']
  try:
    server._run(os.path.join(folder_bin, 'initdb'), '-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8',
                '--no-instructions', cwd=folder)
    with open(os.path.join(data, 'pg_hba.conf'), 'w', encoding='utf-8') as f:
      f.write(HBA)
    server._run(os.path.join(folder_bin, 'pg_ctl'), '-D', data, '-l', os.path.join(folder, 'server.log'), '-w',
                '-t', '60', '-o', ' '.join(settings), 'start', cwd=folder)
    yield server
  finally:
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope='session')
def postgres_server() -> Iterator[PostgresServer]:
  """One real PostgreSQL server for the test session."""
  with running_server() as server:
    yield server
