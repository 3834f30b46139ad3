"""The text benchmark end to end at a tiny size: ours and the plain loop embed every row alike and the table
names each; and the parts it is built from: the sets' lengths, padding as each variant batches, commands."""

import argparse
import json
import os

import numpy as np
import pytest

pytest.importorskip('torch')
pytest.importorskip('tokenizers')
pytest.importorskip('transformers')

from benchmarks import text as bench  # noqa: E402
from benchmarks import text_corpus  # noqa: E402
from transforms.text.spec import TextSpec  # noqa: E402


def test_lengths__mixed_long_tailed_over_5_to_500_words_uniform_within_a_few():
  mixed, uniform = np.array(text_corpus.lengths('mixed', 5000)), np.array(text_corpus.lengths('uniform', 5000))
  assert mixed.min() == 5 and mixed.max() == 500
  assert np.median(mixed) < mixed.mean() < np.percentile(mixed, 90)  # most short, a long tail
  assert (uniform.min(), uniform.max()) == text_corpus.UNIFORM_WORDS
  assert text_corpus.texts('mixed', 3) == text_corpus.texts('mixed', 3)  # seeded
  assert [len(t.split()) for t in text_corpus.texts('mixed', 50)] == text_corpus.lengths('mixed', 50)


def test_padded_tokens__plain_loop_pads_each_64_to_its_longest_ours_sorts_within_the_window():
  lengths = np.array([256] + [10] * 63 + [20] * 64)
  spec = TextSpec(max_tokens=256, tokens_per_batch=1024, sort_window=128)
  assert bench.padded_tokens(lengths, 'plain-loop', spec) == 64 * 256 + 64 * 20
  # Sorted: the 63 tens in one call, the twenties in two (51 fit 1,024 tokens), the 256 alone.
  ours = bench.padded_tokens(lengths, 'ours', spec)
  assert ours == 63 * 10 + 64 * 20 + 256
  assert ours >= lengths.sum()
  assert bench.padded_tokens(lengths, 'sentence-transformers', spec) == 64 * 256 + 64 * 20  # longest first


def test_command__each_variant_reads_the_parquet_and_ours_keys_by_id():
  args = argparse.Namespace(st_venv='nowhere', ray_venv='nowhere', ours_flags=['--report=false'])
  model = {'bundle': 'B', 'hf': 'H'}
  ours = bench.command('ours', 'in.parquet', model, 'O', args)
  assert ours[1:3] == ['-m', 'pipelines.run'] and '--key_column=id' in ours and '--report=false' in ours
  assert '--model=B' in ours and '--input=in.parquet' in ours
  assert bench.command('plain-loop', 'in.parquet', model, 'O', args)[1:3] == ['-m', 'benchmarks.text_loop']
  assert 'no virtualenv at nowhere' in bench.unavailable('sentence-transformers', args)
  assert bench.unavailable('ours', args) is None


@pytest.mark.slow
def test_bench__ours_and_the_plain_loop_embed_every_row_alike_and_the_table_lists_each(tmp_path):
  work = str(tmp_path / 'work')
  assert bench.main(['--rows=60', '--repeats=1', '--variants=plain-loop,ours', f'--work={work}']) == 0
  result = json.load(open(os.path.join(work, 'results.json'), encoding='utf-8'))
  table = open(os.path.join(work, 'results.md'), encoding='utf-8').read()
  assert len(result['runs']) == 4
  for run in result['runs']:
    assert run['ok'], run.get('error')
    assert run['rows_embedded'] == 60
    assert run['max_abs_diff'] < 1e-4
    assert run['padding_share'] >= 1
    assert f'| {run["set"]} | {run["variant"]} | ' in table
  assert '| ours / plain-loop, mixed lengths | ≥ 1.2× |' in table
  assert '| ours / plain-loop, uniform lengths | ≥ 0.9× |' in table
