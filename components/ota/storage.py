"""Where an OTA repository's files live: a local directory, or any fsspec URI.

Paths given to a Storage are relative to the repository root and use "/" (for example
`metadata/timestamp.json`). Two writes carry the repository's safety (repository.py says how
they are used):

* `write(path, data)` replaces the whole file in one step, so a reader sees the old bytes or the
  new ones, never a mix: temp file + os.replace locally, one object PUT on an object store.
* `create(path, data)` does the same only if nothing exists at path yet, else raises
  FileExistsError. It is the compare-and-swap that lets publishers that share no lock agree on
  who owns the next metadata version.

fsspec leaves exclusive create ('xb') to each backend, and a backend that ignores it silently
overwrites, so a repository is accepted only where it is known to be atomic (read from the
backends' source):

* a local path or file://: os.link of a complete temp file (fails if the name exists), plus the
  flock that serializes local publishers;
* memory://: MemoryFileSystem checks then sets; the store is in-process, so a process-wide lock
  makes that atomic;
* gs:// (gcsfs >= 2024.12.0): the upload carries ifGenerationMatch=0, a 412 is FileExistsError
  (gcsfs documents the mode as experimental: the GCS emulator cannot test it);
* s3:// (s3fs >= 2025.7.0): the PUT carries If-None-Match: *; before 2025.7.0 only multipart
  uploads did, so small files were silently overwritten.
"""
import contextlib
import datetime
import errno
import fcntl
import importlib.metadata
import os
import posixpath
import re
import tempfile
import threading
from typing import Iterator, List, Optional, Tuple

import fsspec
from fsspec.implementations.memory import MemoryFileSystem

from components.errors import ConfigError

# Backends outside fsspec whose 'xb' is atomic, from the release that made it so.
_EXCLUSIVE_CREATE_SINCE = {'gcsfs': '2024.12.0', 's3fs': '2025.7.0'}
SUPPORTED = ('a local path, file://, memory://, gs:// (gcsfs>=2024.12.0) or '
             's3:// (s3fs>=2025.7.0)')
_LOCAL_SCHEMES = ('file://', 'local://')
_memory_create_lock = threading.Lock()


class Storage:
  """Reads and writes the files of one repository."""

  uri: str

  def read(self, path: str) -> bytes:
    raise NotImplementedError

  def write(self, path: str, data: bytes) -> None:
    raise NotImplementedError

  def create(self, path: str, data: bytes) -> None:
    raise NotImplementedError

  def exists(self, path: str) -> bool:
    raise NotImplementedError

  def list(self, directory: str) -> List[str]:
    """Names (not paths) in directory; [] when it does not exist."""
    raise NotImplementedError

  def walk(self, directory: str) -> List[Tuple[str, float]]:
    """(path, modification time in seconds since the epoch) of every file under directory,
    paths relative to the repository root; [] when it does not exist."""
    raise NotImplementedError

  def delete(self, path: str) -> None:
    """Removes one file (gc only: every other write adds)."""
    raise NotImplementedError

  def join(self, *parts: str) -> str:
    """The location of a repository path, for messages and for the attributes tests use."""
    raise NotImplementedError

  @contextlib.contextmanager
  def locked(self) -> Iterator[None]:
    """Serializes publishers where the backend can; elsewhere create() does."""
    yield


# URI schemes a repository location may use; the backend itself is checked when it is opened.
_SCHEMES = ('file', 'local', 'memory', 'gs', 'gcs', 's3', 's3a')


def validate_location(location: str) -> str:
  """Checks a repository location's form without opening it (for pipeline construction).

  Raises:
    ConfigError: not a non-empty path or a URI with a supported scheme; names what is accepted.
  """
  scheme = location.split('://', 1)[0] if isinstance(location, str) and '://' in location else ''
  if not isinstance(location, str) or not location or '::' in location or (
      '://' in location and scheme not in _SCHEMES):
    raise ConfigError(f'OTA repository location {location!r} is not accepted; use {SUPPORTED}.')
  return location


def open_storage(location: str) -> Storage:
  """A Storage for a local path or an fsspec URI (scheme://...).

  Raises:
    ConfigError: the URI's backend has no atomic exclusive create (names what is supported).
  """
  for scheme in _LOCAL_SCHEMES:
    if location.startswith(scheme):
      # The local implementation keeps the flock and the atomic rename fsspec's would lose.
      return LocalStorage(location[len(scheme):])
  if '://' in location:
    return FsspecStorage(location)
  return LocalStorage(location)


def durable_temp_file(final: str, data: bytes, mode: int) -> str:
  """Writes data, synced to disk, to a temporary file beside `final`; returns its path.

  The caller renames or links it into place, so `final` appears whole or not at all.
  """
  os.makedirs(os.path.dirname(final), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.tmp-', dir=os.path.dirname(final))  # created 0600
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, mode)
  except BaseException:
    os.unlink(tmp)
    raise
  return tmp


class LocalStorage(Storage):
  """A directory: atomic rename for writes, os.link for exclusive create, flock for publishers."""

  def __init__(self, root: str):
    self.uri = root
    self.root = root

  def join(self, *parts: str) -> str:
    return os.path.join(self.root, *parts)

  def read(self, path: str) -> bytes:
    with open(self.join(path), 'rb') as f:
      return f.read()

  def exists(self, path: str) -> bool:
    return os.path.exists(self.join(path))

  def list(self, directory: str) -> List[str]:
    try:
      return os.listdir(self.join(directory))
    except FileNotFoundError:
      return []

  def walk(self, directory: str) -> List[Tuple[str, float]]:
    out = []
    for parent, _, names in os.walk(self.join(directory)):
      for name in names:
        if name.startswith('.tmp-'):
          continue  # A write in progress (or one that died): not a file of the repository.
        path = os.path.join(parent, name)
        try:
          out.append((os.path.relpath(path, self.root).replace(os.sep, '/'),
                      os.stat(path).st_mtime))
        except FileNotFoundError:
          pass
    return out

  def delete(self, path: str) -> None:
    os.unlink(self.join(path))

  def _temp_copy(self, final: str, data: bytes) -> str:
    return durable_temp_file(final, data, 0o644)

  def write(self, path: str, data: bytes) -> None:
    final = self.join(path)
    tmp = self._temp_copy(final, data)
    try:
      os.replace(tmp, final)
    except BaseException:
      os.unlink(tmp)
      raise

  def create(self, path: str, data: bytes) -> None:
    final = self.join(path)
    tmp = self._temp_copy(final, data)
    try:
      # link() publishes the complete file under its name, or fails if the name exists.
      os.link(tmp, final)
    except OSError as e:
      if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        raise
      # No hard links (some FUSE mounts): publishers hold the flock, so check-then-rename is
      # exclusive among them.
      if os.path.exists(final):
        raise FileExistsError(errno.EEXIST, 'File exists', final) from None
      os.replace(tmp, final)
    finally:
      if os.path.exists(tmp):
        os.unlink(tmp)

  @contextlib.contextmanager
  def locked(self) -> Iterator[None]:
    os.makedirs(self.root, exist_ok=True)
    with open(os.path.join(self.root, '.publish.lock'), 'w') as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      try:
        yield
      finally:
        fcntl.flock(lock, fcntl.LOCK_UN)


def _mtime(info) -> float:
  """Seconds since the epoch from an fsspec info dict: each backend names and types it its way
  (memory: created, a float; s3: LastModified, a datetime; gcs: updated, ISO text)."""
  for key in ('mtime', 'LastModified', 'updated', 'last_modified', 'created'):
    value = info.get(key)
    if isinstance(value, (int, float)):
      return float(value)
    if isinstance(value, datetime.datetime):
      return (value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)).timestamp()
    if isinstance(value, str):
      try:
        when = datetime.datetime.fromisoformat(value.replace('Z', '+00:00'))
      except ValueError:
        continue
      return (when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)).timestamp()
  # Unknown: never old enough for gc, which could otherwise delete a file a publish in progress
  # wrote before its metadata.
  return float('inf')


def _installed_version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return '0'


def _release(version: str) -> Tuple[int, ...]:
  # gcsfs and s3fs use calendar versions (2024.12.0, 2025.5.0.post1): compare the numbers.
  return tuple(int(n) for n in re.findall(r'\d+', version)[:3])


def exclusive_create_problem(fs_class: type) -> Optional[str]:
  """Why fs_class cannot be trusted with exclusive create, or None when it can."""
  if issubclass(fs_class, MemoryFileSystem):
    return None
  package = fs_class.__module__.split('.')[0]
  since = _EXCLUSIVE_CREATE_SINCE.get(package)
  if since is None:
    return f'{fs_class.__name__} does not implement an atomic exclusive create'
  installed = _installed_version(package)
  if _release(installed) < _release(since):
    return f'{package} {installed} is installed; its exclusive create needs {package}>={since}'
  return None


class FsspecStorage(Storage):
  """Any fsspec filesystem with an atomic exclusive create (see exclusive_create_problem)."""

  def __init__(self, uri: str):
    self.uri = uri.rstrip('/')
    if '::' in uri:
      # Caching and other wrapping layers do not pass 'xb' on to the store they wrap.
      problem = 'chained URLs wrap the store in a layer without exclusive create'
    else:
      # Check the class before instantiating it: some backends connect in their constructor.
      protocol = fsspec.core.split_protocol(uri)[0]
      problem = exclusive_create_problem(fsspec.get_filesystem_class(protocol))
    if problem:
      raise ConfigError(
          f'OTA repository {uri}: {problem}, so two publishers could overwrite each other\'s '
          f'metadata version. Use {SUPPORTED}.')
    self.fs, root = fsspec.core.url_to_fs(uri)
    self.root = root.rstrip('/')
    self._in_process = isinstance(self.fs, MemoryFileSystem)

  def join(self, *parts: str) -> str:
    return posixpath.join(self.uri, *parts)

  def _path(self, path: str) -> str:
    return posixpath.join(self.root, path)

  def read(self, path: str) -> bytes:
    return self.fs.cat_file(self._path(path))

  def exists(self, path: str) -> bool:
    # Not from a listing cached earlier: the repository probes for the next metadata version.
    self.fs.invalidate_cache(self._path(path))
    return self.fs.exists(self._path(path))

  def list(self, directory: str) -> List[str]:
    path = self._path(directory)
    # Listings are cached per instance; the newest versions must come from the store.
    self.fs.invalidate_cache(path)
    try:
      return [posixpath.basename(p.rstrip('/')) for p in self.fs.ls(path, detail=False)]
    except FileNotFoundError:
      return []

  def walk(self, directory: str) -> List[Tuple[str, float]]:
    path = self._path(directory)
    self.fs.invalidate_cache(path)
    try:
      found = self.fs.find(path, detail=True)
    except FileNotFoundError:
      return []
    prefix = self.root + '/' if self.root else ''
    return [(name[len(prefix):] if name.startswith(prefix) else name, _mtime(info))
            for name, info in found.items() if info.get('type', 'file') == 'file']

  def delete(self, path: str) -> None:
    self.fs.rm_file(self._path(path))

  def write(self, path: str, data: bytes) -> None:
    self.fs.pipe_file(self._path(path), data)  # One PUT: the object appears whole or not.

  def create(self, path: str, data: bytes) -> None:
    if self._in_process:
      # MemoryFileSystem checks then sets; threads are its only concurrent writers.
      with _memory_create_lock:
        self.fs.pipe_file(self._path(path), data, mode='create')
      return
    with self.fs.open(self._path(path), 'xb') as f:
      f.write(data)
