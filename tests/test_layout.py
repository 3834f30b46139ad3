"""The packages import one way, as the Layout section of docs/design.md says, and no module imports
itself back through another: a cycle, or an import against the order, fails here."""

from __future__ import annotations

import ast
import pathlib
import re
from typing import Iterator

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ('deploy', 'pipelines', 'models', 'transforms')
# Top first: a module imports from its own layer and the layers below it, never above.
LAYERS = ('deploy', 'pipelines.run', 'pipelines.search', 'pipelines.launcher', 'pipelines.graph', 'pipelines.record',
          'pipelines.references', 'pipelines.options', 'pipelines.destinations', 'models',
          'transforms.bigquery', 'transforms.postgres', 'transforms.files', 'transforms.text', 'transforms.images', 'transforms')


def _modules() -> dict[str, pathlib.Path]:
  found = {}
  for package in PACKAGES:
    for path in (ROOT / package).rglob('*.py'):
      parts = path.relative_to(ROOT).with_suffix('').parts
      found['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
  return found


def _imports(path: pathlib.Path, modules: dict[str, pathlib.Path]) -> Iterator[tuple[str, int]]:
  """Our modules that `path` imports, anywhere in it (a late import counts the same), with the line."""
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names = [f'{node.module}.{alias.name}' for alias in node.names] + [node.module]
    else:
      continue
    for name in names:
      while name and name not in modules:
        name = name.rpartition('.')[0]
      if name and name.split('.')[0] in PACKAGES and name not in PACKAGES:
        yield name, node.lineno


def _layer(module: str) -> int:
  return next(i for i, layer in enumerate(LAYERS) if module == layer or module.startswith(layer + '.'))


def test_every_module_belongs_to_a_documented_layer():
  assert [m for m in _modules() if m not in PACKAGES and not any(
      m == layer or m.startswith(layer + '.') for layer in LAYERS)] == []


def test_imports_run_down_the_layers():
  modules = _modules()
  against = [f'{path.relative_to(ROOT)}:{line} imports {name}'
             for module, path in modules.items() if module not in PACKAGES
             for name, line in _imports(path, modules) if _layer(name) < _layer(module)]
  assert against == [], 'imports against the documented order (docs/design.md, Layout):\n' + '\n'.join(against)


def test_no_import_cycles():
  modules = _modules()
  graph = {m: {name for name, _ in _imports(p, modules) if name != m} for m, p in modules.items()}
  cycles, state = [], {}

  def visit(module: str, trail: list[str]) -> None:
    state[module] = 'open'
    for name in sorted(graph[module]):
      if state.get(name) == 'open':
        cycles.append(' -> '.join(trail[trail.index(name):] + [name]))
      elif name not in state:
        visit(name, trail + [name])
    state[module] = 'done'

  for module in sorted(graph):
    if module not in state:
      visit(module, [module])
  assert cycles == []


def test_no_project_package_nor_benchmark_imports_the_tests():
  """Shared test helpers live in `testing/`, which tests and benchmarks both import; `tests/` is imported by no one."""
  found = []
  for package in PACKAGES + ('testing', 'benchmarks'):
    for path in (ROOT / package).rglob('*.py'):
      for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module or ''] if isinstance(node, ast.ImportFrom) and not node.level else [])
        found += [f'{path.relative_to(ROOT)}:{node.lineno} imports {name}' for name in names
                  if name == 'tests' or name.startswith('tests.')]
  assert found == []


def _layout_section() -> str:
  design = (ROOT / 'docs' / 'design.md').read_text()
  layout = design[design.index('\n## Layout\n'):]
  end = layout.find('\n## ', 1)
  return layout if end < 0 else layout[:end]


def test_the_design_import_order_is_the_layers():
  """The Layout section's import order, `a/` → `a/b.py` → ..., names LAYERS, top first."""
  layout = _layout_section()
  order = layout[layout.index('Imports run one way'):]
  segments = order[:order.index('\n\n')].split('→')
  names = [re.findall(r'`([\w/.]+)`', segments[0])[-1]] + [re.findall(r'`([\w/.]+)`', s)[0] for s in segments[1:]]
  assert [n.removesuffix('/').removesuffix('.py').replace('/', '.') for n in names] == list(LAYERS)


def test_the_readme_layout_names_every_module_where_it_is():
  """One row per folder of modules (a sub-folder may be named in its parent's row instead), each naming
  its modules; and nothing named that is not there. The Layout section lives in docs/design.md."""
  layout = _layout_section()
  rows = {folder.rstrip('/'): text for folder, text in re.findall(r'^\| `([\w/.-]+)` \| (.+) \|$', layout, flags=re.M)}
  problems = []
  for module, path in _modules().items():
    if path.name == '__init__.py':
      continue
    folder = path.parent.relative_to(ROOT)
    if folder.as_posix() in rows:
      if f'`{path.name}`' not in rows[folder.as_posix()]:
        problems.append(f'{path.relative_to(ROOT)} is not named in its row')
      continue
    parent = next((f for f in folder.parents if f.as_posix() in rows), None)
    if parent is None or f'`{folder.relative_to(parent).parts[0]}/`' not in rows[parent.as_posix()]:
      problems.append(f'{folder}/ has no row and is not named in a parent row')
  for folder, text in rows.items():
    for name in re.findall(r'`([\w/]+\.py)`', text):
      if not (ROOT / folder / name).exists() and not any((ROOT / folder).rglob(name)):
        problems.append(f'the row for {folder}/ names {name}, which is not there')
  assert problems == []
