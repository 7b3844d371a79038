"""A TUF repository of TFLite models, built with python-tuf's Metadata API. No TFX needed.

Layout under the repository directory (served as-is over HTTP):

    metadata/1.root.json, N.targets.json, N.snapshot.json, timestamp.json
    targets/<name>/<channel>/<sha256>.model-v<version>.tflite

Consistent snapshots make every file but timestamp.json immutable once written. A publish
writes the model first, then targets, snapshot and finally timestamp.json (an atomic rename),
so a crash at any point leaves clients seeing the previous release or the new one, never a mix;
a re-run starts again from what timestamp.json published. A file lock serializes publishers,
so two concurrent pushes get two versions.

Model versions are per model name and only go up; a rollback re-publishes old bytes as a new
version.
"""
import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import os
import re
import tempfile
from typing import Any, Dict, Iterator, List, Mapping, Optional

import bsdiff4
from tuf.api.metadata import MetaFile
from tuf.api.metadata import Metadata
from tuf.api.metadata import Root
from tuf.api.metadata import Snapshot
from tuf.api.metadata import TargetFile
from tuf.api.metadata import Targets
from tuf.api.metadata import Timestamp
from tuf.api.serialization.json import JSONSerializer

from components.ota import keys as keys_lib
from components.pusher.publisher import validate_model_name

CUSTOM = 'tfx_edge'  # Key of our fields in a target's `custom`.
_CHANNEL_RE = re.compile(r'^[a-z][a-z0-9-]{0,31}$')
EXPIRY = {
    Root.type: datetime.timedelta(days=365),
    Targets.type: datetime.timedelta(days=90),
    Snapshot.type: datetime.timedelta(days=30),
    Timestamp.type: datetime.timedelta(days=7),
}


def validate_channel(channel: str) -> str:
  if not isinstance(channel, str) or not _CHANNEL_RE.match(channel):
    raise ValueError(f'channel={channel!r} is not accepted: use 1-32 lowercase letters, digits '
                     'or "-", starting with a letter (for example "stable", "canary").')
  return channel


@dataclasses.dataclass(frozen=True)
class Release:
  """One published model version."""
  name: str
  version: int
  channel: str
  path: str  # TUF target path
  sha256: str
  length: int
  custom: Dict[str, Any]


def canonical_info(value: Any) -> Any:
  """Custom info in a form TUF can sign: canonical JSON has no floats, so they become strings."""
  if isinstance(value, float):
    return format(value, '.9g')
  if isinstance(value, Mapping):
    return {str(k): canonical_info(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [canonical_info(v) for v in value]
  return value


def _expires(role: str) -> datetime.datetime:
  now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
  return now + EXPIRY[role]


def _atomic_write(path: str, data: bytes) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.tmp-', dir=os.path.dirname(path))
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


@dataclasses.dataclass(frozen=True)
class DeltaPolicy:
  """When to publish bsdiff4 patches next to a full model.

  Attributes:
    last_k: patches from each of the last K published versions of the model (0 disables).
    max_ratio: publish a patch only when it is smaller than this fraction of the full file.
  """
  last_k: int = 3
  max_ratio: float = 0.5

  def __post_init__(self):
    if isinstance(self.last_k, bool) or not isinstance(self.last_k, int) or self.last_k < 0:
      raise ValueError(f'last_k={self.last_k!r} must be an integer >= 0.')
    if not 0 < self.max_ratio <= 1:
      raise ValueError(f'max_ratio={self.max_ratio!r} must lie in (0, 1].')


class OTARepository:
  """A model repository on a local path (or a mounted volume)."""

  def __init__(self, repo_dir: str, keys_dir: Optional[str] = None,
               delta_policy: DeltaPolicy = DeltaPolicy()):
    self.repo_dir = repo_dir
    self.delta_policy = delta_policy
    self.metadata_dir = os.path.join(repo_dir, 'metadata')
    self.targets_dir = os.path.join(repo_dir, 'targets')
    self._keys_dir = keys_dir
    self._serializer = JSONSerializer(compact=False)

  # --- reading -----------------------------------------------------------------------------

  def _load(self, role: str, version: Optional[int] = None) -> Metadata:
    name = f'{role}.json' if role == Timestamp.type else f'{version}.{role}.json'
    path = os.path.join(self.metadata_dir, name)
    if not os.path.exists(path):
      raise FileNotFoundError(f'OTA repository {self.repo_dir}: no {name}; run '
                              '`tfx-edge ota init` first.')
    return Metadata.from_file(path)

  def _published(self):
    """(timestamp, snapshot, targets) as timestamp.json publishes them."""
    timestamp = self._load(Timestamp.type)
    snapshot = self._load(Snapshot.type, timestamp.signed.snapshot_meta.version)
    targets = self._load(Targets.type, snapshot.signed.meta['targets.json'].version)
    return timestamp, snapshot, targets

  def releases(self, name: Optional[str] = None) -> List[Release]:
    """Published releases, oldest first, optionally of one model name."""
    _, _, targets = self._published()
    out = []
    for path, target in targets.signed.targets.items():
      custom = (target.unrecognized_fields.get('custom') or {}).get(CUSTOM)
      if not custom or (name is not None and custom.get('name') != name):
        continue
      out.append(Release(custom['name'], custom['version'], custom['channel'], path,
                         target.hashes['sha256'], target.length, custom))
    return sorted(out, key=lambda r: (r.name, r.version))

  # --- writing -----------------------------------------------------------------------------

  def init(self) -> None:
    """Creates keys (if missing) and the first metadata of every role."""
    if os.path.exists(os.path.join(self.metadata_dir, 'timestamp.json')):
      raise FileExistsError(f'OTA repository {self.repo_dir} already exists.')
    signers = keys_lib.create_or_load(self._keys())
    root = Metadata(Root(expires=_expires(Root.type), consistent_snapshot=True))
    for role, signer in signers.items():
      root.signed.add_key(signer.public_key, role)
    targets = Metadata(Targets(expires=_expires(Targets.type)))
    snapshot = Metadata(Snapshot(expires=_expires(Snapshot.type)))
    timestamp = Metadata(Timestamp(expires=_expires(Timestamp.type)))
    with self._locked():
      for md in (root, targets, snapshot, timestamp):
        md.sign(signers[md.signed.type])
      self._write(root)
      self._write(targets)
      self._write(snapshot)
      self._write(timestamp)

  def publish(self, name: str, model: bytes, channel: str = 'stable',
              info: Optional[Mapping[str, Any]] = None) -> Release:
    """Publishes model bytes as the next version of `name` on `channel`.

    `info` goes into the target's custom info (floats as strings, see canonical_info).

    Publishing bytes that are already the latest release of name on channel publishes nothing
    and returns that release (so a re-run push is idempotent).
    """
    validate_model_name(name)
    validate_channel(channel)
    sha256 = hashlib.sha256(model).hexdigest()
    signers = keys_lib.load(self._keys())
    with self._locked():
      current = [r for r in self.releases(name) if r.channel == channel]
      if current and current[-1].sha256 == sha256:
        return current[-1]
      version = max((r.version for r in self.releases(name)), default=0) + 1
      path = f'{name}/{channel}/model-v{version:06d}.tflite'
      # Target files first: immutable, hash-prefixed, invisible until metadata names them.
      self._write_target(path, model)
      new_targets = {}
      patches = []
      k = self.delta_policy.last_k
      for old in (self.releases(name)[-k:] if k else []):
        patch = bsdiff4.diff(self.read_target(old), model)
        if len(patch) >= self.delta_policy.max_ratio * len(model):
          continue
        patch_path = f'{name}/{channel}/patches/v{old.version:06d}-v{version:06d}.bsdiff4'
        self._write_target(patch_path, patch)
        new_targets[patch_path] = TargetFile.from_data(patch_path, patch, ['sha256'])
        patches.append({'from_version': old.version, 'from_sha256': old.sha256,
                        'path': patch_path, 'length': len(patch)})
      custom = dict(canonical_info(info or {}), name=name, version=version, channel=channel,
                    patches=patches)
      target = TargetFile.from_data(path, model, ['sha256'])
      target.unrecognized_fields['custom'] = {CUSTOM: custom}
      new_targets[path] = target
      self._release(new_targets, signers)
      return Release(name, version, channel, path, sha256, len(model), custom)

  def _write_target(self, path: str, data: bytes) -> None:
    directory, base = os.path.split(path)
    digest = hashlib.sha256(data).hexdigest()
    _atomic_write(os.path.join(self.targets_dir, directory, f'{digest}.{base}'), data)

  def read_target(self, release: Release) -> bytes:
    """The bytes of a published model."""
    directory, base = os.path.split(release.path)
    with open(os.path.join(self.targets_dir, directory, f'{release.sha256}.{base}'), 'rb') as f:
      return f.read()

  def rollback(self, name: str, to_version: int, channel: Optional[str] = None) -> Release:
    """Re-publishes the bytes of an earlier version as a new, higher version."""
    old = next((r for r in self.releases(name) if r.version == to_version), None)
    if old is None:
      raise ValueError(f'{name!r} has no version {to_version}; published versions: '
                       f'{[r.version for r in self.releases(name)]}.')
    model = self.read_target(old)
    info = {k: v for k, v in old.custom.items()
            if k not in ('name', 'version', 'channel', 'patches')}
    info['rolled_back_from'] = to_version
    return self.publish(name, model, channel or old.channel, info)

  def _release(self, new_targets: Dict[str, TargetFile], signers) -> None:
    """Signs and writes targets, snapshot, then timestamp (the commit point), in TUF order."""
    timestamp, snapshot, targets = self._published()
    targets.signed.targets.update(new_targets)
    targets.signed.version += 1
    targets.signed.expires = _expires(Targets.type)
    targets.signatures.clear()
    targets.sign(signers[Targets.type])
    self._write(targets)
    snapshot.signed.meta['targets.json'] = MetaFile(version=targets.signed.version)
    snapshot.signed.version += 1
    snapshot.signed.expires = _expires(Snapshot.type)
    snapshot.signatures.clear()
    snapshot.sign(signers[Snapshot.type])
    self._write(snapshot)
    timestamp.signed.snapshot_meta = MetaFile(version=snapshot.signed.version)
    timestamp.signed.version += 1
    timestamp.signed.expires = _expires(Timestamp.type)
    timestamp.signatures.clear()
    timestamp.sign(signers[Timestamp.type])
    self._write(timestamp)

  def _write(self, md: Metadata) -> None:
    role = md.signed.type
    name = 'timestamp.json' if role == Timestamp.type else f'{md.signed.version}.{role}.json'
    _atomic_write(os.path.join(self.metadata_dir, name), md.to_bytes(self._serializer))

  def _keys(self) -> str:
    if not self._keys_dir:
      raise ValueError('this operation signs metadata and needs keys_dir (--keys).')
    return self._keys_dir

  @contextlib.contextmanager
  def _locked(self) -> Iterator[None]:
    os.makedirs(self.repo_dir, exist_ok=True)
    with open(os.path.join(self.repo_dir, '.publish.lock'), 'w') as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      try:
        yield
      finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
