"""The kinds of output a run can write to, and the one place where an output's URI picks its kind.

Each kind (`transforms.destination.Destination`) knows its flags, checks, write,
publish and clean-up; the rest of the job asks the destination, never which
kind it is. A new kind of output is one more class here.
"""

from __future__ import annotations

from transforms.bigquery.destination import BigQueryTable
from transforms.destination import Destination
from transforms.files.destination import FileOutput
from transforms.postgres.destination import PostgresTable

# The first kind that claims a URI takes it; files last, as they take any path.
KINDS: tuple[type[Destination], ...] = (BigQueryTable, PostgresTable, FileOutput)


def kind_of(uri: str) -> type[Destination]:
  """The kind of output `uri` names (a folder, bq://..., postgresql://...)."""
  return next(kind for kind in KINDS if kind.claims(uri))
