"""The --expected contract: reading the file, and what counts as agreeing."""

import json

import numpy as np
import pytest

from models.bundle import BundleError, Outputs
from models.importer.parity import Tolerance, compare, read_expected
from transforms.features.spec import FeatureSpec

SPEC = FeatureSpec.from_dict({'features': [
    {'name': 'x', 'dtype': 'float', 'steps': [{'kind': 'z_score', 'mean': 0.0, 'std': 1.0}]}]})
CLASSIFIER = Outputs('classification', ('no', 'yes'))


def _expected(tmp_path, rows, outputs=CLASSIFIER, **kwargs):
  path = tmp_path / 'expected.jsonl'
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return read_expected(str(path), SPEC, outputs, **kwargs)


def test_compare__probabilities_within_tolerance_agree_and_a_missing_one_is_not_checked(tmp_path):
  rows = _expected(tmp_path, [{'x': 1, 'probability_yes': 0.7}, {'x': 2, 'probability_yes': None},
                              {'x': 3, 'probability_yes': 0.2}])
  scores = np.array([[0.30004, 0.70004], [0.5, 0.5], [0.79, 0.21]])
  agreement = compare(scores, rows, CLASSIFIER, Tolerance(atol=1e-4, rtol=0.0))
  assert (agreement.rows, agreement.agreeing, agreement.passed) == (3, 2, False)
  assert agreement.mismatches == (f'{tmp_path / "expected.jsonl"}:3: probability_yes expected 0.2, bundle 0.21',)
  assert compare(scores, rows, CLASSIFIER, Tolerance(atol=0.0, rtol=0.06)).passed  # 0.01 <= 0.06 * 0.2


def test_compare__a_class_must_match_unless_tied_with_the_top_one(tmp_path):
  rows = _expected(tmp_path, [{'x': 1, 'predicted_class': 'yes'}, {'x': 2, 'predicted_class': 'no'}])
  assert compare(np.array([[0.2, 0.8], [0.50002, 0.49998]]), rows, CLASSIFIER, Tolerance()).passed
  failed = compare(np.array([[0.2, 0.8], [0.4, 0.6]]), rows, CLASSIFIER, Tolerance())
  assert not failed.passed and failed.mismatches[0].endswith('predicted_class expected no, bundle yes')


def test_compare__a_row_the_bundle_rejects_disagrees(tmp_path):
  rows = _expected(tmp_path, [{'x': 1, 'predicted_class': 'yes'}, {'x': 'many', 'predicted_class': 'no'}])
  agreement = compare(np.array([[0.2, 0.8]]), rows, CLASSIFIER, Tolerance())
  assert not agreement.passed and agreement.rows == 2
  assert "expected.jsonl:2: rejected by the bundle (x: 'many' is not a valid float)" in agreement.mismatches[0]


def test_compare__a_label_column_must_beat_the_most_common_label_by_default(tmp_path):
  rows = _expected(tmp_path, [{'x': i, 'truth': t} for i, t in enumerate(['yes', 'yes', 'yes', 'no'])],
                   label='truth')
  always_yes = np.array([[0.1, 0.9]] * 4)
  assert compare(always_yes, rows, CLASSIFIER, Tolerance()).passed  # 0.75 >= 0.75
  assert not compare(always_yes, rows, CLASSIFIER, Tolerance(), min_accuracy=0.8).passed
  assert 'accuracy 0.7500 on 4 labelled rows (at least 0.8000 needed)' in compare(
      always_yes, rows, CLASSIFIER, Tolerance(), min_accuracy=0.8).summary


def test_compare__a_regressor_compares_its_score(tmp_path):
  rows = _expected(tmp_path, [{'x': 1, 'score': 100.0}], Outputs('regression'))
  assert compare(np.array([[100.09]]), rows, Outputs('regression'), Tolerance()).passed  # 1e-4 + 1e-3 * 100
  assert not compare(np.array([[100.2]]), rows, Outputs('regression'), Tolerance()).passed


@pytest.mark.parametrize('rows, kwargs, message', [
    ([{'x': 1, 'label': 'yes'}], {}, r'holds no expected output: give `predicted_class` and/or probability columns '
                                    r'\(probability_no, probability_yes\)'),
    ([{'x': 1}], {'label': 'truth'}, r"has no column 'truth' \(--expected_label\)"),
    ([{'x': 'a', 'predicted_class': 'no'}], {}, 'no row passed validation .*1 rejected'),
    ([{'x': 1, 'predicted_class': 'no', 'probability_Yes': 0.2}], {},
     r"\['probability_Yes'\] name no class of outputs.json; its probability columns are "
     r"\['probability_no', 'probability_yes'\]"),
])
def test_read_expected__a_file_that_cannot_prove_anything_is_refused(tmp_path, rows, kwargs, message):
  with pytest.raises(BundleError, match=message):
    _expected(tmp_path, rows, **kwargs)


def test_read_expected__a_label_is_for_classifiers(tmp_path):
  with pytest.raises(BundleError, match='--expected_label is for classifiers'):
    _expected(tmp_path, [{'x': 1, 'score': 1.0}], Outputs('regression'), label='score')


def test_read_expected__an_embedding_has_nothing_to_compare_and_says_to_import_without_it(tmp_path):
  with pytest.raises(BundleError, match=r'an embedding model \(embedding, 4 dimensions\) has none to compare'):
    _expected(tmp_path, [{'x': 1, 'embedding': [0.0, 1.0, 2.0, 3.0]}], Outputs('embedding', dimension=4))


def test_expected_rows__head_keeps_rows_and_their_expected_values_together(tmp_path):
  rows = _expected(tmp_path, [{'x': i, 'probability_yes': i / 10, 'predicted_class': 'no'} for i in range(5)])
  head = rows.head(2)
  assert head.valid.column('x').to_pylist() == [0.0, 1.0] and head.probabilities[1].tolist() == [0.0, 0.1]
  assert head.classes.tolist() == ['no', 'no'] and head.keys == rows.keys[:2]


def test_diagnose__rows_the_bundle_rejects_are_named_as_a_cause(tmp_path):
  from models.importer.diagnosis import diagnose
  rows = _expected(tmp_path, [{'x': 1, 'score': 1.0}, {'x': None, 'score': 0.0}], Outputs('regression'))
  predict = lambda x: x.astype(np.float64)  # noqa: E731  (the model: its one input, unchanged)
  agreement = compare(predict(SPEC.transform(rows.valid)), rows, Outputs('regression'), Tolerance())
  assert not agreement.passed and agreement.agreeing == 1
  causes = diagnose(SPEC, predict, rows, Outputs('regression'), Tolerance(), agreement)
  assert causes[0].startswith('1 expected rows are rejected by the bundle before the model sees them (first, ')
  assert 'x: missing required value' in causes[0] and 'fill_missing' in causes[0]


def test_read_expected__a_glob_of_files_whose_columns_differ_in_type_is_one_set_of_rows(tmp_path):
  (tmp_path / 'a.jsonl').write_text(json.dumps({'x': 1, 'probability_yes': 1}) + '\n')  # an integer here
  (tmp_path / 'b.jsonl').write_text(json.dumps({'x': 2, 'probability_yes': 0.25, 'predicted_class': 'no'}) + '\n')
  rows = read_expected(str(tmp_path / '*.jsonl'), SPEC, CLASSIFIER)
  assert rows.probabilities[1].tolist() == [1.0, 0.25] and rows.classes.tolist() == [None, 'no']
  assert rows.keys == [f'{tmp_path / "a.jsonl"}:1', f'{tmp_path / "b.jsonl"}:1']
