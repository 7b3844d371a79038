"""One delegated targets role per model: a device downloads its model's metadata and no other's.

Devices fetch over real HTTP on loopback from a server that records every path requested.
"""
import concurrent.futures
import contextlib
import http.server
import os
import threading
import urllib.parse

import pytest
from tuf.api.metadata import Metadata

from components import errors
from components.ota import client
from components.ota import repository
from components.ota import storage as storage_lib
from tests.ota.support import days_ago
from tests.ota.support import fetch
from tests.ota.support import files
from tests.ota.support import installed

NAMES = ('digits', 'faces', 'words')


@contextlib.contextmanager
def counting_server(repo):
  """An HTTP server on loopback over repo's storage; yields (url, the list of paths GET)."""
  requested = []

  class Handler(http.server.BaseHTTPRequestHandler):

    def do_GET(self):  # pylint: disable=invalid-name
      path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip('/')
      requested.append(path)
      try:
        body = repo.storage.read(path)
      except (FileNotFoundError, IsADirectoryError):
        self.send_error(404)
        return
      self.send_response(200)
      self.send_header('Content-Length', str(len(body)))
      self.end_headers()
      self.wfile.write(body)

    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f'http://127.0.0.1:{server.server_address[1]}', requested
  finally:
    server.shutdown()
    server.server_close()


def _metadata(requested):
  return sorted(p for p in requested if p.startswith('metadata/'))


def _newest(repo, role):
  return repo._versions()[role]  # pylint: disable=protected-access


def test_a_device_downloads_top_level_targets_and_its_models_role_only(repo, tmp_path):
  for version in range(3):
    for name in NAMES:
      repo.publish(name, f'{name}-{version}'.encode())
  device = tmp_path / 'device'

  with counting_server(repo) as (url, requested):
    first = fetch(repo, url, device)
    first_requests = list(requested)
    requested.clear()
    repo.publish('faces', b'faces-new')  # Another model's push: nothing for this device.
    repo.publish('digits', b'digits-new')
    second = fetch(repo, url, device)

  assert (first.version, second.version) == (3, 4)
  assert installed(device) == b'digits-new'
  root = _newest(repo, 'root')
  snapshot, targets, digits = (_newest(repo, r) for r in ('snapshot', 'targets', 'digits'))
  assert _metadata(first_requests) == sorted([
      f'metadata/{root + 1}.root.json', 'metadata/timestamp.json',
      f'metadata/{snapshot - 2}.snapshot.json', f'metadata/{targets}.targets.json',
      f'metadata/{digits - 1}.digits.json'])
  # The update: timestamp, snapshot and the new digits role; targets.json has not changed.
  assert _metadata(requested) == sorted([
      f'metadata/{root + 1}.root.json', 'metadata/timestamp.json',
      f'metadata/{snapshot}.snapshot.json', f'metadata/{digits}.digits.json'])
  assert not [p for p in first_requests + requested if 'faces' in p or 'words' in p]
  # What the device keeps: no other model's metadata either.
  assert sorted(os.listdir(device / 'metadata')) == [
      'digits.json', 'root.json', 'snapshot.json', 'targets.json', 'timestamp.json']


def test_targets_delegates_each_name_and_snapshot_lists_every_role(repo):
  for name in NAMES:
    repo.publish(name, f'{name}-1'.encode())
  repo.publish('digits', b'digits-2', channel='canary')
  timestamp, snapshot, targets = repo._published()  # pylint: disable=protected-access
  root = repo._newest('root')  # pylint: disable=protected-access

  assert targets.signed.targets == {}  # Releases live in the delegated roles only.
  delegations = targets.signed.delegations
  assert list(delegations.roles) == list(NAMES)
  digits = delegations.roles['digits']
  assert digits.paths == ['digits/*/*', 'digits/*/*/*'] and digits.terminating
  assert digits.keyids == root.signed.roles['targets'].keyids
  assert set(delegations.keys) == set(root.signed.roles['targets'].keyids)
  assert {name: meta.version for name, meta in snapshot.signed.meta.items()} == {
      'targets.json': _newest(repo, 'targets'),
      **{f'{name}.json': _newest(repo, name) for name in NAMES}}
  assert timestamp.signed.snapshot_meta.version == snapshot.signed.version
  role = Metadata.from_file(
      os.path.join(repo.metadata_dir, f'{_newest(repo, "digits")}.digits.json'))
  assert sorted(role.signed.targets) == ['digits/canary/model-v000002.tflite',
                                         'digits/stable/model-v000001.tflite']
  # Signed by the targets key, which the delegation names.
  targets.signed.verify_delegate('digits', role.signed_bytes, role.signatures)
  assert [(r.name, r.version, r.channel) for r in repo.releases()] == [
      ('digits', 1, 'stable'), ('digits', 2, 'canary'), ('faces', 1, 'stable'),
      ('words', 1, 'stable')]


@pytest.mark.parametrize('name,clash', [('root', 'root'), ('Targets', 'targets'),
                                        ('SNAPSHOT', 'snapshot'), ('timestamp', 'timestamp')])
def test_a_name_whose_role_clashes_with_a_top_level_role_is_refused(repo, name, clash):
  repo.publish('digits', b'digits-1')
  before = files(repo)

  with pytest.raises(errors.ConfigError) as raised:
    repo.publish(name, b'model')

  assert str(raised.value) == (
      f'model name {name!r} cannot be published: each model has a delegated targets role named '
      f'like it, and {name!r} is the top-level role {clash!r} (compared ignoring case). Use '
      'another model name (not one of root, targets, snapshot, timestamp); nothing was written.')
  assert files(repo) == before


def test_a_name_that_differs_from_a_published_one_only_in_case_is_refused(repo):
  repo.publish('digits', b'digits-1')
  before = files(repo)

  with pytest.raises(errors.ConfigError, match="'Digits' cannot be published: the model "
                     "'digits' is already there"):
    repo.publish('Digits', b'model')

  assert files(repo) == before


def test_invalid_names_are_refused_before_anything_is_written(repo):
  before = files(repo)
  for name in ('', '../x', 'a/b', '.'):
    with pytest.raises(errors.ConfigError, match='is not accepted'):
      repo.publish(name, b'model')
  with pytest.raises(errors.ConfigError, match='is the top-level role'):
    repository.validate_role_name('timestamp')
  assert files(repo) == before


def test_a_repository_from_before_delegations_moves_each_name_at_its_next_write(repo, tmp_path):
  flat = repository.OTARepository(repo.repo_dir, repo._keys_dir, delegations=False,  # pylint: disable=protected-access
                                  keep_versions=None)
  for version in range(3):
    flat.publish('digits', f'digits-{version}'.encode())
  flat.publish('faces', b'faces-0')
  assert flat._published()[2].signed.delegations is None  # pylint: disable=protected-access
  with counting_server(repo) as (url, requested):
    assert fetch(repo, url, tmp_path / 'old-device').version == 3

    moved = repo.publish('digits', b'digits-3')  # The default: delegations.
    targets = repo._published()[2]  # pylint: disable=protected-access
    after = fetch(repo, url, tmp_path / 'old-device')
    faces = fetch(repo, url, tmp_path / 'faces-device', name='faces')
    requested.clear()
    new_device = fetch(repo, url, tmp_path / 'new-device')

  assert moved.version == 4 and after.version == 4 and new_device.version == 4
  assert installed(tmp_path / 'old-device') == b'digits-3'
  assert faces.version == 1  # Still listed by targets.json itself until its next write.
  assert sorted(targets.signed.targets) == ['faces/stable/model-v000001.tflite']
  assert list(targets.signed.delegations.roles) == ['digits']
  assert [r.version for r in repo.releases('digits')] == [1, 2, 3, 4]
  assert not [p for p in requested if 'faces' in p]


@pytest.mark.parametrize('fail_at', ['1.faces.json', 'targets.json', 'snapshot.json',
                                     'timestamp.json'])
def test_a_first_push_of_a_name_that_dies_at_each_write_leaves_a_valid_repository(
    repo, tmp_path, monkeypatch, fail_at):
  repo.publish('digits', b'digits-1')
  create, write = storage_lib.LocalStorage.create, storage_lib.LocalStorage.write

  def dying(original):
    def wrapped(self, path, data):
      if path.endswith(fail_at):
        raise OSError(28, 'No space left on device')
      original(self, path, data)
    return wrapped

  monkeypatch.setattr(storage_lib.LocalStorage, 'create', dying(create))
  monkeypatch.setattr(storage_lib.LocalStorage, 'write', dying(write))
  with pytest.raises(OSError):
    repo.publish('faces', b'faces-1')
  monkeypatch.undo()

  with counting_server(repo) as (url, _):
    assert fetch(repo, url, tmp_path / 'digits-device').version == 1
    with pytest.raises(errors.NotPublishedError):
      fetch(repo, url, tmp_path / 'faces-device', name='faces')
    rerun = repo.publish('faces', b'faces-1')  # Finishes what the dead push wrote.
    assert fetch(repo, url, tmp_path / 'faces-device', name='faces').version == 1
    assert fetch(repo, url, tmp_path / 'digits-device').version == 1

  assert rerun.version == 1
  assert installed(tmp_path / 'faces-device', 'faces') == b'faces-1'
  assert list(repo._published()[2].signed.delegations.roles) == ['digits', 'faces']  # pylint: disable=protected-access


def test_concurrent_first_pushes_of_several_names_are_all_delegated(mem_uri, tmp_path):
  keys_dir = str(tmp_path / 'keys')
  repository.OTARepository(mem_uri, keys_dir).init()
  names = [f'model-{i}' for i in range(4)]
  barrier = threading.Barrier(len(names), timeout=30)

  def push(name):  # Each thread is its own publisher, with its own repository object.
    barrier.wait()
    return repository.OTARepository(mem_uri, keys_dir).publish(name, name.encode()).version

  with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
    versions = list(pool.map(push, names))

  repo = repository.OTARepository(mem_uri, keys_dir)
  snapshot, targets = repo._published()[1:]  # pylint: disable=protected-access
  assert versions == [1] * len(names)
  assert sorted(targets.signed.delegations.roles) == names
  assert sorted(snapshot.signed.meta) == sorted([f'{n}.json' for n in names] + ['targets.json'])
  root = tmp_path / 'root.json'
  root.write_bytes(repo.storage.read('metadata/1.root.json'))
  with counting_server(repo) as (url, _):
    for name in names:
      assert client.fetch(url, str(root), name, str(tmp_path / name)).version == 1
      assert installed(tmp_path / name, name) == name.encode()


def test_refresh_re_signs_the_delegated_roles_with_the_targets_key(repo, tmp_path):
  old = days_ago(repo, 60)
  old.publish('digits', b'digits-1')
  old.publish('faces', b'faces-1')
  before = {s['role']: s for s in repo.expiry_status()}

  online = repo.refresh(online_only=True)
  result = repo.refresh()
  again = repo.refresh()

  assert before['digits']['delegated'] and before['digits']['warning'].startswith(
      'the delegated targets role digits version 1 expires in ')
  assert online['resigned_delegated'] == [] and any('digits' in w for w in online['warnings'])
  assert result['resigned_delegated'] == ['digits', 'faces']
  assert result['resigned'] == ['targets', 'snapshot', 'timestamp']
  assert again['resigned'] == [] and again['resigned_delegated'] == []
  status = {s['role']: s for s in repo.expiry_status()}
  assert status['digits']['version'] == 2 and status['digits']['warning'] is None
  with counting_server(repo) as (url, _):
    assert fetch(repo, url, tmp_path / 'device').version == 1
