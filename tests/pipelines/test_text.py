"""Text models end to end: a table's text column (Parquet, JSON Lines) through the job, tokenised and batched by
tokens, against transformers' own forward pass over each text alone, softmaxed or pooled as a user's code does."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from models.bundle import BundleError, ModelBundle, Outputs
from pipelines import run as run_job
from testing import text as tt
from transforms.text.entities import aggregate, token_tags
from transforms.text.spec import TextSpec

CLASSES = ('negative', 'neutral', 'positive')
MAX_TOKENS = 48


@pytest.fixture(scope='module')
def texts():
  return tt.corpus(300, seed=11)


def _predictions(output: str, key: str) -> dict:
  return {row[key]: row for row in pads.dataset(output, format='parquet').to_table().to_pylist()}


@pytest.mark.parametrize('fmt', ['torch', 'onnx'])
def test_classifier__every_text_scored_as_the_model_scores_it_alone_bad_texts_dead_letters(
    tmp_path, texts, fmt, read_dead_letters):
  spec = TextSpec(max_tokens=MAX_TOKENS, softmax=True, tokens_per_batch=512, sort_window=128, max_bytes=4000)
  bundle, model = tt.text_bundle(str(tmp_path / 'bundle'), spec, Outputs('classification', classes=CLASSES), texts,
                                 fmt=fmt)
  bad = {1000: '', 1001: '   \n ', 1002: 'cat ' * 1500}
  ids = list(range(len(texts))) + list(bad)
  pq.write_table(pa.table({'id': ids, 'text': texts + list(bad.values())}), tmp_path / 'in.parquet')
  result = run_job.run([f'--input={tmp_path}/in.parquet', f'--model={bundle.path}', f'--output={tmp_path}/out',
                        '--key_column=id', '--max_rejected_fraction=0.05'])

  assert (result.rows_read, result.rows_predicted, result.rows_rejected) == (303, 300, 3)
  rows = _predictions(result.output, 'id')
  expected = tt.reference(model, bundle.tokenizer_path, texts, MAX_TOKENS, softmax=True)
  got = np.array([[rows[i][f'probability_{c}'] for c in CLASSES] for i in range(len(texts))])
  assert np.abs(got - expected).max() < 1e-4  # truncated texts included: some run past 48 tokens
  assert [rows[i]['predicted_class'] for i in range(len(texts))] == [CLASSES[k] for k in got.argmax(1)]
  letters = {d['key']: d for d in read_dead_letters(result.dead_letter)}
  assert {k: d['reason_code'] for k, d in letters.items()} == {
      '1000': 'empty_text', '1001': 'empty_text', '1002': 'text_too_long'}
  assert all(d['stage'] == 'tokenize' for d in letters.values())
  assert '6,000 bytes' in letters['1002']['reason'] and 'cat cat' not in letters['1002']['record']


@pytest.mark.parametrize('pooling', ['mean', 'cls'])
def test_encoder__json_lines_column_named_by_flag_embeddings_pooled_and_normalised(tmp_path, texts, pooling):
  spec = TextSpec(max_tokens=MAX_TOKENS, pooling=pooling, tokens_per_batch=1024, sort_window=64,
                  tensors={'input_ids': 'input_ids', 'attention_mask': 'attention_mask',
                           'token_type_ids': 'token_type_ids'})
  bundle, model = tt.text_bundle(str(tmp_path / 'bundle'), spec, Outputs('embedding', dimension=32), texts)
  with open(tmp_path / 'in.jsonl', 'w') as f:
    for i, text in enumerate(texts):
      f.write(json.dumps({'ticket': f't{i}', 'body': text}) + '\n')
  result = run_job.run([f'--input={tmp_path}/in.jsonl', f'--model={bundle.path}', f'--output={tmp_path}/out',
                        '--text_column=body', '--passthrough_columns=ticket'])

  assert (result.rows_read, result.rows_predicted, result.rows_rejected) == (300, 300, 0)
  rows = _predictions(result.output, 'ticket')
  got = np.array([rows[f't{i}']['embedding'] for i in range(len(texts))], np.float32)
  expected = tt.reference(model, bundle.tokenizer_path, texts, MAX_TOKENS, pooling=pooling)
  assert np.abs(got - expected).max() < 1e-4
  assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_bundle__text_json_that_disagrees_with_its_parts_fails_at_load_naming_them(tmp_path, texts):
  spec = TextSpec(max_tokens=16, softmax=True)
  bundle, _ = tt.text_bundle(str(tmp_path / 'b'), spec, Outputs('classification', classes=CLASSES), texts[:100])

  def load_with(name, data):
    with open(tmp_path / 'b' / name, 'w') as f:
      json.dump(data, f)
    with pytest.raises(BundleError) as e:
      ModelBundle.load(bundle.path)
    return str(e.value)

  text_json = spec.to_dict()
  assert 'declares int32 [null, 16]' in load_with('inputs.json', {'shape': 'tensors', 'tensors': [
      {'name': 'input_ids', 'dtype': 'int32', 'shape': [None, 16]},
      {'name': 'attention_mask', 'dtype': 'int64', 'shape': [None, None]}]})
  assert 'fills the tensors input_ids, attention_mask' in load_with('inputs.json', {'shape': 'tensors', 'tensors': [
      {'name': 'input_ids', 'dtype': 'int64', 'shape': [None, None]}]})
  (tmp_path / 'b' / 'inputs.json').write_text(json.dumps(bundle.inputs.to_dict()))
  assert 'which the bundle does not hold' in load_with('text.json', {**text_json, 'tokenizer': 'vocab.json'})
  assert 'pooling makes an embedding' in load_with('text.json', {**text_json, 'softmax': False, 'pooling': 'mean'})
  (tmp_path / 'b' / 'tokenizer.json').write_text('{"not": "a tokenizer"}')
  assert 'not a Hugging Face tokenizers file' in load_with('text.json', text_json)


TAGS = ('O', 'B-ORG', 'I-ORG', 'B-PER', 'I-PER')


@pytest.mark.parametrize('fmt', ['torch', 'onnx'])
def test_token_classifier__entities_row_for_row_as_transformers_tags_them(tmp_path, texts, capsys, fmt):
  spec = TextSpec(max_tokens=MAX_TOKENS, tokens_per_batch=512, sort_window=128, aggregation='simple')
  bundle, model = tt.text_bundle(str(tmp_path / 'bundle'), spec, Outputs('entities', labels=TAGS), texts, fmt=fmt)
  pq.write_table(pa.table({'id': list(range(len(texts))), 'text': texts}), tmp_path / 'in.parquet')
  result = run_job.run([f'--input={tmp_path}/in.parquet', f'--model={bundle.path}', f'--output={tmp_path}/out',
                        '--key_column=id'])

  assert (result.rows_read, result.rows_predicted, result.rows_rejected) == (300, 300, 0)
  rows = _predictions(result.output, 'id')
  assert 'text' not in rows[0]  # cut entities from, not passed through
  expected = tt.reference_entities(model, bundle.tokenizer_path, texts, MAX_TOKENS, TAGS)
  for i, want in enumerate(expected):
    got = rows[i]['entities']
    assert [{k: e[k] for k in ('text', 'label', 'start', 'end')} for e in got] == [
        {k: e[k] for k in ('text', 'label', 'start', 'end')} for e in want], i
    assert np.allclose([e['score'] for e in got], [e['score'] for e in want], atol=1e-4), i
    assert all(e['text'] == texts[i][e['start']:e['end']] for e in got)
  found = [e for want in expected for e in want]
  # The test means something: many entities, of both types, some of several tokens (B- then I-).
  assert len(found) > 100 and {e['label'] for e in found} == {'ORG', 'PER'}
  assert sum(e['tokens'] > 1 for e in found) > 10

  if fmt == 'onnx':
    return
  # JSON Lines: an array of objects per row, the same entities; CSV and PostgreSQL refused before the job starts.
  result = run_job.run([f'--input={tmp_path}/in.parquet', f'--model={bundle.path}', f'--output={tmp_path}/json',
                        '--key_column=id', '--output_format=jsonl'])
  lines = [json.loads(line) for f in sorted((tmp_path / 'json').rglob('predictions-*.jsonl')) for line in open(f)]
  assert len(lines) == 300 and all(line['entities'] == rows[line['id']]['entities'] for line in lines)
  for output, refusal in ((f'--output={tmp_path}/csv', 'which CSV cannot hold'),
                          ('--output=postgresql://app@localhost:1/shop?table=entities', 'to PostgreSQL yet')):
    code = run_job.main([f'--input={tmp_path}/in.parquet', f'--model={bundle.path}', output, '--key_column=id',
                         '--preflight_only', f'--summary_location={tmp_path}/runs']
                        + (['--output_format=csv'] if 'csv' in output else []))
    assert code == 2 and refusal in capsys.readouterr().err


def test_entities__simple_aggregation_b_starts_i_of_its_type_continues_anything_else_ends():
  labels = ('O', 'B-ORG', 'I-ORG', 'B-PER', 'I-PER')
  text = 'a b c d e f g h'
  # tag, probability, start, end per token: B-ORG I-ORG | I-PER (stray: nothing) | B-PER B-PER (two) | O |
  # I-ORG (stray) | B-ORG; a special token (-1) between the two B-PERs is skipped, not a break.
  tags = np.array([[1, .9, 0, 1], [2, .5, 2, 3], [4, .9, 4, 5], [3, .8, 6, 7], [-1, 0, -1, -1], [3, .6, 8, 9],
                   [0, .9, 10, 11], [2, .9, 12, 13], [1, .7, 14, 15]], np.float32)
  got = aggregate(tags.reshape(-1), labels, text)
  assert [(e['text'], e['label'], e['start'], e['end'], round(e['score'], 5)) for e in got] == [
      ('a b', 'ORG', 0, 3, 0.7), ('d', 'PER', 6, 7, 0.8), ('e', 'PER', 8, 9, 0.6), ('h', 'ORG', 14, 15, 0.7)]


def test_entities__bundle_parts_that_cannot_make_entities_fail_at_load():
  with pytest.raises(BundleError, match='BIO tags'):
    Outputs('entities', labels=('O', 'ORG'))
  with pytest.raises(BundleError, match='BIO tags'):
    Outputs('classification', classes=('a', 'b'), labels=('O', 'B-X'))
  with pytest.raises(ValueError, match='drop softmax and pooling'):
    TextSpec(max_tokens=8, softmax=True).check_outputs('entities')
  with pytest.raises(ValueError, match='not entities'):
    TextSpec(max_tokens=8, aggregation='simple').check_outputs('embedding')
  with pytest.raises(ValueError, match='not __offsets__'):
    TextSpec(max_tokens=8, tensors={'input_ids': '__offsets__', 'attention_mask': 'attention_mask'})
  with pytest.raises(ValueError, match='aggregation is how'):
    TextSpec(max_tokens=8, aggregation='first')
  with pytest.raises(ValueError, match=r'the model returned \[2, 5, 3\]'):
    token_tags(np.zeros((2, 5, 3)), np.ones((2, 5)), None, 5)
