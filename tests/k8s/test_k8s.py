"""k8s/: the manifests render, validate and pass checkov; the Dockerfile is lint-clean."""
import json
import os
import re
import subprocess

import pytest
import yaml

from pipelines import run_kubeflow
from tests.conftest import REPO_ROOT

TOOLS = os.path.join(REPO_ROOT, '.venv-tools', 'bin')
K8S = os.path.join(REPO_ROOT, 'k8s')


def _tool(name):
  path = os.path.join(TOOLS, name)
  assert os.path.exists(path), f'{path} missing: run `make tools` (make test does)'
  return path


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
  proc = subprocess.run(['kubectl', 'kustomize', K8S], capture_output=True, text=True,
                        check=False, timeout=120)
  assert proc.returncode == 0, proc.stderr
  path = tmp_path_factory.mktemp('k8s') / 'rendered.yaml'
  path.write_text(proc.stdout)
  return path


def _docs(path):
  with open(path) as f:
    return {(d['kind'], d['metadata']['name']): d for d in yaml.safe_load_all(f) if d}


def _checkov(path):
  proc = subprocess.run(
      [_tool('checkov'), '-f', str(path), '--framework', 'kubernetes', '--skip-download',
       '--output', 'json'],
      capture_output=True, text=True, check=False, timeout=300)
  report = json.loads(proc.stdout)
  assert report['summary']['parsing_errors'] == 0
  assert report['summary']['passed'] > 0
  return report['results']


def test_manifests_render_with_everything_in_the_namespace(rendered):
  docs = _docs(rendered)

  assert set(docs) == {
      ('Namespace', 'tfx-edge'), ('ServiceAccount', 'tfx-edge-pipeline-runner'),
      ('Role', 'tfx-edge-pipeline-runner'), ('RoleBinding', 'tfx-edge-pipeline-runner'),
      ('PersistentVolumeClaim', run_kubeflow.PIPELINE_ROOT_PVC),
      ('Secret', run_kubeflow.OTA_KEYS_SECRET), ('Deployment', 'tfx-edge-ota-server'),
      ('Service', 'tfx-edge-ota-server'), ('NetworkPolicy', 'tfx-edge-ota-server')}
  for (kind, _), doc in docs.items():
    if kind != 'Namespace':
      assert doc['metadata']['namespace'] == 'tfx-edge'


def test_manifests_validate_against_the_kubernetes_schemas(rendered):
  proc = subprocess.run([_tool('kubernetes-validate'), '--strict', str(rendered)],
                        capture_output=True, text=True, check=False, timeout=300)

  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert proc.stdout.count('passed') == 9


def test_checkov_finds_nothing_and_every_skip_is_justified(rendered):
  results = _checkov(rendered)

  assert results['failed_checks'] == [], [c['check_id'] for c in results['failed_checks']]
  for skipped in results['skipped_checks']:
    assert len(skipped['check_result']['suppress_comment']) > 20, skipped['check_id']


def test_checkov_would_catch_an_unsafe_deployment(tmp_path):
  unsafe = tmp_path / 'unsafe.yaml'
  unsafe.write_text(yaml.safe_dump({
      'apiVersion': 'apps/v1', 'kind': 'Deployment',
      'metadata': {'name': 'unsafe', 'namespace': 'tfx-edge'},
      'spec': {'selector': {'matchLabels': {'a': 'b'}}, 'template': {
          'metadata': {'labels': {'a': 'b'}},
          'spec': {'containers': [{'name': 'c', 'image': 'nginx:latest',
                                   'securityContext': {'privileged': True}}]}}}}))

  failed = {c['check_id'] for c in _checkov(unsafe)['failed_checks']}

  assert {'CKV_K8S_16', 'CKV_K8S_22'} <= failed  # privileged; writable root filesystem


def test_ota_server_is_read_only_non_root_limited_and_probed(rendered):
  deployment = _docs(rendered)[('Deployment', 'tfx-edge-ota-server')]['spec']['template']['spec']
  container = deployment['containers'][0]

  assert deployment['securityContext']['runAsNonRoot'] is True
  assert container['securityContext']['readOnlyRootFilesystem'] is True
  assert container['securityContext']['allowPrivilegeEscalation'] is False
  assert container['resources']['limits'] and container['resources']['requests']
  assert container['livenessProbe'] and container['readinessProbe']
  published = next(v for v in deployment['volumes'] if v['name'] == 'published')
  assert published['persistentVolumeClaim'] == {'claimName': run_kubeflow.PIPELINE_ROOT_PVC,
                                                'readOnly': True}
  assert all(m.get('readOnly') for m in container['volumeMounts'] if m['name'] == 'published')


def test_dockerfile_is_lint_clean():
  proc = subprocess.run([_tool('hadolint'), os.path.join(K8S, 'Dockerfile')],
                        capture_output=True, text=True, check=False, timeout=120)

  assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_would_catch_an_unpinned_root_image(tmp_path):
  bad = tmp_path / 'Dockerfile'
  bad.write_text('FROM python:latest\nRUN pip install tfx\n')

  proc = subprocess.run([_tool('hadolint'), str(bad)], capture_output=True, text=True,
                        check=False, timeout=120)

  assert proc.returncode != 0
  assert 'DL3007' in proc.stdout  # latest tag


def test_dockerfile_installs_the_lock_runs_non_root_and_enters_through_the_kfp_entrypoint():
  with open(os.path.join(K8S, 'Dockerfile')) as f:
    text = f.read()

  assert re.search(r'^FROM python:3\.10[\w.-]*-slim', text, re.M)
  assert 'pip install --no-cache-dir -r requirements.lock' in text
  assert 'TF_USE_LEGACY_KERAS=1' in text
  user = re.search(r'^USER (\d+)', text, re.M)
  assert user and int(user.group(1)) > 0
  assert ('ENTRYPOINT ["python", "-m", "tfx.orchestration.kubeflow.v2.container.'
          'kubeflow_v2_run_executor"]') in text
  # The data the compiled pipeline imports by default is baked in at that path.
  assert f'python -m pipelines.data {run_kubeflow.DEFAULT_DATA_ROOT}' in text
