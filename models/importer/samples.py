"""Sample files the import reads (`--data`, `--expected`), read and validated as the pipeline reads input."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from models.bundle import BundleError
from transforms.rows.dead_letters import Rejected
from transforms.features.spec import FeatureSpec
from transforms.files.readers import infer_format, open_file, read_file
from transforms.rows.validation import validate


@dataclasses.dataclass(frozen=True)
class Sample:
  """What the files held: raw batches, the typed rows that passed validation, and the rows rejected."""
  raw: tuple[pa.RecordBatch, ...]
  valid: tuple[pa.RecordBatch, ...]
  rejected: tuple[tuple[str, str], ...]  # (`file:row`, reason) of each rejected row

  def valid_rows(self) -> pa.RecordBatch:
    """Every valid row in one batch; columns a file lacks or types that differ by file are unified."""
    table = pa.concat_tables([pa.Table.from_batches([b]) for b in self.valid], promote_options='permissive')
    return table.combine_chunks().to_batches()[0]


def read_validated(pattern: str, spec: FeatureSpec, *, flag: str, file_format: Optional[str] = None,
                   columns: Optional[Sequence[str]] = None, batch_size: int = 8192) -> Sample:
  """Reads every file `pattern` matches; raises unless some row passes validation against `spec`."""
  matches = FileSystems.match([pattern])[0].metadata_list
  if not matches:
    raise BundleError(f'{flag} {pattern} matches no files')
  raw, valid, rejected = [], [], []
  for m in sorted(matches, key=lambda m: m.path):
    fmt = file_format or infer_format(m.path)
    with open_file(m.path, fmt) as f:
      for item in read_file(f, m.path, fmt, batch_size=batch_size, columns=columns):
        if isinstance(item, Rejected):
          letters = item.letters
        else:
          raw.append(item)
          good, letters = validate(item, spec)
          if good.num_rows:
            valid.append(good)
        if letters is not None:
          rejected += [(f'{s}:{r}', reason) for s, r, reason in zip(
              letters.column('source').to_pylist(), letters.column('row').to_pylist(),
              letters.column('reason').to_pylist())]
  if not valid:
    raise BundleError(f'{flag} {pattern}: no row passed validation against the feature description '
                      f'({len(rejected)} rejected{", first " + ": ".join(rejected[0]) if rejected else ""}); '
                      'check the column names and types')
  return Sample(tuple(raw), tuple(valid), tuple(rejected))
