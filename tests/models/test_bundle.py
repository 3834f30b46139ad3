"""The model bundle: loading, validation errors that say what is wrong, and the signature check."""

import json
import os
import shutil

import numpy as np
import pytest

from models.bundle import BundleError, ModelBundle, Outputs, write_bundle
from testing.saved_models import save_linear_model
from transforms.features.spec import Feature, FeatureSpec
from transforms.features.preprocessing import OneHot, Vocabulary, ZScore

SPEC = FeatureSpec((
    Feature('width', 'float', (ZScore(mean=1.0, std=2.0),)),
    Feature('height', 'float', (ZScore(mean=0.0, std=1.0),)),
))
CLASSES = ('small', 'medium', 'large')


@pytest.fixture(scope='module')
def tiny_bundle(tmp_path_factory) -> str:
  """A complete bundle around a real 2-input, 3-class SavedModel."""
  path = str(tmp_path_factory.mktemp('bundle') / 'tiny')
  save_linear_model(os.path.join(path, 'saved_model'), np.ones((2, 3)), np.zeros(3))
  write_bundle(path, features=SPEC, outputs=Outputs('classification', CLASSES), name='tiny', version='7',
               training_metrics={'accuracy': 0.5})
  return path


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path) -> str:
  """A private copy of the tiny bundle for a test to break."""
  return shutil.copytree(tiny_bundle, str(tmp_path / 'copy'))


def _write(bundle: str, part: str, data) -> None:
  with open(os.path.join(bundle, part), 'w') as f:
    f.write(data if isinstance(data, str) else json.dumps(data))


def test_write_bundle__round_trips_through_load(tiny_bundle):
  bundle = ModelBundle.load(tiny_bundle + '/')
  assert (bundle.name, bundle.version, bundle.path) == ('tiny', '7', tiny_bundle)
  assert bundle.features == SPEC
  assert bundle.outputs == Outputs('classification', CLASSES)
  assert bundle.metadata['training_metrics'] == {'accuracy': 0.5} and bundle.metadata['created']
  assert bundle.saved_model_path == os.path.join(tiny_bundle, 'saved_model')
  bundle.check_signature()


def test_load__the_trained_penguin_bundle_is_valid(penguin_bundle):
  bundle = ModelBundle.load(penguin_bundle.path)
  assert bundle.outputs.classes == ('Adelie', 'Chinstrap', 'Gentoo')
  assert bundle.features.is_fitted and bundle.features == penguin_bundle.features
  assert bundle.metadata['training_metrics']['test_accuracy'] > 0.9
  bundle.check_signature()


@pytest.mark.parametrize('part', ['features.json', 'outputs.json', 'metadata.json', 'saved_model/saved_model.pb'])
def test_load__a_missing_part_is_named(bundle_copy, part):
  os.remove(os.path.join(bundle_copy, part))
  with pytest.raises(BundleError, match=f'is missing {part}; a bundle holds saved_model/, features.json'):
    ModelBundle.load(bundle_copy)


def test_load__a_directory_that_is_no_bundle_lists_every_missing_part(tmp_path):
  with pytest.raises(BundleError, match='features.json, outputs.json, metadata.json, saved_model/saved_model.pb'):
    ModelBundle.load(str(tmp_path))


@pytest.mark.parametrize('part', ['features.json', 'outputs.json', 'metadata.json'])
def test_load__bad_json_names_the_file(bundle_copy, part):
  _write(bundle_copy, part, '{"name": "tiny",')
  with pytest.raises(BundleError, match=f'{part} is not valid JSON'):
    ModelBundle.load(bundle_copy)


def test_load__an_unfitted_spec_names_the_unfitted_features(bundle_copy):
  unfitted = FeatureSpec((Feature('width', 'float', (ZScore(),)), SPEC.features[1],
                          Feature('colour', 'string', (Vocabulary(), OneHot()))))
  _write(bundle_copy, 'features.json', unfitted.to_dict())
  with pytest.raises(BundleError, match=r"features \['width', 'colour'\] have no fitted statistics"):
    ModelBundle.load(bundle_copy)


def test_load__an_invalid_spec_says_why(bundle_copy):
  _write(bundle_copy, 'features.json', {'features': [{'name': 'w', 'dtype': 'float', 'steps': [{'kind': 'log'}]}]})
  with pytest.raises(BundleError, match="features.json: feature 'w': unknown step kind 'log'"):
    ModelBundle.load(bundle_copy)
  _write(bundle_copy, 'features.json', {'columns': []})
  with pytest.raises(BundleError, match="features.json: a feature spec is a JSON object with a 'features' list"):
    ModelBundle.load(bundle_copy)


@pytest.mark.parametrize('outputs, message', [
    ({'kind': 'clustering'}, "kind must be one of classification, regression, ranking, embedding, entities, got 'clustering'"),
    ({'kind': 'embedding'}, r'"dimension" is how many floats an embedding model returns per row'),
    ({'kind': 'embedding', 'dimension': 0}, 'dimension 0'),
    ({'kind': 'embedding', 'dimension': 12.5}, 'dimension 12.5'),
    ({'kind': 'embedding', 'dimension': True}, 'dimension True'),
    ({'kind': 'regression', 'dimension': 8}, "got kind 'regression', dimension 8"),
    ({'kind': 'classification', 'classes': ['a', 'b'], 'top_k': 3}, r'2 <= K <= its 2 classes; .* top_k 3'),
    ({'kind': 'classification', 'classes': ['a', 'b', 'c'], 'top_k': 1}, 'top_k 1'),
    ({'kind': 'regression', 'top_k': 2}, "for a classifier only.*got kind 'regression'"),
    ({'kind': 'ranking'}, 'a ranking needs its catalogue as "items"'),
    ({'kind': 'ranking', 'items': ['a', 'b', 'a']}, 'got 3 items, 2 distinct'),
    ({'kind': 'classification', 'classes': ['only']}, 'two or more distinct class names'),
    ({'kind': 'classification', 'classes': ['a', 'a']}, 'two or more distinct class names'),
    ({'kind': 'regression', 'tags': ['x']}, "unexpected keyword argument 'tags'"),
    ({'kind': 'regression', 'labels': ['O', 'B-X']}, 'for kind "entities" only'),
    ({'kind': 'entities', 'labels': ['O', 'B-X', 'B-X']}, 'two or more distinct ones'),
    (['classification'], 'outputs.json'),
])
def test_load__bad_outputs_json_says_why(bundle_copy, outputs, message):
  _write(bundle_copy, 'outputs.json', outputs)
  with pytest.raises(BundleError, match=message):
    ModelBundle.load(bundle_copy)


def test_load__metadata_needs_a_name_and_version(bundle_copy):
  _write(bundle_copy, 'metadata.json', {'name': 'tiny'})
  with pytest.raises(BundleError, match=r"metadata.json: missing \['version'\]"):
    ModelBundle.load(bundle_copy)


@pytest.mark.parametrize('metadata', [7, ['name', 'version']])
def test_load__metadata_that_is_not_an_object_is_named(bundle_copy, metadata):
  _write(bundle_copy, 'metadata.json', metadata)
  with pytest.raises(BundleError, match='metadata.json: expected a JSON object'):
    ModelBundle.load(bundle_copy)


def test_outputs__width_and_dict_round_trip():
  classifier = Outputs('classification', ['a', 'b'], output_key='probabilities')
  assert classifier.width == 2 and Outputs(**classifier.to_dict()) == classifier
  assert Outputs('regression').width == 1 and Outputs('regression').to_dict() == {
      'kind': 'regression', 'classes': [], 'signature': 'serving_default'}


# check_signature, against a real SavedModel

def test_check_signature__model_inputs_must_match_the_feature_columns(bundle_copy):
  colour = Feature('colour', 'string', (Vocabulary(vocabulary=('red',)), OneHot(depth=2)))
  wider = FeatureSpec(SPEC.features + (colour,))
  _write(bundle_copy, 'features.json', wider.to_dict())
  with pytest.raises(BundleError, match=r'the SavedModel takes 2 inputs but features.json produces 4 '
                                        r'\(width, height, colour=red, colour=<oov0>\)'):
    ModelBundle.load(bundle_copy).check_signature()


def test_check_signature__model_outputs_must_match_the_classes(bundle_copy):
  _write(bundle_copy, 'outputs.json', {'kind': 'classification', 'classes': ['yes', 'no']})
  with pytest.raises(BundleError, match='returns 3 values per row but outputs.json describes 2'):
    ModelBundle.load(bundle_copy).check_signature()
  _write(bundle_copy, 'outputs.json', {'kind': 'regression'})
  with pytest.raises(BundleError, match='returns 3 values per row but outputs.json describes 1'):
    ModelBundle.load(bundle_copy).check_signature()


def test_check_signature__a_missing_signature_is_named(bundle_copy):
  _write(bundle_copy, 'outputs.json', {'kind': 'classification', 'classes': list(CLASSES), 'signature': 'predict'})
  with pytest.raises(BundleError, match="cannot load the SavedModel: .*no signature 'predict'"):
    ModelBundle.load(bundle_copy).check_signature()


def test_check_signature__a_corrupt_saved_model_cannot_be_loaded(bundle_copy):
  _write(bundle_copy, 'saved_model/saved_model.pb', 'not a protocol buffer')
  bundle = ModelBundle.load(bundle_copy)  # load reads only the JSON parts
  with pytest.raises(BundleError, match='cannot load the SavedModel'):
    bundle.check_signature()


def test_outputs__an_embedding_is_as_wide_as_its_dimension_and_round_trips():
  outputs = Outputs('embedding', dimension=768)
  assert outputs.width == 768 and outputs.describe() == 'embedding, 768 dimensions'
  assert Outputs(**outputs.to_dict()) == outputs and outputs.to_dict()['dimension'] == 768
  top = Outputs('classification', ('a', 'b', 'c'), top_k=2)
  assert top.width == 3 and Outputs(**top.to_dict()) == top
  assert 'top_k' not in Outputs('classification', ('a', 'b')).to_dict()
