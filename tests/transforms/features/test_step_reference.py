"""The feature step reference (docs/reference/feature-steps.md) is generated from the step classes and kept in sync."""

import dataclasses

import pytest

from transforms.features import step_reference
from transforms.features.preprocessing import Step


def test_docs__feature_step_reference_is_up_to_date():
  assert step_reference.PAGE.endswith('docs/reference/feature-steps.md')
  with open(step_reference.PAGE, encoding='utf-8') as f:
    page = f.read()
  assert step_reference.replace_section(page, step_reference.render()) == page, (
      'docs/reference/feature-steps.md is out of date: run python -m transforms.features.step_reference --write')


@pytest.mark.parametrize('kind', sorted(Step.types()))
def test_reference__names_every_parameter_output_and_fit_of_each_step(kind):
  cls = Step.types()[kind]
  section = step_reference.render().split(f'#### `{kind}`', 1)[1].split('####', 1)[0]
  for field in dataclasses.fields(cls):
    assert f'| `{field.name}` |' in section and field.metadata['doc'] in section
  assert cls.output in section and cls.learns in section and cls.example_json() in section


def test_replace_section__rewrites_only_between_the_markers():
  text = f'head\n{step_reference.START}\nold\n{step_reference.END}\ntail\n'
  assert step_reference.replace_section(text, 'new\n') == f'head\n{step_reference.START}\nnew\n{step_reference.END}\ntail\n'
  with pytest.raises(ValueError, match='no .* section'):
    step_reference.replace_section('no markers', 'x')
