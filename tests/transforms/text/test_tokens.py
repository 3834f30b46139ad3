"""text.json, the token batching and the output post-processing, without Beam; PrepareText once through a
TestPipeline, where its counters say how much padding batching by tokens saved."""

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from testing import text as tt
from transforms.rows.counters import NAMESPACE
from transforms.rows.dead_letters import DEAD_LETTERS
from transforms.text import outputs, tokens
from transforms.text.prepare import PrepareText, read_tokenizer, unusable
from transforms.text.spec import TextSpec, TextSpecError


@pytest.fixture(scope='module')
def tokenizer_path(tmp_path_factory):
  return tt.train_tokenizer(tt.corpus(400), str(tmp_path_factory.mktemp('tok') / 'tokenizer.json'))


def test_spec__round_trips_and_refuses_what_it_cannot_do():
  spec = TextSpec(max_tokens=64, pooling='cls', normalize=False, tensors={'input_ids': 'ids', 'attention_mask': 'm'})
  assert TextSpec.from_dict(spec.to_dict()) == spec and spec.name('attention_mask') == 'm'
  for bad, says in [({}, 'max_tokens'), ({'max_tokens': 8, 'truncation': 'middle'}, 'truncation'),
                    ({'max_tokens': 8, 'tensors': {'input_ids': 'x'}}, 'attention_mask'),
                    ({'max_tokens': 64, 'tokens_per_batch': 32}, 'tokens_per_batch'),
                    ({'max_tokens': 8, 'softmax': True, 'pooling': 'mean'}, 'one or the other'),
                    ({'max_tokens': 8, 'pooling': 'max'}, 'pooling'), ({'max_tokens': 8, 'dtype': 'float32'}, 'dtype'),
                    ({'max_tokens': 8, 'stride': 2}, "no key 'stride'")]:
    with pytest.raises(TextSpecError, match=says):
      TextSpec.from_dict(bad)
  with pytest.raises(TextSpecError, match=r'declares int32 \[null, 128\]'):
    TextSpec(max_tokens=8).check_tensors({'input_ids': ('int32', (None, 128)), 'attention_mask': ('int64', (None, None))})
  with pytest.raises(TextSpecError, match='not classification'):
    TextSpec(max_tokens=8, softmax=True).check_outputs('regression')


def test_model_calls__sorted_by_length_each_within_the_token_cap_and_every_text_once():
  lengths = np.array([3, 200, 5, 5, 64, 2, 90, 7, 7, 7, 300, 4] * 20)
  calls = tokens.model_calls(lengths, tokens_per_batch=512, max_rows=16)
  assert sorted(np.concatenate(calls).tolist()) == list(range(len(lengths)))
  for call in calls:
    assert len(call) * lengths[call].max() <= 512 and len(call) <= 16
  longest = [lengths[c].max() for c in calls]
  assert longest == sorted(longest)


def test_truncation__end_keeps_the_first_tokens_start_the_last_and_each_cut_text_is_flagged(tokenizer_path):
  text = ' '.join(tt.WORDS[:30])
  with open(tokenizer_path) as f:
    data = f.read()
  full = tokens.load_tokenizer(data, TextSpec(max_tokens=512)).encode(text).ids
  end = tokens.encode(tokens.load_tokenizer(data, TextSpec(max_tokens=8)), [text, 'cat'])
  start = tokens.encode(tokens.load_tokenizer(data, TextSpec(max_tokens=8, truncation='start')), [text])
  assert end.ids[0] == full[:7] + full[-1:] and start.ids[0] == full[:1] + full[-7:]  # [CLS] ... [SEP] kept
  assert end.truncated.tolist() == [True, False] and start.truncated.tolist() == [True]


def test_pad__each_call_to_its_own_longest_with_the_pad_id_and_a_mask(tokenizer_path):
  spec = TextSpec(max_tokens=64, tensors={'input_ids': 'ids', 'attention_mask': 'mask', 'token_type_ids': 'types'})
  tokenizer = read_tokenizer(tokenizer_path, spec)
  encoded = tokens.encode(tokenizer, ['cat', 'the dog sat on the mat'])
  tensors = tokens.pad(encoded, np.array([1, 0]), spec, tokens.pad_id(tokenizer))
  assert set(tensors) == {'ids', 'mask', 'types'} and tensors['ids'].dtype == np.int64
  assert tensors['ids'].shape == (2, len(encoded.ids[1]))
  assert tensors['ids'][1].tolist()[:3] == encoded.ids[0] and set(tensors['ids'][1, 3:]) == {tokenizer.token_to_id('[PAD]')}
  assert tensors['mask'].sum(1).tolist() == [len(encoded.ids[1]), 3]


def test_unusable__empty_whitespace_and_null_are_empty_a_text_past_the_bound_too_long():
  empty, too_long = unusable(pa.array(['ok', '', '  \n\t', None, 'x' * 11, ' ' * 20]), max_bytes=10)
  assert empty.tolist() == [False, True, True, True, False, True]
  assert too_long.tolist() == [False, False, False, False, True, False]


def test_outputs__mean_pooling_ignores_padding_cls_takes_the_first_and_softmax_sums_to_one():
  hidden = np.random.default_rng(0).normal(size=(2, 4, 3)).astype(np.float32)
  mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
  mean = outputs.finish(hidden, mask, TextSpec(max_tokens=8, pooling='mean'))
  expected = hidden[0, :2].mean(0)
  assert np.allclose(mean[0], expected / np.linalg.norm(expected), atol=1e-6)
  assert np.allclose(np.linalg.norm(mean, axis=1), 1)
  cls = outputs.finish(hidden, mask, TextSpec(max_tokens=8, pooling='cls', normalize=False))
  assert np.array_equal(cls, hidden[:, 0])
  probabilities = outputs.finish(np.array([[1000.0, 0.0], [0.0, 0.0]]), mask, TextSpec(max_tokens=8, softmax=True))
  assert np.allclose(probabilities, [[1, 0], [0.5, 0.5]])
  with pytest.raises(ValueError, match='last_hidden_state'):
    outputs.finish(hidden[:, 0], mask, TextSpec(max_tokens=8, pooling='mean'))


def test_prepare_text__calls_cut_by_tokens_dead_letters_keyed_and_the_padding_saved_counted(tokenizer_path):
  spec = TextSpec(max_tokens=64, tokens_per_batch=1024, sort_window=256, max_bytes=5000)
  texts = tt.corpus(1000, seed=3) + ['', '   ', 'word ' * 2000]
  batch = pa.record_batch({'text': texts, 'id': list(range(len(texts)))})

  def check_calls(elements):
    seen = []
    for rows, tensors in elements:
      ids, mask = tensors['input_ids'], tensors['attention_mask']
      assert ids.shape == mask.shape and ids.shape[0] == rows.num_rows and ids.size <= 1024
      assert mask[:, -1].any()  # padded to the call's own longest
      assert 'text' not in rows.schema.names
      seen += rows.column('id').to_pylist()
    assert sorted(seen) == list(range(1000))

  def check_letters(letters):
    rows = pa.Table.from_batches(letters).to_pylist()
    assert sorted((r['reason_code'], r['stage']) for r in rows) == [
        ('empty_text', 'tokenize'), ('empty_text', 'tokenize'), ('text_too_long', 'tokenize')]
    assert any('<10000 bytes of text>' in r['record'] for r in rows)

  pipeline = TestPipeline()
  out = pipeline | beam.Create([batch]) | PrepareText(spec, tokenizer_path, 'text')
  assert_that(out['inputs'], check_calls, label='Calls')
  assert_that(out[DEAD_LETTERS], check_letters, label='Letters')
  result = pipeline.run()
  result.wait_until_finish()
  counts = {c.key.metric.name: c.committed for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))['counters']}
  assert counts['texts_tokenized'] == 1000 and counts['rejected_empty_text'] == 2
  lengths = [len(ids) for ids in tokens.encode(read_tokenizer(tokenizer_path, TextSpec(max_tokens=4096)), texts[:1000]).ids]
  assert counts['text_tokens'] == sum(min(n, 64) for n in lengths)
  long_texts = sum(n > 64 for n in lengths)
  assert counts['text_truncated'] == long_texts > 0
  every_row_to_max = 1000 * spec.max_tokens
  print(f'\ntokens {counts["text_tokens"]}, padded {counts["text_padded_tokens"]}, every row to max_tokens '
        f'{every_row_to_max}: {1 - counts["text_padded_tokens"] / every_row_to_max:.0%} of the model\'s input saved')
  # Sorted within windows of 256, calls are padded about a quarter over their real tokens: a third of
  # what padding every row to max_tokens (the longest of every read batch here) would give the model.
  assert counts['text_tokens'] <= counts['text_padded_tokens'] < 0.4 * every_row_to_max
