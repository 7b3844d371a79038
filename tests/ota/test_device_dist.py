"""The device client as its own distribution (device/): what it depends on, that its selection rule
is the project's, and (e2e) that a fresh Python 3.12 or 3.9 virtualenv with only it installed
fetches, health-checks and installs a model from a repository published over loopback HTTP.
"""
import ast
import glob
import os
import re
import sys

import numpy as np
from packaging.requirements import Requirement
import pytest
from tfx_edge_device import health
from tfx_edge_device import releases as device_releases

from components.common import releases
from components.common import tflite
from tests.conftest import REPO_ROOT
from tests.ota.support import device_fetch
from tests.ota.support import device_venv
from tests.ota.support import fetch
from tests.ota.support import verified_targets
from tests.ota.test_health import counting_server

DEVICE = os.path.join(REPO_ROOT, 'device')
SOURCE = os.path.join(DEVICE, 'src', 'tfx_edge_device')
# What the device package may import at module level: the standard library, tuf (and its
# securesystemslib), bsdiff4 and itself. LiteRT and numpy only inside functions of health.py.
ALLOWED = {'tuf', 'securesystemslib', 'bsdiff4', 'tfx_edge_device'}
ONLY_IN_FUNCTIONS = {'ai_edge_litert', 'numpy'}


def _project(path):
  """[project] dependencies, optional dependencies and requires-python of a pyproject.toml."""
  text = open(path).read()
  deps = re.search(r'^dependencies = \[(.*?)^\]', text, re.S | re.M).group(1)
  extras = re.search(r'^\[project.optional-dependencies\](.*?)^\[', text, re.S | re.M).group(1)
  return ([Requirement(r) for r in re.findall(r'^\s*"([^"]+)"', deps, re.M)],
          {k: [Requirement(r) for r in re.findall(r'"([^"]+)"', v)]
           for k, v in re.findall(r'^(\w+) = \[(.*?)\]', extras, re.M)},
          re.search(r'^requires-python = "([^"]+)"', text, re.M).group(1))


def test_the_device_distribution_needs_only_tuf_and_bsdiff4_on_python_3_9_to_3_13():
  deps, extras, python = _project(os.path.join(DEVICE, 'pyproject.toml'))
  assert sorted(r.name for r in deps) == ['bsdiff4', 'tuf']
  assert [r.name for r in extras['litert']] == ['ai-edge-litert']
  assert python == '>=3.9'
  # The versions the project's lock holds satisfy the device's ranges: one client for both.
  lock = dict(re.findall(r'^([A-Za-z0-9_.-]+)==(\S+)', open(
      os.path.join(REPO_ROOT, 'requirements.lock')).read(), re.M))
  for requirement in [*deps, *extras['litert']]:
    assert lock[requirement.name] in requirement.specifier, requirement


def test_the_device_package_imports_no_tfx_tensorflow_or_project_code():
  found = []
  for path in glob.glob(os.path.join(SOURCE, '*.py')):
    tree = ast.parse(open(path).read(), path)
    top_level = set(id(n) for n in tree.body)
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        names = [node.module]
      else:
        continue
      for name in names:
        root = name.split('.')[0]
        stdlib = root in sys.stdlib_module_names
        if root in ONLY_IN_FUNCTIONS and id(node) not in top_level:
          continue
        if not stdlib and root not in ALLOWED:
          found.append(f'{os.path.basename(path)}:{node.lineno} imports {name}')
  assert not found


def test_the_project_installs_the_device_package_it_runs():
  import tfx_edge_device  # pylint: disable=g-import-not-at-top
  assert os.path.dirname(tfx_edge_device.__file__) == SOURCE


def test_the_device_selection_rule_is_the_projects(repo, server, tmp_path):
  """The regression gate (the project's rule) and devices (the device's) see one release."""
  for i in range(1, 6):
    repo.publish('digits', f'model-{i}'.encode(), rollout_percent=[100, 30, 100, 50, 10][i - 1])
  repo.halt('digits', 3)
  repo.publish('digits', b'canary', channel='canary')
  fetch(repo, server, tmp_path / 'device', device_id='observer')
  targets = verified_targets(tmp_path / 'device')
  for device_id in [None] + [f'device-{i}' for i in range(300)]:
    for channel in ('stable', 'canary', 'beta'):
      assert (device_releases.select_release(targets, 'digits', channel, device_id) ==
              releases.select_release(targets, 'digits', channel, device_id)), device_id


def _publish_as_the_pusher(repo, model, golden_of=None):
  return repo.publish('digits', model, info={'tensors': tflite.io_specs(golden_of or model)},
                      golden=health.record_bytes(health.golden_record(golden_of or model)))


@pytest.mark.e2e
def test_a_python_3_12_device_installs_only_the_client_and_health_checks_with_litert(
    repo, tmp_path, tflite_models):
  venv, names = device_venv(tmp_path, '3.12', '[litert]')
  assert {'tuf', 'bsdiff4', 'ai-edge-litert', 'numpy'} <= names
  release = _publish_as_the_pusher(repo, tflite_models['int8'])
  dest = tmp_path / 'device'
  with counting_server(repo.repo_dir) as (url, _):
    proc, status = device_fetch(venv, repo.metadata_dir, url, dest)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (dest / 'digits.tflite').read_bytes() == tflite_models['int8']
    assert status['installed']['sha256'] == release.sha256
    # LiteRT on the device's Python computes what the publisher's did.
    assert status['health_check']['passed'] and status['health_check']['ran']
    assert 'health check: passed: load, tensors, golden' in proc.stdout

    garbage = np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    _publish_as_the_pusher(repo, garbage, golden_of=tflite_models['int8'])
    proc, status = device_fetch(venv, repo.metadata_dir, url, dest)
  assert proc.returncode == 4, proc.stderr[-2000:]
  assert 'failed its health check' in proc.stderr
  assert status['outcome'] == 'refused' and status['installed']['version'] == 1
  assert (dest / 'digits.tflite').read_bytes() == tflite_models['int8']


@pytest.mark.e2e
def test_a_python_3_9_device_without_litert_installs_and_says_the_check_was_skipped(
    repo, tmp_path, tflite_models):
  venv, names = device_venv(tmp_path, '3.9')
  assert 'numpy' not in names and 'ai-edge-litert' not in names
  _publish_as_the_pusher(repo, tflite_models['fp32'])
  dest = tmp_path / 'device'
  with counting_server(repo.repo_dir) as (url, _):
    proc, status = device_fetch(venv, repo.metadata_dir, url, dest)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (dest / 'digits.tflite').read_bytes() == tflite_models['fp32']
  assert status['outcome'] == 'installed' and not status['health_check']['ran']
  assert 'ai-edge-litert is not installed' in status['health_check']['reason']
