"""The search command: fills the vector store from a job's published predictions, or finds the rows nearest to a
new text, embedded by the same bundle the job used (its tokenizer, model and text.json pooling), so a query
and the rows it is compared with are the same kind of vector.

    python -m pipelines.search --store=URI --from_predictions=OUTPUT        # after each night's run
    python -m pipelines.search --store=URI --model=BUNDLE --text="..." -k 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional, Sequence

import numpy as np

from models.bundle import BundleError, ModelBundle
from models.inference import EMBEDDING
from pipelines.search import store
from transforms.text import tokens
from transforms.text.prepare import read_tokenizer

# The run's bookkeeping columns: in the store, not worth a line of a search's answer.
NOT_SHOWN = frozenset({EMBEDDING, 'model_name', 'model_version', 'run_id', 'predicted_at'})


def embed_texts(bundle: ModelBundle, texts: Sequence[str]) -> np.ndarray:
  """The texts as the job embeds them: the bundle's tokenizer (cut at its max_tokens), model and pooling."""
  from models.handlers import load_predictor  # frameworks are heavy imports; only a text query needs one
  if bundle.text is None or bundle.outputs.kind != 'embedding':
    raise BundleError(f'{bundle.path}: a search embeds its text with a text embedding model (text.json, '
                      f'outputs.json kind "embedding"); this bundle\'s outputs are {bundle.outputs.kind}')
  tokenizer = read_tokenizer(bundle.tokenizer_path, bundle.text)
  features = tokens.pad(tokens.encode(tokenizer, list(texts)), np.arange(len(texts)), bundle.text,
                        tokens.pad_id(tokenizer))
  predictor = load_predictor(bundle.format, bundle.model_path, bundle.outputs, 'cpu', bundle.load_options,
                             bundle.inputs, text=bundle.text)
  return np.asarray(predictor.predict(features), np.float32)


def search(uri: str, vector: np.ndarray, k: int = 10) -> list[dict]:
  """The `k` published rows nearest to `vector`, nearest first, each with its cosine `distance`."""
  dataset = store.open_store(uri)
  width = dataset.schema.field(EMBEDDING).type.list_size
  if vector.shape[-1] != width:
    raise store.StoreError(f'the query has {vector.shape[-1]} dimensions, the store at {uri} holds {width}: embed '
                           'it with the bundle the job used')
  shown = [c for c in dataset.schema.names if c not in NOT_SHOWN]
  rows = store.nearest(dataset, vector, k, columns=shown).to_pylist()
  return [{**{c: r[c] for c in shown}, 'distance': r['_distance']} for r in rows]


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m pipelines.search', description=__doc__.split('\n')[0])
  parser.add_argument('--store', required=True, help='the vector store: a local folder or gs://BUCKET/PATH')
  parser.add_argument('--from_predictions', help='a published output folder: its Parquet predictions (with an '
                      'embedding column) replace the store\'s rows as its next version')
  parser.add_argument('--index_min_rows', type=int, default=store.INDEX_MIN_ROWS,
                      help='build the ANN index when the store holds at least this many rows (below: exact scans)')
  parser.add_argument('--model', help='the bundle the job ran: it embeds --text')
  parser.add_argument('--text', help='the text to find the nearest rows to')
  parser.add_argument('--vector', help='a JSON list of floats to search with, instead of --text')
  parser.add_argument('-k', type=int, default=10, help='how many rows to return')
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  try:
    if args.from_predictions:
      start = time.perf_counter()
      dataset = store.write_store(store.read_predictions(args.from_predictions), args.store,
                                  index_min_rows=args.index_min_rows)
      print(f'{args.store}: version {dataset.version} published, {dataset.count_rows():,} rows, '
            f'{"indexed" if dataset.describe_indices() else "no index (exact scans)"}, '
            f'{time.perf_counter() - start:.1f} s', file=sys.stderr)
      return 0
    if (args.text is None) == (args.vector is None) or (args.text is not None and not args.model):
      parser.error('give --from_predictions, or --text with --model, or --vector')
    vector = (embed_texts(ModelBundle.load(args.model), [args.text])[0] if args.text is not None
              else np.asarray(json.loads(args.vector), np.float32))
    for row in search(args.store, vector, args.k):
      print(json.dumps(row, default=str))
    return 0
  except (store.StoreError, BundleError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
