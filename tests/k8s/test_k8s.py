"""k8s/: the manifests render, validate and pass checkov; the Dockerfile is lint-clean; the OTA
refresh job's command works with the two keys it mounts."""
import datetime
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import tomli
import yaml

from pipelines import run_kubeflow
from tests.conftest import REPO_ROOT

TOOLS = os.path.join(REPO_ROOT, '.venv-tools', 'bin')
K8S = os.path.join(REPO_ROOT, 'k8s')
ONLINE_KEYS_SECRET = 'tfx-edge-ota-online-keys'


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
      ('Service', 'tfx-edge-ota-server'), ('NetworkPolicy', 'tfx-edge-ota-server'),
      ('Secret', ONLINE_KEYS_SECRET), ('CronJob', 'tfx-edge-ota-refresh'),
      ('NetworkPolicy', 'tfx-edge-ota-refresh')}
  for (kind, _), doc in docs.items():
    if kind != 'Namespace':
      assert doc['metadata']['namespace'] == 'tfx-edge'


def test_manifests_validate_against_the_kubernetes_schemas(rendered):
  proc = subprocess.run([_tool('kubernetes-validate'), '--strict', str(rendered)],
                        capture_output=True, text=True, check=False, timeout=300)

  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert proc.stdout.count('passed') == 12


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


def _refresh_pod(rendered):
  cronjob = _docs(rendered)[('CronJob', 'tfx-edge-ota-refresh')]
  return cronjob, cronjob['spec']['jobTemplate']['spec']['template']['spec']


def test_ota_refresh_runs_often_with_only_the_online_keys_non_root_and_read_only(rendered):
  cronjob, pod = _refresh_pod(rendered)
  [container] = pod['containers']
  volumes = {v['name']: v for v in pod['volumes']}
  mounts = {m['name']: m for m in container['volumeMounts']}
  keys = volumes['online-keys']['secret']

  assert cronjob['spec']['concurrencyPolicy'] == 'Forbid'
  # Every 6 hours: many runs within the shortest refresh window (3.5 days for timestamp).
  assert cronjob['spec']['schedule'].split()[1] == '*/6'
  assert container['command'][:3] == ['tfx-edge', 'ota', 'refresh']
  assert '--online-only' in container['command']
  assert keys['secretName'] == ONLINE_KEYS_SECRET
  assert sorted(item['key'] for item in keys['items']) == ['snapshot.pem', 'timestamp.pem']
  assert _docs(rendered)[('Secret', ONLINE_KEYS_SECRET)].get('data') is None  # Created apart.
  assert mounts['online-keys']['readOnly'] is True
  assert mounts['repository']['subPath'] == 'ota'
  assert mounts['repository']['mountPath'] == run_kubeflow.DEFAULT_OTA_REPOSITORY
  assert volumes['repository']['persistentVolumeClaim']['claimName'] == (
      run_kubeflow.PIPELINE_ROOT_PVC)
  assert pod['securityContext']['runAsNonRoot'] is True and pod['automountServiceAccountToken'] is (
      False)
  assert container['securityContext']['readOnlyRootFilesystem'] is True
  assert container['securityContext']['allowPrivilegeEscalation'] is False
  assert container['resources']['limits'] and container['resources']['requests']


def test_the_refresh_jobs_command_refreshes_a_repository_with_only_its_two_keys(rendered,
                                                                                 tmp_path):
  from components.ota import repository  # pylint: disable=g-import-not-at-top
  _, pod = _refresh_pod(rendered)
  [container] = pod['containers']
  command = container['command']
  repo_dir, keys_dir = str(tmp_path / 'ota'), str(tmp_path / 'keys')
  then = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=8)
  past = repository.OTARepository(repo_dir, keys_dir, clock=lambda: then)
  past.init()
  past.publish('digits', b'model-one')  # Its timestamp expired a day ago.
  secret = tmp_path / 'secret'
  secret.mkdir()
  volumes = {v['name']: v for v in pod['volumes']}
  for item in volumes['online-keys']['secret']['items']:
    shutil.copy(os.path.join(keys_dir, item['key']), secret / item['path'])
  # The job's command, with the mounts mapped to local directories.
  mounted = {command[command.index('--repo') + 1]: repo_dir,
             command[command.index('--keys') + 1]: str(secret)}
  args = [mounted.get(a, a) for a in command]

  proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), args[0]), *args[1:]],
                        capture_output=True, text=True, check=False, timeout=120, cwd=tmp_path)

  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith('re-signed timestamp: version 3, expires ')
  assert sorted(os.listdir(secret)) == ['snapshot.pem', 'timestamp.pem']
  status = {s['role']: s for s in repository.OTARepository(repo_dir).expiry_status()}
  assert status['timestamp']['warning'] is None and status['timestamp']['expires_in_s'] > 6 * 86400


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
  # Every directory the project's package discovery reads is copied in before the install, or
  # the image silently lacks a package (device/src holds the device client OTAPusher imports).
  with open(os.path.join(REPO_ROOT, 'pyproject.toml'), 'rb') as f:
    where = tomli.load(f)['tool']['setuptools']['packages']['find']['where']
  copied = re.findall(r'^COPY (\S+) \./', text, re.M)
  for directory in where:
    top = directory.split('/')[0]
    if top != '.':
      assert top in copied, f'k8s/Dockerfile does not COPY {top}/ (package discovery: {where})'
  for package in ('components', 'pipelines'):
    assert package in copied
