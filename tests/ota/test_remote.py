"""The OTA repository on fsspec URIs (memory://, file://), its compare-and-swap, and key rotation.

Every client check goes through the real device client (tuf.ngclient over HTTP) against a
loopback server that answers from the repository's storage at request time, as a bucket behind
a CDN would.
"""
import concurrent.futures
import os
import threading

import fsspec
import numpy as np
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from fsspec.implementations.memory import MemoryFileSystem
from securesystemslib.signer import CryptoSigner
from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import MetaFile
from tuf.api.metadata import Metadata

from components import errors
from components.common import tflite
from components.ota import cli
from components.ota import client
from components.ota import repository
from components.ota import signing_keys
from components.ota import storage as storage_lib
from tests.ota.support import serve_storage as _serve
from tests.ota.support import status_lines

_PIPE_FILE = MemoryFileSystem.pipe_file


@pytest.fixture
def keys_dir(tmp_path):
  return str(tmp_path / 'keys')


@pytest.fixture
def repo(mem_uri, keys_dir):
  ota = repository.OTARepository(mem_uri, keys_dir)
  ota.init()
  return ota


def _trusted_root(repo, path, version=1):
  """The root a device got out of band (TUF's trust on first use)."""
  path.write_bytes(repo.storage.read(f'metadata/{version}.root.json'))
  return str(path)


def _fetch(repo, url, dest, root_version=1, name='digits'):
  root = _trusted_root(repo, dest.parent / f'{dest.name}-root.json', root_version)
  return client.fetch(url, root, name, str(dest))


def _installed(dest, name='digits'):
  return (dest / f'{name}.tflite').read_bytes()


def _model_bytes(seed, n=4096):
  return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _all_files(repo):
  fs, root = repo.storage.fs, repo.storage.root
  return {p[len(root) + 1:]: fs.cat_file(p) for p in fs.find(root)}


def test_publish_to_a_memory_uri_and_a_client_verifies_v1_then_v2(repo, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # A URI taken for a local path would show up here.
  device = tmp_path / 'device'
  repo.publish('digits', b'model-one', info={'mode': 'int8'})

  with _serve(repo) as url:
    first = _fetch(repo, url, device)
    repo.publish('digits', b'model-two')
    second = _fetch(repo, url, device)

  assert (first.version, first.updated) == (1, True)
  assert (second.version, second.updated) == (2, True)
  assert _installed(device) == b'model-two'
  assert [r.version for r in repository.OTARepository(repo.repo_dir).releases('digits')] == [1, 2]
  # targets.json version 2 delegates to digits' role, which each push writes a version of.
  assert {'1.root.json', '2.targets.json', '2.digits.json', '3.snapshot.json',
          'timestamp.json'} <= set(repo.storage.list('metadata'))
  assert sorted(os.listdir(tmp_path)) == ['device', 'device-root.json', 'keys']


def test_concurrent_publishers_on_memory_get_distinct_versions(mem_uri, keys_dir, tmp_path,
                                                               monkeypatch):
  repository.OTARepository(mem_uri, keys_dir).init()
  n = 4
  # Hold every publisher's first write of digits' targets role until all n have built one on
  # the same base, so they really race for the same version.
  barrier = threading.Barrier(n, timeout=30)
  first_rounds = iter(range(n))
  lost = []
  create = storage_lib.FsspecStorage.create

  def racing_create(self, path, data):
    if path.endswith('.digits.json') and next(first_rounds, None) is not None:
      barrier.wait()
    try:
      create(self, path, data)
    except FileExistsError:
      lost.append(path)
      raise

  monkeypatch.setattr(storage_lib.FsspecStorage, 'create', racing_create)

  def push(i):  # Each thread is its own publisher, with its own repository object.
    model = f'model-{i}'.encode()
    return repository.OTARepository(mem_uri, keys_dir).publish('digits', model).version, model

  with concurrent.futures.ThreadPoolExecutor(n) as pool:
    pushed = dict(pool.map(push, range(n)))

  repo = repository.OTARepository(mem_uri, keys_dir)
  assert sorted(pushed) == [1, 2, 3, 4]
  assert lost.count('metadata/1.digits.json') == n - 1  # Only one publisher got version 1.
  assert {r.version: repo.read_target(r) for r in repo.releases('digits')} == pushed
  with _serve(repo) as url:
    assert _fetch(repo, url, tmp_path / 'device').version == 4
  assert _installed(tmp_path / 'device') == pushed[4]


def test_sustained_contention_gives_up_with_a_conflict_and_publishes_nothing(repo, monkeypatch):
  repo.publish('digits', b'model-one')
  create = storage_lib.FsspecStorage.create

  def always_taken(self, path, data):  # Another publisher wins every version of digits' role.
    if path.endswith('.digits.json'):
      raise FileExistsError(path)
    create(self, path, data)

  monkeypatch.setattr(repository, '_backoff', lambda attempt: None)
  monkeypatch.setattr(storage_lib.FsspecStorage, 'create', always_taken)
  with pytest.raises(errors.PublishConflictError) as raised:
    repo.publish('digits', b'model-two')
  monkeypatch.undo()

  assert str(raised.value) == (
      f'OTA repository {repo.repo_dir}: other publishers took the next version of the digits '
      f'targets role {repository.MAX_ATTEMPTS} times in a row; nothing of this push was '
      'published. Push again.')
  assert isinstance(raised.value, errors.PublishError)
  assert [r.version for r in repo.releases('digits')] == [1]
  assert repo.publish('digits', b'model-two').version == 2  # Once the contention is over.


def test_a_timestamp_write_that_lands_after_a_newer_one_is_corrected(repo, keys_dir, tmp_path,
                                                                    monkeypatch):
  a_writes_timestamp, b_done = threading.Event(), threading.Event()
  write = storage_lib.FsspecStorage.write
  late = []

  def slow_write(self, path, data):
    if path.endswith('timestamp.json') and threading.current_thread().name == 'a' and not late:
      late.append(path)  # A's first timestamp PUT is slow and lands after B's whole push.
      a_writes_timestamp.set()
      assert b_done.wait(30)
    write(self, path, data)

  monkeypatch.setattr(storage_lib.FsspecStorage, 'write', slow_write)
  a = threading.Thread(name='a', target=lambda: repo.publish('digits', b'model-a'))
  a.start()
  assert a_writes_timestamp.wait(30)
  b = repository.OTARepository(repo.repo_dir, keys_dir).publish('digits', b'model-b')
  b_done.set()
  a.join(30)

  assert late and b.version == 2
  assert [r.version for r in repo.releases('digits')] == [1, 2]
  with _serve(repo) as url:
    assert _fetch(repo, url, tmp_path / 'device').version == 2
  assert _installed(tmp_path / 'device') == b'model-b'


@pytest.mark.parametrize('backend', ['memory', 'local', 'local-without-hard-links'])
def test_create_never_replaces_an_existing_file(backend, mem_uri, tmp_path, monkeypatch):
  storage = storage_lib.open_storage(mem_uri if backend == 'memory' else str(tmp_path / 'repo'))
  if backend == 'local-without-hard-links':
    def no_link(*args):
      raise PermissionError(1, 'Operation not permitted')
    monkeypatch.setattr(os, 'link', no_link)

  storage.create('metadata/2.targets.json', b'first')
  with pytest.raises(FileExistsError):
    storage.create('metadata/2.targets.json', b'second')

  assert storage.read('metadata/2.targets.json') == b'first'
  assert storage.list('metadata') == ['2.targets.json']  # No temp file left behind.


# A push writes its model's delegated targets role (digits), not targets.json.
_WRITES = ['target file', 'patch', 'digits', 'snapshot', 'timestamp']


def _kind(path):
  if path.startswith('targets/'):
    return 'patch' if path.endswith('.bsdiff4') else 'target file'
  return path.split('.')[-2].split('/')[-1]


@pytest.mark.parametrize('response_lost', [False, True], ids=['request-lost', 'response-lost'])
@pytest.mark.parametrize('fail_at', range(1, len(_WRITES) + 1), ids=_WRITES)
def test_a_network_error_partway_leaves_the_previous_release_and_a_rerun_completes(
    repo, tmp_path, monkeypatch, fail_at, response_lost):
  v1 = _model_bytes(1)
  v2 = bytearray(v1)
  v2[100:140] = _model_bytes(2, 40)  # Small change: the push also writes a patch.
  v2 = bytes(v2)
  repo.publish('digits', v1)
  before = _all_files(repo)
  writes = []

  def flaky_pipe_file(self, path, value, mode='overwrite', **kwargs):
    writes.append(self._strip_protocol(path)[len(repo.storage.root) + 1:])
    if len(writes) == fail_at and not response_lost:
      raise ConnectionError(f'connection reset before writing {path}')
    _PIPE_FILE(self, path, value, mode=mode, **kwargs)
    if len(writes) == fail_at:
      raise ConnectionError(f'connection reset after writing {path}')

  with _serve(repo) as url:
    assert _fetch(repo, url, tmp_path / 'device').version == 1
    monkeypatch.setattr(MemoryFileSystem, 'pipe_file', flaky_pipe_file)
    with pytest.raises(ConnectionError):
      repo.publish('digits', v2)
    monkeypatch.setattr(MemoryFileSystem, 'pipe_file', _PIPE_FILE)
    committed = response_lost and _WRITES[fail_at - 1] == 'timestamp'
    during = _fetch(repo, url, tmp_path / 'during')
    files_after_failure = _all_files(repo)
    rerun = repo.publish('digits', v2)
    after = _fetch(repo, url, tmp_path / 'device')

  assert _kind(writes[-1]) == _WRITES[fail_at - 1]
  # Clients get the previous release (or, if only the reply to the last write was lost, the
  # new one), whole.
  assert during.version == (2 if committed else 1)
  assert _installed(tmp_path / 'during') == (v2 if committed else v1)
  assert [r.version for r in repo.releases('digits')] == [1, 2]
  assert rerun.version == 2 and rerun.sha256 == repo.releases('digits')[1].sha256
  assert after.version == 2 and after.via_patch and _installed(tmp_path / 'device') == v2
  # Nothing that existed was changed, but timestamp.json once the new release is committed.
  for path, data in before.items():
    if path != 'metadata/timestamp.json' or not committed:
      assert files_after_failure[path] == data, path
  for path, data in files_after_failure.items():
    if path != 'metadata/timestamp.json':
      assert repo.storage.read(path) == data, path


@pytest.mark.parametrize('scheme', ['memory', 'file'])
def test_cli_on_a_uri(scheme, mem_uri, keys_dir, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  # Tensor specs need a real TFLite model; test_repository_and_client.py's CLI test covers them.
  monkeypatch.setattr(tflite, 'io_specs', lambda model: {'inputs': [], 'outputs': []})
  uri = mem_uri if scheme == 'memory' else f'file://{tmp_path}/repo'
  model, retrained = tmp_path / 'model.tflite', tmp_path / 'retrained.tflite'
  model.write_bytes(_model_bytes(1))
  retrained.write_bytes(_model_bytes(2))
  ota = ['ota']
  keys = ['--repo', uri, '--keys', keys_dir]

  def run(*args):
    code = cli.main(ota + list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out

  assert f'created OTA repository {uri}' in run('init', *keys)
  run('publish', *keys, '--model', str(model), '--name', 'tiny')
  assert 'tiny version 2 on stable' in run('publish', *keys, '--model', str(retrained),
                                           '--name', 'tiny')
  assert 'as version 3 on stable' in run('rollback', *keys, '--name', 'tiny', '--to-version', '1')
  assert 'root version 2' in run('rotate-keys', *keys, '--role', 'snapshot')
  status = status_lines(run('status', '--repo', uri))[0]
  repo = repository.OTARepository(uri)
  with _serve(repo) as url:
    fetched = run('fetch', '--url', url, '--trusted-root',
                  _trusted_root(repo, tmp_path / 'root.json'), '--name', 'tiny', '--dest',
                  str(tmp_path / 'device'))
  assert cli.main(ota + ['init', *keys]) == 2
  _, err = capsys.readouterr()

  assert [r.version for r in repo.releases('tiny')] == [1, 2, 3] and len(status) == 3
  assert 'installed tiny version 3' in fetched
  assert (tmp_path / 'device' / 'tiny.tflite').read_bytes() == model.read_bytes()
  assert err == f'error: OTA repository {uri} already exists.\n'
  assert os.path.exists(os.path.join(keys_dir, 'snapshot.pem.old-2'))
  # file:// is the local implementation on that path; memory:// writes nothing locally.
  assert isinstance(repo.storage, storage_lib.LocalStorage) == (scheme == 'file')
  assert os.path.exists(tmp_path / 'repo' / 'metadata' / '2.root.json') == (scheme == 'file')
  assert not [p for p in os.listdir(tmp_path) if p.startswith(('file:', 'memory:'))]
  with pytest.raises(SystemExit) as raised:
    cli.main(ota + ['rotate-keys', *keys, '--role', 'root'])  # An offline key.
  assert raised.value.code == 2
  assert "argument --role: invalid choice: 'root' (choose from" in capsys.readouterr().err


class _NoExclusiveCreateFileSystem(fsspec.AbstractFileSystem):
  """A store whose writes always overwrite, like most fsspec backends' 'xb'."""
  protocol = 'nocas'


@pytest.mark.parametrize('uri', ['ftp://127.0.0.1:9/ota', 'http://127.0.0.1:9/ota',
                                 'nocas://bucket/ota', 'simplecache::memory://ota'])
def test_a_backend_without_exclusive_create_is_refused_with_a_clear_error(uri, keys_dir, capsys):
  fsspec.register_implementation('nocas', _NoExclusiveCreateFileSystem, clobber=True)

  # ConfigError, not a connection error: the check runs before any backend connects.
  with pytest.raises(errors.ConfigError) as raised:
    repository.OTARepository(uri, keys_dir)
  code = cli.main(['ota', 'init', '--repo', uri, '--keys', keys_dir])
  _, err = capsys.readouterr()

  message = str(raised.value)
  assert message.startswith(f'OTA repository {uri}: ')
  assert 'could overwrite each other' in message
  for supported in ('a local path', 'memory://', 'gs:// (gcsfs>=2024.12.0)',
                    's3:// (s3fs>=2025.7.0)'):
    assert supported in message
  assert code == 2 and message in err
  assert not os.path.exists(keys_dir)  # Refused before anything was created.


@pytest.mark.parametrize('package,module,too_old,fixed', [
    ('gcsfs', 'gcsfs.core', '2024.10.0', '2024.12.0'),
    ('s3fs', 's3fs.core', '2025.5.1', '2025.7.0'),  # 'xb' of small files overwrote until then.
])
def test_object_stores_need_the_release_whose_exclusive_create_is_atomic(
    package, module, too_old, fixed, monkeypatch):
  fs_class = type('ObjectStoreFileSystem', (fsspec.AbstractFileSystem,), {'__module__': module})
  installed = {}
  monkeypatch.setattr(storage_lib, '_installed_version', lambda p: installed[p])

  installed[package] = too_old
  problem = storage_lib.exclusive_create_problem(fs_class)
  installed[package] = fixed

  assert problem == (f'{package} {too_old} is installed; its exclusive create needs '
                     f'{package}>={fixed}')
  assert storage_lib.exclusive_create_problem(fs_class) is None
  assert storage_lib.exclusive_create_problem(MemoryFileSystem) is None


def _old_signer(key_bytes):
  return CryptoSigner(load_pem_private_key(key_bytes, password=None))


@pytest.mark.parametrize('role', ['timestamp', 'snapshot'])
def test_rotate_keys_and_clients_that_trusted_the_old_root_still_update(repo, keys_dir, tmp_path,
                                                                         role):
  key_file = os.path.join(keys_dir, f'{role}.pem')
  old_key = open(key_file, 'rb').read()
  repo.publish('digits', b'model-one')

  with _serve(repo) as url:
    assert _fetch(repo, url, tmp_path / 'device').version == 1
    root_version = repo.rotate_keys(role)
    repo.publish('digits', b'model-two')
    updated = _fetch(repo, url, tmp_path / 'device')  # Walks root 1 -> 2.
    fresh = _fetch(repo, url, tmp_path / 'fresh')  # Only ever had root 1, out of band.
    # Metadata signed with the replaced key must no longer be accepted.
    if role == 'timestamp':
      forged = repo._load('timestamp')  # pylint: disable=protected-access
    else:
      forged = repo._newest('snapshot')  # pylint: disable=protected-access
    forged.signed.version += 1
    forged.signatures.clear()
    forged.sign(_old_signer(old_key))
    if role == 'snapshot':
      repo.storage.create(f'metadata/{forged.signed.version}.snapshot.json', forged.to_bytes())
      timestamp = repo._load('timestamp')  # pylint: disable=protected-access
      timestamp.signed.snapshot_meta = MetaFile(version=forged.signed.version)
      timestamp.signed.version += 1
      timestamp.signatures.clear()
      timestamp.sign(signing_keys.load(keys_dir)['timestamp'])
      forged = timestamp
    repo.storage.write('metadata/timestamp.json', forged.to_bytes())
    with pytest.raises(tuf_exceptions.UnsignedMetadataError):
      _fetch(repo, url, tmp_path / 'device')

  root = Metadata.from_bytes(repo.storage.read('metadata/2.root.json'))
  new_key = signing_keys.load(keys_dir)[role]
  assert root_version == 2
  assert root.signed.roles[role].keyids == [new_key.public_key.keyid]
  assert (updated.version, fresh.version) == (2, 2)
  assert Metadata.from_file(str(tmp_path / 'device' / 'metadata' / 'root.json')).signed.version == 2
  # The replaced key is kept, and both key files stay private.
  assert open(f'{key_file}.old-2', 'rb').read() == old_key
  assert open(key_file, 'rb').read() != old_key
  for path in (key_file, f'{key_file}.old-2'):
    assert oct(os.stat(path).st_mode & 0o777) == '0o600'
  assert not os.path.exists(f'{key_file}.new')


def test_an_interrupted_rotation_blocks_publishing_until_rerun_then_clients_update(
    repo, keys_dir, tmp_path, monkeypatch):
  repo.publish('digits', b'model-one')

  def dying_activate(*args):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(signing_keys, 'activate', dying_activate)
  with pytest.raises(OSError):
    repo.rotate_keys('timestamp')  # Died after root 2 named the key kept in timestamp.pem.new.
  # Signing with the key root 2 no longer trusts would break every client: refuse instead.
  with pytest.raises(errors.SigningKeyError, match='the timestamp key in .* is not the one root '
                     'version 2 trusts; if a key rotation was interrupted, run `tfx-edge ota '
                     'rotate-keys --role timestamp` again'):
    repo.publish('digits', b'model-two')
  monkeypatch.undo()
  second = repo.rotate_keys('timestamp')
  third = repo.rotate_keys('snapshot')
  repo.publish('digits', b'model-two')
  with _serve(repo) as url:
    result = _fetch(repo, url, tmp_path / 'device')

  assert (second, third) == (2, 3)  # The re-run finished rotation 2 instead of starting over.
  assert result.version == 2 and _installed(tmp_path / 'device') == b'model-two'
  assert sorted(p for p in os.listdir(keys_dir) if '.old-' in p) == [
      'snapshot.pem.old-3', 'timestamp.pem.old-2']


def test_an_init_that_died_is_finished_by_a_rerun_with_the_same_keys(mem_uri, keys_dir, tmp_path,
                                                                    monkeypatch):
  write = repository.OTARepository._write  # pylint: disable=protected-access

  def dying_write(self, md):
    if md.signed.type == 'snapshot':
      raise ConnectionError('connection reset')
    write(self, md)

  monkeypatch.setattr(repository.OTARepository, '_write', dying_write)
  with pytest.raises(ConnectionError):
    repository.OTARepository(mem_uri, keys_dir).init()
  monkeypatch.undo()
  with pytest.raises(errors.OTARepositoryError, match=f'OTA repository {mem_uri} already has a '
                     'root with other keys'):
    repository.OTARepository(mem_uri, str(tmp_path / 'other-keys')).init()
  repo = repository.OTARepository(mem_uri, keys_dir)
  repo.init()
  repo.publish('digits', b'model-one')

  with _serve(repo) as url:
    assert _fetch(repo, url, tmp_path / 'device').version == 1
  with pytest.raises(errors.OTARepositoryError, match=f'OTA repository {mem_uri} already '
                     'exists'):
    repo.init()
