"""Writes the layout section of docs/architecture.md from the tree, so it cannot go stale.

    python scripts/layout.py           # print the layout
    python scripts/layout.py --write   # rewrite the block between the layout markers
    python scripts/layout.py --check   # exit 1 when the block differs from the tree (tests use it)

One line per directory and file under components/, pipelines/, benchmarks/, scripts/ and k8s/,
indented two spaces per level, with what the file says about itself: a module's docstring, a
script's or manifest's first comment. A package's docstring stands on its directory's line.
"""
import argparse
import ast
import os
import sys
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, 'docs', 'architecture.md')
TOP = ('components', 'pipelines', 'benchmarks', 'scripts', 'k8s')
START, END = '<!-- layout:start -->', '<!-- layout:end -->'


def describe(path: str) -> Optional[str]:
  """The first line of what a file says about itself, or None."""
  if os.path.isdir(path):
    init = os.path.join(path, '__init__.py')
    return describe(init) if os.path.exists(init) else None
  if path.endswith('.py'):
    with open(path, encoding='utf-8') as f:
      doc = ast.get_docstring(ast.parse(f.read(), path))
    return doc.strip().splitlines()[0] if doc else None
  if path.endswith(('.sh', '.yaml', '.yml')) or os.path.basename(path) == 'Dockerfile':
    with open(path, encoding='utf-8') as f:
      for line in f:
        if line.startswith('#!'):
          continue
        return line[1:].strip() if line.startswith('#') and line[1:].strip() else None
  return None


def _entries(directory: str, depth: int) -> List[str]:
  lines = []
  for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name)
    if name.startswith('.') or name == '__pycache__' or name == '__init__.py' or name.endswith(
        '.pyc') or name.endswith('.egg-info'):
      continue
    label = name + ('/' if os.path.isdir(path) else '')
    text = describe(path)
    lines.append('  ' * depth + label + (f'  # {text}' if text else ''))
    if os.path.isdir(path):
      lines += _entries(path, depth + 1)
  return lines


def layout(root: str = ROOT) -> str:
  """The layout block: a fenced code block of every entry under the top-level folders."""
  lines = []
  for top in TOP:
    text = describe(os.path.join(root, top))
    lines.append(f'{top}/' + (f'  # {text}' if text else ''))
    lines += _entries(os.path.join(root, top), 1)
  return '```\n' + '\n'.join(lines) + '\n```'


def replace_block(document: str, block: str) -> str:
  """The document with the text between the layout markers replaced by block."""
  if START not in document or END not in document:
    raise ValueError(f'{DOC} has no {START} ... {END} markers to put the layout between.')
  head, rest = document.split(START, 1)
  _, tail = rest.split(END, 1)
  return f'{head}{START}\n{block}\n{END}{tail}'


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  mode = parser.add_mutually_exclusive_group()
  mode.add_argument('--write', action='store_true', help='rewrite the block in ' + DOC)
  mode.add_argument('--check', action='store_true', help='exit 1 when the block is stale')
  args = parser.parse_args(argv)
  block = layout()
  if not (args.write or args.check):
    print(block)
    return 0
  with open(DOC, encoding='utf-8') as f:
    current = f.read()
  wanted = replace_block(current, block)
  if args.check:
    if wanted != current:
      print(f'{DOC}: the layout section is stale; run `make layout`.', file=sys.stderr)
      return 1
    return 0
  with open(DOC, 'w', encoding='utf-8') as f:
    f.write(wanted)
  return 0


if __name__ == '__main__':
  sys.exit(main())
