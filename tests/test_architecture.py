"""The import rules of docs/architecture.md, checked on the source with `ast`.

- The shared layer (components/common/ and the top-level modules spec_keys, errors,
  artifact_types) imports nothing from a component package.
- A component package (every other package under components/) imports the shared layer, its own
  modules, and the public configuration and error classes (`from components import PruningConfig`);
  never another package's modules, except that an `executor.py` may import another package's
  `executor` to subclass it.
- No import cycle between packages.
"""
import ast
import os
from typing import Dict, List, Set, Tuple

import pytest

from tests.conftest import REPO_ROOT

SHARED_MODULES = ('spec_keys', 'errors', 'artifact_types')
SHARED_PACKAGE = 'common'


def _public_non_components(components_dir: str) -> Dict[str, str]:
  """{name: package} that `from components import X` may bring into a component package.

  Configs and errors, read from the lazy-export table of components/__init__.py: every name whose
  module is not a `component` module, with the package that defines it.
  """
  tree = ast.parse(open(os.path.join(components_dir, '__init__.py')).read())
  for node in tree.body:
    targets = [getattr(t, 'id', '') for t in getattr(node, 'targets', [])]
    if isinstance(node, ast.Assign) and '_PUBLIC' in targets:
      table = ast.literal_eval(node.value)
      return {name: module.split('.')[1] for name, module in table.items()
              if not module.endswith('.component')}
  return {}


def _imports(path: str) -> List[Tuple[str, List[str], int]]:
  """(module, imported names, line) for every import in a file, including those in functions."""
  found = []
  for node in ast.walk(ast.parse(open(path).read(), path)):
    if isinstance(node, ast.Import):
      found += [(alias.name, [], node.lineno) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found.append((node.module, [alias.name for alias in node.names], node.lineno))
  return found


def _targets(module: str, names: List[str], packages: Set[str]) -> List[str]:
  """What an import reaches in `components`, as dotted paths (e.g. components.pruner.pruning)."""
  if module == 'components':
    return [f'components.{n}' for n in names]
  if module.startswith('components.'):
    if not names:
      return [module]
    # `from components.pruner import pruning` reaches the module components.pruner.pruning.
    return [f'{module}.{n}' if module.count('.') == 1 and module.split('.')[1] in packages
            else module for n in names]
  return []


def violations(components_dir: str) -> Tuple[List[str], Dict[str, Set[str]]]:
  """(rule violations as readable lines, package dependency graph) of a components/ tree."""
  packages = {d for d in os.listdir(components_dir)
              if os.path.isfile(os.path.join(components_dir, d, '__init__.py'))}
  component_packages = packages - {SHARED_PACKAGE}
  public = _public_non_components(components_dir)
  found, graph = [], {p: set() for p in component_packages}
  for dirpath, _, files in os.walk(components_dir):
    for name in sorted(f for f in files if f.endswith('.py')):
      path = os.path.join(dirpath, name)
      rel = os.path.relpath(path, os.path.dirname(components_dir))
      parts = os.path.relpath(path, components_dir).split(os.sep)
      owner = parts[0] if len(parts) > 1 else None  # None: a top-level module.
      for module, names, line in _imports(path):
        for target in _targets(module, names, packages):
          bits = target.split('.')
          what = bits[1] if len(bits) > 1 else ''
          where = f'{rel}:{line} imports {target}'
          if what in SHARED_MODULES or what == SHARED_PACKAGE or what == '__init__':
            continue
          if what in public:
            if owner not in (None, SHARED_PACKAGE, public[what]) and public[what] in graph:
              graph[owner].add(public[what])  # Allowed, but it still orders the packages.
            continue
          if what not in component_packages:
            if owner is not None and what not in packages:
              found.append(f'{where}, which is not a module of components/')
            continue
          if owner in (None, SHARED_PACKAGE):
            found.append(f'{where}: the shared layer must not import a component package')
            continue
          if what == owner:
            continue
          graph[owner].add(what)
          if name == 'executor.py' and bits[2:3] == ['executor'] and len(bits) == 3:
            continue  # An executor subclassing another package's executor.
          found.append(f"{where}: a component package imports only the shared layer, its own "
                       "modules and the public configs (an executor.py may import another "
                       "package's executor)")
  return found, graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
  """Every cycle in a directed graph, each as the list of nodes along it."""
  found, state = [], {}

  def visit(node, stack):
    state[node] = 'open'
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 'open':
        found.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, stack)
    stack.pop()
    state[node] = 'done'

  for node in sorted(graph):
    if node not in state:
      visit(node, [])
  return found


def test_component_packages_follow_the_import_rules():
  found, _ = violations(os.path.join(REPO_ROOT, 'components'))
  assert not found, '\n'.join(found)


def test_no_import_cycle_between_packages():
  _, graph = violations(os.path.join(REPO_ROOT, 'components'))
  assert not cycles(graph), cycles(graph)


def _tree(root, files):
  for rel, text in files.items():
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  return str(root / 'components')


_INIT = ("_PUBLIC = {'Pruner': 'components.pruner.component', "
         "'PruningConfig': 'components.pruner.x'}\n")


@pytest.mark.parametrize('files,expected', [
    # A sideways import of another package's helper.
    ({'components/ptq_converter/executor.py': 'from components.pruner import pruning\n'},
     'components/ptq_converter/executor.py:1 imports components.pruner.pruning: a component '
     'package imports only'),
    # An executor of another package imported outside executor.py.
    ({'components/ota/component.py': 'from components.pusher import executor\n'},
     'components/ota/component.py:1 imports components.pusher.executor'),
    # A component class through the public API.
    ({'components/ota/component.py': 'from components import Pruner\n'},
     'components/ota/component.py:1 imports components.Pruner'),
    # The shared layer importing up.
    ({'components/common/x.py': 'import components.pusher.publisher\n'},
     'the shared layer must not import a component package'),
    ({'components/spec_keys.py': 'from components.pusher import publisher\n'},
     'components/spec_keys.py:1 imports components.pusher.publisher: the shared layer'),
])
def test_the_checker_reports_each_kind_of_forbidden_import(tmp_path, files, expected):
  root = _tree(tmp_path, {'components/__init__.py': _INIT,
                          **{f'components/{p}/__init__.py': '' for p in
                             ('common', 'pruner', 'ptq_converter', 'ota', 'pusher')},
                          **files})
  found, _ = violations(root)
  assert any(expected in line for line in found), found


def test_the_checker_allows_what_the_rules_allow(tmp_path):
  root = _tree(tmp_path, {
      'components/__init__.py': _INIT,
      **{f'components/{p}/__init__.py': '' for p in ('common', 'pruner', 'ota', 'pusher')},
      'components/ota/executor.py': 'from components.pusher import executor as base\n',
      'components/ota/component.py': ('from components import PruningConfig\n'
                                      'from components import spec_keys, errors\n'
                                      'from components.common import tflite\n'
                                      'from components.ota import repository\n'),
  })
  found, graph = violations(root)
  assert found == []
  assert graph['ota'] == {'pusher', 'pruner'}


def test_cycles_are_found():
  assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c', 'a']]
  assert cycles({'a': {'b'}, 'b': set()}) == []
