"""The flags reference (docs/reference/flags.md) is generated from the options class and kept in sync."""

import argparse

import pytest

from pipelines import flag_reference
from pipelines.options import BatchInferenceOptions


def _declared() -> list[argparse.Action]:
  parser = argparse.ArgumentParser(add_help=False)
  BatchInferenceOptions._add_argparse_args(parser)  # pylint: disable=protected-access
  return parser._actions  # pylint: disable=protected-access


def test_docs__flags_reference_is_up_to_date():
  assert flag_reference.PAGE.endswith('docs/reference/flags.md')
  with open(flag_reference.PAGE, encoding='utf-8') as f:
    page = f.read()
  assert flag_reference.replace_section(page, flag_reference.render()) == page, (
      'docs/reference/flags.md is out of date: run python -m pipelines.flag_reference --write')


def test_reference__one_row_per_flag_in_declaration_order_with_its_default():
  rendered = flag_reference.render().splitlines()[2:]
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
  cell = flag_reference._cell('gs://b/*.parquet, OUTPUT/_scored/, a|b, x<=1, row_id')  # pylint: disable=protected-access
  assert cell == 'gs://b/\\*.parquet, OUTPUT/\\_scored/, a\\|b, x\\<=1, row_id'


def test_replace_section__rewrites_only_between_the_markers():
  text = f'head\n{flag_reference.START}\nold\n{flag_reference.END}\ntail\n'
  assert flag_reference.replace_section(text, 'new\n') == f'head\n{flag_reference.START}\nnew\n{flag_reference.END}\ntail\n'
  with pytest.raises(ValueError, match='no .* section'):
    flag_reference.replace_section('no markers', 'x')


def test_main__prints_the_reference(capsys):
  assert flag_reference.main([]) == 0
  assert capsys.readouterr().out == flag_reference.render()
