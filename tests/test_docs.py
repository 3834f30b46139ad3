"""The README is a one-page front door, and the manual under docs/ hangs together: every page is
reachable from the README through relative links, and no relative link is dead (a missing file, or
an `#anchor` that names no heading of its page, by GitHub's rules for heading anchors)."""

from __future__ import annotations

import pathlib
import re
import sys
import urllib.parse

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README_MAX_LINES = 150

_FENCE = re.compile(r'^(```|~~~).*?^\1[ \t]*$', re.S | re.M)
_CODE_SPAN = re.compile(r'(`+)(?!`).*?(?<!`)\1(?!`)', re.S)
_LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
_HEADING = re.compile(r'^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$', re.M)


def _prose(text: str) -> str:
  """The text without fenced code blocks and code spans, where a link is only text."""
  return _CODE_SPAN.sub('', _FENCE.sub('', text))


def slug(heading: str) -> str:
  """GitHub's anchor for a heading: its text lowercased, punctuation dropped, spaces to '-'."""
  text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # a link keeps its text
  text = text.replace('`', '').replace('*', '').strip().lower()
  return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def anchors(text: str) -> set[str]:
  """Every anchor a page's headings give, duplicates numbered as GitHub numbers them (-1, -2, ...)."""
  seen: dict[str, int] = {}
  found = set()
  for _, heading in _HEADING.findall(_FENCE.sub('', text)):
    base = slug(heading)
    count = seen.get(base, 0)
    seen[base] = count + 1
    found.add(base if count == 0 else f'{base}-{count}')
  return found


def relative_links(page: pathlib.Path) -> list[str]:
  """The page's link targets that are neither absolute URLs nor e-mail addresses."""
  return [target for target in _LINK.findall(_prose(page.read_text(encoding='utf-8')))
          if not urllib.parse.urlsplit(target).scheme and not target.startswith('//')]


def dead_links(pages: list[pathlib.Path]) -> list[str]:
  """Each relative link of `pages` whose file is missing, or whose anchor names no heading there."""
  dead = []
  for page in pages:
    for target in relative_links(page):
      path, _, anchor = target.partition('#')
      file = (page.parent / urllib.parse.unquote(path)).resolve() if path else page
      if not file.exists():
        dead.append(f'{page.relative_to(ROOT)}: {target} (no such file)')
      elif anchor and (file.suffix != '.md' or anchor not in anchors(file.read_text(encoding='utf-8'))):
        dead.append(f'{page.relative_to(ROOT)}: {target} (no such heading)')
  return dead


def reachable(start: pathlib.Path) -> set[pathlib.Path]:
  """Every Markdown page reached from `start` by following relative links."""
  seen, todo = set(), [start.resolve()]
  while todo:
    page = todo.pop()
    if page in seen or not page.exists() or page.suffix != '.md':
      continue
    seen.add(page)
    for target in relative_links(page):
      path = target.partition('#')[0]
      if path:
        todo.append((page.parent / urllib.parse.unquote(path)).resolve())
  return seen


def _doc_pages() -> list[pathlib.Path]:
  return sorted((ROOT / 'docs').rglob('*.md'))


def test_the_readme_is_one_page():
  lines = (ROOT / 'README.md').read_text(encoding='utf-8').splitlines()
  assert len(lines) <= README_MAX_LINES, f'README.md has {len(lines)} lines; move detail to a page under docs/'


def test_every_page_under_docs_is_reachable_from_the_readme():
  assert _doc_pages(), 'no pages under docs/'
  found = reachable(ROOT / 'README.md')
  assert [str(p.relative_to(ROOT)) for p in _doc_pages() if p.resolve() not in found] == []


def test_no_relative_link_is_dead():
  assert dead_links([ROOT / 'README.md', *_doc_pages()]) == []


def test_every_page_has_one_title():
  titled = [str(p.relative_to(ROOT)) for p in [ROOT / 'README.md', *_doc_pages()]
            if [level for level, _ in _HEADING.findall(_FENCE.sub('', p.read_text(encoding='utf-8')))].count('#') != 1]
  assert titled == []


@pytest.mark.parametrize('heading, anchor', [
    ('Before a run: preflight', 'before-a-run-preflight'),
    ('Incremental re-scoring: `--only_unscored`', 'incremental-re-scoring---only_unscored'),
    ('PostgreSQL out, and lookups while a run publishes', 'postgresql-out-and-lookups-while-a-run-publishes'),
    ('`fill_missing`', 'fill_missing'),
    ('Where is X', 'where-is-x'),
])
def test_slug__follows_githubs_anchor_rules(heading, anchor):
  assert slug(heading) == anchor


def test_dead_links__finds_a_missing_file_and_a_missing_heading_and_skips_code(tmp_path, monkeypatch):
  monkeypatch.setattr(sys.modules[__name__], 'ROOT', tmp_path)
  (tmp_path / 'docs').mkdir()
  (tmp_path / 'docs' / 'a.md').write_text('# A\n\n## Same\n\n## Same\n', encoding='utf-8')
  page = tmp_path / 'README.md'
  page.write_text('# R\n\n[ok](docs/a.md) [ok](docs/a.md#same-1) [web](https://example.com/x.md) [self](#r)\n'
                  '[gone](docs/b.md) [bad anchor](docs/a.md#other) `[code](docs/c.md)`\n\n'
                  '```\n[fenced](docs/d.md)\n```\n', encoding='utf-8')
  assert dead_links([page]) == ['README.md: docs/b.md (no such file)', 'README.md: docs/a.md#other (no such heading)']
  assert reachable(page) == {page.resolve(), (tmp_path / 'docs' / 'a.md').resolve()}
