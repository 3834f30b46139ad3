"""The feature step reference (docs/reference/feature-steps.md) is generated from the step classes and kept in sync."""

import dataclasses

import pytest

from pipelines.references import SECTIONS
from transforms.features import step_reference
from transforms.features.preprocessing import Step


def test_docs__feature_step_reference_is_up_to_date():
  section = next(s for s in SECTIONS if s.render is step_reference.render)
  assert section.page == step_reference.PAGE and section.page.endswith('docs/reference/feature-steps.md')
  page = section.read()
  assert section.replace(page) == page, (
      'docs/reference/feature-steps.md is out of date: run python -m pipelines.references --write')


@pytest.mark.parametrize('kind', sorted(Step.types()))
def test_reference__names_every_parameter_output_and_fit_of_each_step(kind):
  cls = Step.types()[kind]
  section = step_reference.render().split(f'#### `{kind}`', 1)[1].split('####', 1)[0]
  for field in dataclasses.fields(cls):
    assert f'| `{field.name}` |' in section and field.metadata['doc'] in section
  assert cls.output in section and cls.learns in section and cls.example_json() in section
