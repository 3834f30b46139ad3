"""The reference pages (docs/reference/flags.md, docs/reference/feature-steps.md) are generated from the code
and kept in sync."""

import argparse
import dataclasses

import pytest

from pipelines import references
from pipelines.options import BatchInferenceOptions


def _declared() -> list[argparse.Action]:
  parser = argparse.ArgumentParser(add_help=False)
  BatchInferenceOptions._add_argparse_args(parser)  # pylint: disable=protected-access
  return parser._actions  # pylint: disable=protected-access


def test_docs__flags_reference_is_up_to_date():
  section = references.SECTIONS[0]
  assert section.page.endswith('docs/reference/flags.md')
  page = section.read()
  assert section.replace(page) == page, (
      'docs/reference/flags.md is out of date: run python -m pipelines.references --write')


def test_reference__one_row_per_flag_in_declaration_order_with_its_default():
  rendered = references.render_flags().splitlines()[2:]
  declared = _declared()
  assert [row.split(' | ')[0] for row in rendered] == [f'| `{a.option_strings[0]}`' for a in declared]
  for row, action in zip(rendered, declared):
    default = row.split(' | ')[2]
    if action.default is None:
      assert default == '—'
    elif isinstance(action.default, bool):
      assert default == f'`{str(action.default).lower()}`'
    elif action.default != '':
      assert default == f'`{action.default}`'
    for choice in action.choices or ():
      assert f'`{choice}`' in row


def test_reference__a_help_text_with_markdown_characters_stays_one_plain_cell():
  cell = references._cell('gs://b/*.parquet, OUTPUT/_scored/, a|b, x<=1, row_id')  # pylint: disable=protected-access
  assert cell == 'gs://b/\\*.parquet, OUTPUT/\\_scored/, a\\|b, x\\<=1, row_id'


@pytest.mark.parametrize('section', references.SECTIONS, ids=lambda s: s.page.rsplit('/', 1)[-1])
def test_section__rewrites_only_between_its_markers(section):
  text = f'head\n{section.start}\nold\n{section.end}\ntail\n'
  assert section.replace(text) == f'head\n{section.start}\n{section.render()}{section.end}\ntail\n'
  with pytest.raises(ValueError, match='no .* section'):
    section.replace('no markers')


def test_main__prints_every_reference(capsys):
  assert references.main([]) == 0
  assert capsys.readouterr().out == ''.join(s.render() for s in references.SECTIONS)


def test_main__writes_each_page_in_place(tmp_path, monkeypatch):
  pages = []
  for i, section in enumerate(references.SECTIONS):
    page = tmp_path / f'page{i}.md'
    page.write_text(f'intro\n{section.start}\nstale\n{section.end}\n')
    pages.append((page, dataclasses.replace(section, page=str(page))))
  monkeypatch.setattr(references, 'SECTIONS', tuple(s for _, s in pages))
  assert references.main(['--write']) == 0
  for page, section in pages:
    assert page.read_text() == f'intro\n{section.start}\n{section.render()}{section.end}\n'
