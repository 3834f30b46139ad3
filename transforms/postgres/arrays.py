"""List columns in PostgreSQL: an embedding as real[] or pgvector's vector(n), a classifier's top classes as text[].

The job's list columns are typed once, when the table is made: a fixed-length
float list (an embedding) becomes `vector(n)` where the pgvector extension is
installed in the database (`has_pgvector`), else `real[]`; other lists become
arrays of their element's type. COPY takes text and pyarrow's CSV writer takes
no lists, so each list column is rendered as the text its column parses
(`array_text`), for the whole batch in pyarrow compute, never per row:
`{0.5,-1}` for an array, `[0.5,-1]` for a vector, text elements quoted and
escaped (`{"a \\"b\\"","c"}`).

The tests' PostgreSQL (Debian 12's packages) has no pgvector, so the
`vector(n)` branch is tested only as far as it can be without the extension:
the DDL choice (`tables.pg_type`), an existing column's check
(`tables.accepts`) and the vector text (`array_text`); `real[]` and `text[]`
are tested against the real server.
"""

from __future__ import annotations

from typing import AbstractSet, Optional

import pyarrow as pa
import pyarrow.compute as pc

# pgvector stores at most this many dimensions in a vector column; a longer embedding stays real[].
VECTOR_MAX_DIMENSIONS = 16000


def is_list(kind: pa.DataType) -> bool:
  return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def vector_dimensions(kind: pa.DataType) -> Optional[int]:
  """The length of a fixed-size float list, which a pgvector column can hold; None for any other type."""
  if (pa.types.is_fixed_size_list(kind) and pa.types.is_floating(kind.value_type)
      and kind.list_size <= VECTOR_MAX_DIMENSIONS):
    return kind.list_size
  return None


def has_pgvector(cursor) -> bool:
  """Whether the pgvector extension is installed in the connected database (then embeddings are vector(n))."""
  cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')")
  return bool(cursor.fetchone()[0])


def vector_columns(cursor, schema: str, table: str) -> frozenset[str]:
  """The table's columns of pgvector's type, whose COPY text is [..] where an array's is {..}."""
  cursor.execute('SELECT a.attname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid '
                 "WHERE a.attrelid = to_regclass(%s) AND t.typname = 'vector' AND a.attnum > 0 "
                 'AND NOT a.attisdropped', (f'"{schema}"."{table}"',))
  return frozenset(r[0] for r in cursor.fetchall())


def array_text(batch: pa.RecordBatch, vectors: AbstractSet[str] = frozenset()) -> pa.RecordBatch:
  """The batch with each list column as the text of a PostgreSQL array (a pgvector vector for `vectors`);
  a null list stays null. Other columns are unchanged (and a batch without lists is returned as it is)."""
  for index, field in enumerate(batch.schema):
    if is_list(field.type):
      text = _literals(batch.column(index), field.name in vectors)
      batch = batch.set_column(index, pa.field(field.name, pa.string(), field.nullable), text)
  return batch


def _literals(column: pa.Array, vector: bool) -> pa.Array:
  if pa.types.is_fixed_size_list(column.type):
    column = column.cast(pa.list_(column.type.value_type))
  values = column.values  # with `offsets`, also right for a slice of a longer array
  if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
    escaped = pc.replace_substring(pc.replace_substring(values, '\\', '\\\\'), '"', '\\"')
    elements = pc.binary_join_element_wise('"', escaped, '"', '')
  else:
    elements = values.cast(pa.string())  # the shortest text that reads back as the same float
  elements = elements.fill_null('NULL')  # an array's null element; a vector refuses it, and the row is refused
  offsets = column.offsets
  if offsets.offset:  # a slice's: from_arrays takes a null mask only with offsets that start at their buffer's start
    offsets = pa.array(offsets.to_numpy())
  lists = pa.ListArray.from_arrays(offsets, elements, mask=column.is_null() if column.null_count else None)
  joined = pc.binary_join(lists, ',')
  opening, closing = ('[', ']') if vector else ('{', '}')
  return pc.binary_join_element_wise(opening, joined, closing, '')
