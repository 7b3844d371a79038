"""The README and docs/ tell the truth: links resolve, every page is reachable, nothing is stale."""
import glob
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

README = os.path.join(REPO_ROOT, 'README.md')
PAGES = sorted(glob.glob(os.path.join(REPO_ROOT, 'docs', '*.md')))
_LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')


def _read(path):
  with open(path, encoding='utf-8') as f:
    return f.read()


def _anchors(markdown):
  """GitHub's anchors for the headings of a page."""
  anchors = set()
  for heading in re.findall(r'^#+\s+(.+?)\s*$', markdown, re.M):
    slug = re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')
    anchors.add(slug)
  return anchors


@pytest.mark.parametrize('path', [README, *PAGES], ids=os.path.basename)
def test_every_relative_link_and_anchor_resolves(path):
  text = _read(path)
  broken = []
  for target in _LINK.findall(text):
    if re.match(r'^[a-z]+://|^mailto:', target):
      continue
    file_part, _, anchor = target.partition('#')
    resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part \
        else path
    if not os.path.exists(resolved):
      broken.append(f'{target}: no such file')
    elif anchor and resolved.endswith('.md') and anchor not in _anchors(_read(resolved)):
      broken.append(f'{target}: no such heading')
  assert not broken, broken


def test_the_readme_is_short_and_links_every_page():
  text = _read(README)
  assert len(text.splitlines()) <= 120
  linked = {os.path.normpath(os.path.join(REPO_ROOT, t.partition('#')[0]))
            for t in _LINK.findall(text)}
  assert PAGES and not set(PAGES) - linked, set(PAGES) - linked
  for command in ('make demo', 'make test', 'make unit', 'make lint'):
    assert command in text


@pytest.mark.parametrize('path', [README, *PAGES], ids=os.path.basename)
def test_docs_speak_of_the_project_not_of_issues(path):
  assert not re.search(r'\bissues? #?\d+', _read(path), re.I)


def test_the_layout_section_matches_the_tree():
  proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'scripts', 'layout.py'),
                         '--check'], capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr


def test_the_layout_check_fails_on_a_stale_section(tmp_path):
  sys.path.insert(0, os.path.join(REPO_ROOT, 'scripts'))
  try:
    import layout  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  stale = layout.replace_block(_read(layout.DOC), '```\ncomponents/\n```')
  assert stale != _read(layout.DOC)
  assert layout.replace_block(stale, layout.layout()) == _read(layout.DOC)


def _options(module, *args):
  """The --options a command line accepts, read from its --help."""
  proc = subprocess.run([sys.executable, '-m', module, *args, '--help'], capture_output=True,
                        text=True, cwd=REPO_ROOT, check=False, timeout=300)
  assert proc.returncode == 0, proc.stderr
  return set(re.findall(r'(?<![\w-])(--[a-z][a-z0-9-]+)', proc.stdout)) - {'--help'}


@pytest.mark.parametrize('module,args,page', [
    ('pipelines.run_local', (), 'demo.md'),
    ('pipelines.run_kubeflow', (), 'kubeflow.md'),
    *[('components.ota.cli', ('ota', command), 'ota.md') for command in
      ('init', 'publish', 'rollback', 'rotate-keys', 'status', 'fetch')],
])
def test_every_command_line_option_is_documented(module, args, page):
  text = _read(os.path.join(REPO_ROOT, 'docs', page))
  missing = sorted(o for o in _options(module, *args) if o not in text)
  assert not missing, f'docs/{page} does not mention {missing}'


def test_every_test_the_docs_cite_exists():
  names = set()
  for path in glob.glob(os.path.join(REPO_ROOT, 'tests', '**', 'test_*.py'), recursive=True):
    names |= set(re.findall(r'^def (test_\w+)', _read(path), re.M))
  cited = set()
  for path in [README, *PAGES]:
    cited |= set(re.findall(r'\b(test_\w+)\b(?!\.py)', _read(path)))
  cited = {c for c in cited if not c.endswith('_')}
  assert cited, 'the docs cite no test at all'
  assert not cited - names, sorted(cited - names)
