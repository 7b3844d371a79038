"""The OTA repository and device client against a real HTTP server on loopback."""
import concurrent.futures
import datetime
import os
import shutil
import subprocess
import sys
import threading

import pytest
from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import Metadata

from components import errors
from components.ota import repository
from components.ota import signing_keys
from tests.conftest import REPO_ROOT
from tests.ota.support import GATED
from tests.ota.support import days_ago
from tests.ota.support import fetch as _fetch
from tests.ota.support import installed as _installed
from tests.ota.support import status_lines


def test_client_installs_v1_then_updates_to_v2(repo, server, tmp_path):
  device = tmp_path / 'device'
  repo.publish('digits', b'model-one', info={'mode': 'int8'})

  first = _fetch(repo, server, device)
  again = _fetch(repo, server, device)
  repo.publish('digits', b'model-two')
  second = _fetch(repo, server, device)

  assert (first.version, first.updated) == (1, True)
  assert (again.version, again.updated) == (1, False)
  assert (second.version, second.updated) == (2, True)
  assert _installed(device) == b'model-two'
  # Trusted metadata is kept between runs.
  assert os.path.exists(device / 'metadata' / 'root.json')


def test_channels_are_separate_and_versions_are_per_name(repo, server, tmp_path):
  repo.publish('digits', b'stable-1')
  canary = repo.publish('digits', b'canary-2', channel='canary')

  stable = _fetch(repo, server, tmp_path / 'a')
  fetched_canary = _fetch(repo, server, tmp_path / 'b', channel='canary')

  assert (stable.version, fetched_canary.version, canary.version) == (1, 2, 2)
  assert _installed(tmp_path / 'b') == b'canary-2'


def test_a_tampered_target_is_rejected_and_the_old_model_stays(repo, server, tmp_path):
  device = tmp_path / 'device'
  repo.publish('digits', b'model-one')
  _fetch(repo, server, device)
  release = repo.publish('digits', b'model-two')
  directory, base = os.path.split(release.path)
  with open(os.path.join(repo.targets_dir, directory, f'{release.sha256}.{base}'), 'wb') as f:
    f.write(b'model-bad')  # Same length, other bytes.

  with pytest.raises(tuf_exceptions.LengthOrHashMismatchError):
    _fetch(repo, server, device)

  assert _installed(device) == b'model-one'


def test_tampered_metadata_is_rejected(repo, server, tmp_path):
  repo.publish('digits', b'model-one')
  path = os.path.join(repo.metadata_dir, '1.digits.json')  # digits' delegated targets role.
  with open(path) as f:
    text = f.read()
  with open(path, 'w') as f:
    f.write(text.replace('"stable"', '"canary"'))

  # The signature no longer matches the signed content.
  with pytest.raises(tuf_exceptions.UnsignedMetadataError, match='digits'):
    _fetch(repo, server, tmp_path / 'device')

  assert not os.path.exists(tmp_path / 'device' / 'digits.tflite')


def test_expired_metadata_is_rejected(repo, server, tmp_path):
  repo.publish('digits', b'model-one')
  path = os.path.join(repo.metadata_dir, 'timestamp.json')
  timestamp = Metadata.from_file(path)
  timestamp.signed.expires = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
  timestamp.signatures.clear()
  timestamp.sign(signing_keys.load(repo._keys_dir)['timestamp'])  # pylint: disable=protected-access
  timestamp.to_file(path)

  with pytest.raises(tuf_exceptions.ExpiredMetadataError):
    _fetch(repo, server, tmp_path / 'device')


def test_replayed_older_metadata_is_rejected(repo, server, tmp_path):
  device = tmp_path / 'device'
  repo.publish('digits', b'model-one')
  old_timestamp = open(os.path.join(repo.metadata_dir, 'timestamp.json'), 'rb').read()
  repo.publish('digits', b'model-two')
  _fetch(repo, server, device)
  # An attacker (or a stale mirror) serves the older, validly signed timestamp.
  with open(os.path.join(repo.metadata_dir, 'timestamp.json'), 'wb') as f:
    f.write(old_timestamp)

  with pytest.raises(tuf_exceptions.BadVersionNumberError):
    _fetch(repo, server, device)

  assert _installed(device) == b'model-two'


@pytest.mark.parametrize('fail_at', ['targets', 'snapshot', 'timestamp'])
def test_a_push_that_dies_midway_leaves_the_old_release_and_a_rerun_completes(
    repo, server, tmp_path, monkeypatch, fail_at):
  repo.publish('digits', b'model-one')
  write = repository.OTARepository._write  # pylint: disable=protected-access

  def dying_write(self, md):
    if md.signed.type == fail_at:
      raise OSError(28, 'No space left on device')
    write(self, md)

  monkeypatch.setattr(repository.OTARepository, '_write', dying_write)
  with pytest.raises(OSError):
    repo.publish('digits', b'model-two')
  assert _fetch(repo, server, tmp_path / 'during').version == 1
  assert [r.version for r in repo.releases('digits')] == [1]

  monkeypatch.setattr(repository.OTARepository, '_write', write)
  rerun = repo.publish('digits', b'model-two')

  assert rerun.version == 2
  assert _fetch(repo, server, tmp_path / 'during').version == 2
  assert _installed(tmp_path / 'during') == b'model-two'


def test_pushing_the_same_model_twice_publishes_one_version(repo):
  first = repo.publish('digits', b'model-one')
  again = repo.publish('digits', b'model-one')

  assert first == again
  assert len(repo.releases('digits')) == 1


def test_concurrent_pushes_get_distinct_versions(repo):
  barrier = threading.Barrier(4)

  def push(i):
    barrier.wait()
    return repo.publish('digits', f'model-{i}'.encode()).version

  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    versions = list(pool.map(push, range(4)))

  assert sorted(versions) == [1, 2, 3, 4]
  assert [r.version for r in repo.releases('digits')] == [1, 2, 3, 4]


@pytest.mark.parametrize('name,channel,message', [
    ('../escape', 'stable', "model_name='../escape' is not accepted"),
    ('digits', 'Stable', "channel='Stable' is not accepted"),
    ('digits', 'a/b', "channel='a/b' is not accepted"),
])
def test_names_and_channels_that_could_escape_are_rejected(repo, name, channel, message):
  with pytest.raises(errors.ConfigError, match=message):
    repo.publish(name, b'model', channel)

  assert repo.releases() == []


def test_a_repository_is_created_once_and_must_exist_before_a_publish(repo, tmp_path):
  with pytest.raises(errors.OTARepositoryError, match=f'OTA repository {repo.repo_dir} already '
                     'exists'):
    repo.init()
  missing = repository.OTARepository(str(tmp_path / 'none'), str(tmp_path / 'keys'))
  with pytest.raises(errors.OTARepositoryError, match='no targets metadata; run `tfx-edge ota '
                     'init` first'):
    missing.publish('digits', b'model')
  with pytest.raises(errors.OTARepositoryError, match='no timestamp.json; run `tfx-edge ota init` '
                     'first'):
    missing.releases()


def test_rolling_back_to_a_version_never_published_names_the_versions_there_are(repo):
  repo.publish('digits', b'model-one')
  repo.publish('digits', b'model-two')

  with pytest.raises(errors.NotPublishedError, match=r"'digits' has no version 7; published "
                     r'versions: \[1, 2\]'):
    repo.rollback('digits', 7)

  rolled = repo.rollback('digits', 1)
  assert (rolled.version, repo.read_target(rolled)) == (3, b'model-one')
  assert rolled.custom['rolled_back_from'] == 1


def test_a_device_asking_for_a_model_never_published_is_told_so(repo, server, tmp_path):
  repo.publish('digits', b'model-one')

  with pytest.raises(errors.NotPublishedError, match="no model 'digits' is published on channel "
                     "'canary'"):
    _fetch(repo, server, tmp_path / 'device', channel='canary')

  assert not os.path.exists(tmp_path / 'device' / 'digits.tflite')


def test_cli_init_publish_rollback_status_fetch(tmp_path, tiny_model):
  from components.ptq_converter import conversion  # pylint: disable=g-import-not-at-top
  model_file = tmp_path / 'model.tflite'
  model_file.write_bytes(conversion.convert(tiny_model, 'float32'))
  retrained = tmp_path / 'retrained.tflite'
  retrained.write_bytes(conversion.convert(tiny_model, 'dynamic_range'))
  cli = [os.path.join(os.path.dirname(sys.executable), 'tfx-edge'), 'ota']
  repo_dir, keys_dir = str(tmp_path / 'repo'), str(tmp_path / 'keys')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')

  def run(*args):
    proc = subprocess.run(cli + list(args), capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout

  run('init', '--repo', repo_dir, '--keys', keys_dir)
  run('publish', '--repo', repo_dir, '--keys', keys_dir, '--model', str(model_file), '--name',
      'tiny')
  for channel in ('stable', 'canary'):
    run('publish', '--repo', repo_dir, '--keys', keys_dir, '--model', str(retrained), '--name',
        'tiny', '--channel', channel)
  out = run('rollback', '--repo', repo_dir, '--keys', keys_dir, '--name', 'tiny',
            '--to-version', '1')
  status = status_lines(run('status', '--repo', repo_dir))[0]

  assert 'to the bytes of version 1 as version 4 on stable' in out
  assert [(s['version'], s['channel']) for s in status] == [
      (1, 'stable'), (2, 'stable'), (3, 'canary'), (4, 'stable')]
  assert status[3]['sha256'] == status[0]['sha256']
  # Keys stay private files and never appear in the metadata.
  assert oct(os.stat(os.path.join(keys_dir, 'targets.pem')).st_mode & 0o777) == '0o600'
  key_text = open(os.path.join(keys_dir, 'targets.pem')).read()
  for meta in os.listdir(os.path.join(repo_dir, 'metadata')):
    assert key_text.splitlines()[1] not in open(os.path.join(repo_dir, 'metadata', meta)).read()
  shutil.rmtree(keys_dir)
  proc = subprocess.run(cli + ['publish', '--repo', repo_dir, '--keys', keys_dir, '--model',
                               str(model_file), '--name', 'tiny'], capture_output=True, text=True,
                        env=env, cwd=REPO_ROOT, timeout=300, check=False)
  assert proc.returncode == 2
  # A publish reads only the keys it signs with: the root key can stay offline.
  assert "signing key for role 'targets' not found" in proc.stderr


def _model_bytes(seed, n=4096):
  import numpy as np  # pylint: disable=g-import-not-at-top
  return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_client_applies_a_delta_when_one_matches_what_it_has(repo, server, tmp_path):
  device = tmp_path / 'device'
  v1 = _model_bytes(1)
  v2 = bytearray(v1)
  v2[100:140] = _model_bytes(2, 40)  # A small change, as fine-tuning a few layers makes.
  repo.publish('digits', v1)
  _fetch(repo, server, device)

  release = repo.publish('digits', bytes(v2))
  result = _fetch(repo, server, device)

  assert [p['from_version'] for p in release.custom['patches']] == [1]
  assert result.via_patch and result.version == 2
  assert result.downloaded_bytes == release.custom['patches'][0]['length'] < len(v2) / 4
  assert _installed(device) == bytes(v2)


def test_a_patch_larger_than_the_limit_is_not_published(repo):
  repo.publish('digits', _model_bytes(1))

  release = repo.publish('digits', _model_bytes(2))  # Unrelated bytes: the patch is no smaller.

  assert release.custom['patches'] == []


def test_a_client_without_a_matching_version_downloads_the_full_file(repo, server, tmp_path):
  v1 = _model_bytes(1)
  repo.publish('digits', v1)
  repo.publish('digits', v1[:-10] + b'0123456789')

  result = _fetch(repo, server, tmp_path / 'new-device')

  assert not result.via_patch and result.downloaded_bytes == len(v1)


def test_a_tampered_patch_is_rejected_and_the_full_file_installed(repo, server, tmp_path, caplog):
  device = tmp_path / 'device'
  v1 = _model_bytes(1)
  repo.publish('digits', v1)
  _fetch(repo, server, device)
  release = repo.publish('digits', v1[:-10] + b'0123456789')
  patch = release.custom['patches'][0]
  directory, base = os.path.split(patch['path'])
  patch_file = next(f for f in os.listdir(os.path.join(repo.targets_dir, directory))
                    if f.endswith(base))
  with open(os.path.join(repo.targets_dir, directory, patch_file), 'r+b') as f:
    f.seek(-1, 2)
    last = f.read(1)
    f.seek(-1, 2)
    f.write(b'\0' if last != b'\0' else b'\1')

  with caplog.at_level('WARNING'):
    result = _fetch(repo, server, device)

  assert not result.via_patch and result.version == 2
  assert 'failed verification' in caplog.text
  assert _installed(device) == v1[:-10] + b'0123456789'


_KILLED_PUSH = '''
import os, signal, sys
from components.ota import repository
stage = sys.argv[3]
write_target, write_md = repository.OTARepository._write_target, repository.OTARepository._write

def die():
  os.kill(os.getpid(), signal.SIGKILL)

def write_target_then_maybe_die(self, path, data):
  write_target(self, path, data)
  if stage == 'target-file':
    die()

def write_md_or_die(self, md):
  if md.signed.type == stage:
    die()
  write_md(self, md)

repository.OTARepository._write_target = write_target_then_maybe_die
repository.OTARepository._write = write_md_or_die
repo = repository.OTARepository(sys.argv[1], sys.argv[2])
if sys.argv[4] == 'publish':
  repo.publish('digits', b'model-two')
elif sys.argv[4] == 'refresh':
  repo.refresh()
else:
  repo.approve('digits', 2, by='alice')
'''


def _kill_at(repo, stage, operation):
  """Runs the operation in a child process that SIGKILLs itself at `stage`."""
  proc = subprocess.run([sys.executable, '-c', _KILLED_PUSH, repo.repo_dir, repo._keys_dir,  # pylint: disable=protected-access
                         stage, operation], cwd=REPO_ROOT, capture_output=True, text=True,
                        timeout=120, check=False)
  assert proc.returncode == -9, proc.stderr


def _push_or_approve(repo, operation):
  if operation == 'publish':
    return repo.publish('digits', b'model-two')
  return repo.approve('digits', 2, by='alice')


@pytest.mark.parametrize('operation,stage', [
    *[('publish', stage) for stage in ('target-file', 'targets', 'snapshot', 'timestamp')],
    # An approval writes no target file.
    *[('approve', stage) for stage in ('targets', 'snapshot', 'timestamp')],
])
def test_a_killed_push_leaves_a_consistent_release_and_a_rerun_completes(repo, server, tmp_path,
                                                                         operation, stage):
  repo.publish('digits', b'model-one')
  if operation == 'approve':
    repo.publish('digits', b'model-two', require_approval=True, gated_by=GATED)
  _kill_at(repo, stage, operation)

  during = _fetch(repo, server, tmp_path / 'device')
  rerun = _push_or_approve(repo, operation)  # The re-run finishes what the killed one wrote.
  after = _fetch(repo, server, tmp_path / 'device')

  assert during.version == 1
  assert rerun.version == 2 and after.version == 2
  assert _installed(tmp_path / 'device') == b'model-two'
  assert repo.releases('digits')[-1].state == 'live'


@pytest.mark.parametrize('stage,rerun_signs', [
    ('targets', ['targets', 'snapshot', 'timestamp']),
    ('snapshot', ['snapshot', 'timestamp']),  # The new targets file was written: publish it.
    ('timestamp', ['timestamp']),  # The new snapshot was written too.
])
def test_a_killed_refresh_leaves_metadata_devices_accept_and_a_rerun_finishes_it(
    repo, server, tmp_path, stage, rerun_signs):
  # Targets signed 46 days ago is within its 45-day window; a job kept snapshot and timestamp
  # fresh with the online keys. The refresh re-signs all three, and is killed at `stage`.
  days_ago(repo, 46).publish('digits', b'model-one')
  days_ago(repo, 1).refresh(online_only=True)
  before = {s['role']: s['version'] for s in repo.expiry_status()}
  _fetch(repo, server, tmp_path / 'device')

  _kill_at(repo, stage, 'refresh')
  during = _fetch(repo, server, tmp_path / 'device')
  fresh_device = _fetch(repo, server, tmp_path / 'fresh')
  rerun = repo.refresh()
  again = repo.refresh()
  after = _fetch(repo, server, tmp_path / 'device')

  assert (during.version, fresh_device.version, after.version) == (1, 1, 1)
  assert rerun['resigned'] == rerun_signs and again['resigned'] == []
  status = {s['role']: s for s in repo.expiry_status()}
  assert [status[r]['version'] for r in ('targets', 'snapshot', 'timestamp')] == [
      before[r] + 1 for r in ('targets', 'snapshot', 'timestamp')]
  assert not [s for s in status.values() if s['warning']]
  assert [r.version for r in repo.releases()] == [1]  # Nothing new was published.
