"""Document files as a text model's input: every file a glob matches, local or gs://, read, turned into text
(`transforms.text.documents`) and cut into chunks (`transforms.text.chunks`), one row per chunk.

A chunk's row holds `document` (the file's URI), `chunk` (its number in the document,
from 0), `page` (a PDF's page, from 1; null otherwise), `start` and `end` (its
characters in the document's text), `text`, and `key`, `document#chunk`: the run's key
unless --key_column names another. The text step then tokenises each chunk as any text
row, so an embedding leads back to its document, page and characters.

A document that gives no chunk is one dead letter keyed by its URI (stage `read`), never
a failed batch. The run's rows read are the chunks made and the documents refused, so
read = predicted + rejected holds; the counters `documents_read`, `documents_rejected`
and `chunks_made` say how many of each, and `files_read` counts every document.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterator, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.images import listing
from transforms.rows import counters
from transforms.rows import dead_letters as dl
from transforms.rows.dead_letters import DEAD_LETTERS, DOCUMENT_TOO_LARGE, ROW, SOURCE, UNREADABLE_FILE
from transforms.text import chunks as chunks_
from transforms.text import documents
from transforms.text.spec import TextSpec

DOCUMENT_FORMAT = 'documents'
KEY, DOCUMENT, CHUNK, PAGE, START, END, TEXT = 'key', 'document', 'chunk', 'page', 'start', 'end', 'text'
SCHEMA = pa.schema([(KEY, pa.string()), (DOCUMENT, pa.string()), (CHUNK, pa.int64()), (PAGE, pa.int64()),
                    (START, pa.int64()), (END, pa.int64()), (TEXT, pa.string())])
# What a chunk's row carries to the predictions beside its key: where it came from.
PROVENANCE = (DOCUMENT, CHUNK, PAGE, START, END)
# The tag of each document read or refused, one element each (the run's files_read).
FILES = 'files'
# Documents per listed batch: each is read whole by one worker, so a batch is a few hundred.
LISTED_ROWS = 256


def is_document_glob(pattern: str) -> bool:
  """Whether a text model's --input names document files by their extension (else it is read as a table)."""
  return listing.extension_of(pattern.rstrip('*')) in documents.EXTENSIONS


class _ReadDocumentsFn(beam.DoFn):
  """Listed files → RecordBatches of chunk rows; documents that give none → dead letters."""

  def __init__(self, spec: TextSpec, tokenizer_path: str, batch_rows: int):
    self._spec = spec
    self._path = tokenizer_path
    self._batch_rows = batch_rows
    self._tokenizer = None
    self._chunking = None
    self._read = counters.counter('documents_read')
    self._rejected = counters.counter('documents_rejected')
    self._chunks = counters.counter('chunks_made')
    self._rows = counters.counter('rows_read')

  def setup(self):
    with FileSystems.open(self._path, compression_type='uncompressed') as f:
      self._tokenizer = chunks_.chunking_tokenizer(f.read().decode('utf-8'))
    self._chunking = chunks_.chunking_of(self._spec, self._tokenizer)

  def process(self, listed: pa.RecordBatch) -> Iterator:
    rows: list[dict[str, Any]] = []
    for uri, size in zip(listed.column(listing.SCHEMA.names[0]).to_pylist(),
                         listed.column(listing.SCHEMA.names[1]).to_pylist()):
      try:
        made = self._chunk_rows(uri, size)
      except documents.DocumentError as e:
        yield beam.pvalue.TaggedOutput(DEAD_LETTERS, self._dead_letter(uri, size, e.code, str(e)))
      else:
        self._read.inc()
        self._chunks.inc(len(made))
        self._rows.inc(len(made))
        rows += made
      yield beam.pvalue.TaggedOutput(FILES, uri)
      while len(rows) >= self._batch_rows:
        yield _batch(rows[:self._batch_rows])
        rows = rows[self._batch_rows:]
    if rows:
      yield _batch(rows)

  def _chunk_rows(self, uri: str, size: int) -> list[dict[str, Any]]:
    bound = self._spec.max_document_bytes
    if size > bound:
      raise documents.DocumentError(DOCUMENT_TOO_LARGE, f'{uri}: {size:,} bytes, over the {bound:,} text.json '
                                    'allows a document (max_document_bytes); split it, or raise the bound')
    try:
      with FileSystems.open(uri, compression_type='uncompressed') as f:
        data = f.read(bound + 1)
    except Exception as e:  # pylint: disable=broad-except  # gone since listed, or refused: each file system its own
      raise documents.DocumentError(UNREADABLE_FILE, f'{uri}: cannot read: {type(e).__name__}: {e}') from None
    if len(data) > bound:  # grown since it was listed
      raise documents.DocumentError(DOCUMENT_TOO_LARGE, f'{uri}: over the {bound:,} bytes text.json allows a '
                                    'document (max_document_bytes)')
    document = documents.extract(uri, data)
    made = [{KEY: f'{uri}#{c.number}', DOCUMENT: uri, CHUNK: c.number, PAGE: c.page, START: c.start, END: c.end,
             TEXT: document.text[c.start:c.end]}
            for c in chunks_.chunks(self._tokenizer, document, self._chunking)]
    if not made:  # text, but none the tokenizer keeps (control characters, say)
      raise documents.DocumentError(dl.EMPTY_DOCUMENT, f'{uri}: its text holds no token of the model\'s tokenizer')
    return made

  def _dead_letter(self, uri: str, size: int, code: str, reason: str) -> pa.RecordBatch:
    self._rejected.inc()
    self._rows.inc()
    letters = dl.from_records([json.dumps({DOCUMENT: uri, 'size_bytes': size})], source=uri, rows=[None], code=code,
                              reasons=[reason], keys=[uri])
    dl.count_rejections(letters)
    return letters


def _batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
  batch = pa.RecordBatch.from_pylist(rows, schema=SCHEMA)
  return pa.RecordBatch.from_arrays(
      batch.columns + [batch.column(DOCUMENT), pa.nulls(batch.num_rows, pa.int64())],
      names=SCHEMA.names + [SOURCE, ROW])


@dataclasses.dataclass(eq=False)
class ReadDocuments(beam.PTransform):
  """PBegin → `{'batches': chunk rows (SCHEMA), DEAD_LETTERS: documents that gave none, FILES: each document's
  URI}`, the documents spread across workers, each read by one."""
  pattern: str
  spec: TextSpec
  tokenizer_path: str
  batch_rows: int = 4096

  def __post_init__(self):
    super().__init__()

  def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
    # Every file the glob matches is a document: one of no format read here is a dead letter that says so.
    listed = pbegin | 'List' >> listing.ListFiles(self.pattern, extensions=None, batch_rows=LISTED_ROWS)
    read = listed | 'Read' >> beam.ParDo(_ReadDocumentsFn(self.spec, self.tokenizer_path, self.batch_rows)) \
        .with_output_types(pa.RecordBatch).with_outputs(DEAD_LETTERS, FILES, main='batches')
    return {'batches': read['batches'], DEAD_LETTERS: read[DEAD_LETTERS], FILES: read[FILES]}


@dataclasses.dataclass(frozen=True)
class DocumentFiles:
  """Document files as a run's input (module docstring): `spec` and `tokenizer_path` are the bundle's."""
  pattern: str
  spec: TextSpec
  tokenizer_path: str

  @property
  def tallies(self) -> dict[str, str]:
    return {'files': FILES}  # each document read or refused

  @property
  def snapshot_time(self) -> None:
    return None

  def read(self, columns: Sequence[str], batch_size: int) -> ReadDocuments:
    del columns  # a chunk's row has its own columns
    return ReadDocuments(self.pattern, self.spec, self.tokenizer_path, batch_size)

  def describe(self) -> dict[str, Any]:
    """What the manifest records: the glob and how documents are cut."""
    return {'kind': DOCUMENT_FORMAT, 'pattern': self.pattern, 'chunk': self.spec.to_dict().get('chunk'),
            'max_document_bytes': self.spec.max_document_bytes}
