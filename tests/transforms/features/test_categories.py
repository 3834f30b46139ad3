"""Category values as the user's own model sees them: as read, and one-hot like scikit-learn's.

A value reaches the vocabulary exactly as the file held it (`' one_year '` is
not `'one_year'`), unless the vocabulary says it trims or changes case; and a
vocabulary with no out-of-vocabulary bucket followed by `one_hot` encodes as
`OneHotEncoder(handle_unknown='ignore')` does, checked against scikit-learn itself.
"""

import numpy as np
import pyarrow as pa
import pytest

from transforms.features.preprocessing import FillMissing, OneHot, Vocabulary, ZScore
from transforms.features.spec import Feature, FeatureSpec, fit_in_memory
from transforms.rows.validation import text_counts, validate

CONTRACTS = ['month_to_month', 'one_year', 'two_year']


def _spec(**vocabulary) -> FeatureSpec:
  return FeatureSpec((Feature('contract', 'string', (Vocabulary(vocabulary=tuple(CONTRACTS), **vocabulary),
                                                     OneHot())),))


def _matrix(spec: FeatureSpec, values: list) -> np.ndarray:
  """The model's input for raw rows, through validation and the steps, as a run computes it."""
  batch = pa.RecordBatch.from_pydict({'contract': pa.array(values, pa.string()), 'id': list(map(str, range(len(values))))})
  valid, letters = validate(batch, spec, key_column='id')
  assert letters is None
  return spec.transform(valid)


def test_a_padded_category_reaches_the_vocabulary_as_read():
  # Unknown to a model trained on the values as they were: the out-of-vocabulary column, not 'one_year'.
  np.testing.assert_array_equal(_matrix(_spec(), ['one_year', ' one_year ', 'One_year']),
                                [[0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]])


def test_a_vocabulary_that_says_it_trims_and_lowers_case_does_so_after_validation():
  np.testing.assert_array_equal(_matrix(_spec(trim=True, case='lower'), ['one_year', ' one_year ', 'One_year']),
                                [[0, 1, 0, 0]] * 3)


def test_blank_text_is_still_missing_and_the_profile_counts_values_as_read():
  spec = FeatureSpec((Feature('contract', 'string', (FillMissing('constant', 'two_year'),
                                                     Vocabulary(vocabulary=tuple(CONTRACTS)), OneHot())),))
  np.testing.assert_array_equal(_matrix(spec, ['', '   ', None, ' one_year']),
                                [[0, 0, 1, 0]] * 3 + [[0, 0, 0, 1]])
  assert text_counts(pa.array(['one_year', ' one_year', '  ', None])) == {'one_year': 1, ' one_year': 1}


def test_one_hot_without_oov_bucket_equals_sklearn_handle_unknown_ignore():
  sklearn = pytest.importorskip('sklearn.preprocessing')
  rng = np.random.default_rng(7)
  train = rng.choice(['DSL', 'Fiber optic', 'No', 'Satellite'], size=500, p=[0.4, 0.35, 0.2, 0.05]).tolist()
  serve = rng.choice(['DSL', 'Fiber optic', 'No', 'Satellite', 'Cable', '5G'], size=300).tolist()
  numbers = rng.normal(50.0, 10.0, size=500)
  encoder = sklearn.OneHotEncoder(handle_unknown='ignore', sparse_output=False).fit(np.array(train)[:, None])
  expected = encoder.transform(np.array(serve)[:, None])

  spec = FeatureSpec((Feature('tenure', 'float', (ZScore(),)),
                      Feature('internet', 'string', (Vocabulary(order='lexical', num_oov_buckets=0), OneHot()))))
  fitted = fit_in_memory(spec, [pa.RecordBatch.from_pydict({'tenure': numbers, 'internet': train})])
  got = fitted.transform(pa.RecordBatch.from_pydict({'tenure': np.zeros(len(serve)), 'internet': serve}))

  np.testing.assert_array_equal(got[:, 1:], expected)
  assert expected[[v in ('Cable', '5G') for v in serve]].sum() == 0  # the unknown rows: all zeros, no extra column
  assert fitted.output_names[1:] == [f'internet={c}' for c in encoder.categories_[0]]
  # JSON round trip: what the bundle stores encodes the same.
  reloaded = FeatureSpec.from_dict(fitted.to_dict())
  np.testing.assert_array_equal(reloaded.transform(pa.RecordBatch.from_pydict(
      {'tenure': np.zeros(len(serve)), 'internet': serve}))[:, 1:], expected)
