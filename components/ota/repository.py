"""A TUF repository of TFLite models, built with python-tuf's Metadata API. No TFX needed.

The repository lives at a local path or at any fsspec URI with an atomic exclusive create
(storage.py: file://, memory://, gs://, s3://). Its layout, served as-is over HTTP:

    metadata/N.root.json, N.targets.json, N.snapshot.json, timestamp.json
    targets/<name>/<channel>/<sha256>.model-v<version>.tflite

Consistent snapshots make every file but timestamp.json immutable once written, and nothing is
ever overwritten but timestamp.json (target files are named by their hash, so writing one again
writes the same bytes). A publish:

1. writes the model (and its patches): invisible until metadata names them;
2. builds N+1.targets.json on the newest N.targets.json and creates it only if absent. This is
   the compare-and-swap that orders publishers without a lock (object stores have none): if the
   name exists another publisher won, so this one starts again from that file, with a new
   version number. Each targets file therefore holds every release before it;
3. commits: a snapshot of the newest targets (also created only if absent), then timestamp.json,
   the one mutable file, as one write. Clients see the previous release or the new one.

A push that dies at any point leaves clients on the previous release. Its metadata, if any was
written, is finished by the next push (a re-run of the same push is idempotent and returns the
same version). Locally an flock also serializes publishers, as before.

Model versions are per model name and only go up; a rollback re-publishes old bytes as a new
version.
"""
import contextlib
import dataclasses
import datetime
import hashlib
import logging
import posixpath
import random
import re
import time
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

from components.common import validation
from components.common.config import JsonConfig
from components.errors import ConfigError
from components.errors import NotPublishedError
from components.errors import OTARepositoryError
from components.errors import PublishConflictError
from components.errors import SigningKeyError
from components.ota import signing_keys
from components.ota import storage as storage_lib

CUSTOM = 'tfx_edge'  # Key of our fields in a target's `custom`.
DEFAULT_CHANNEL = 'stable'  # Where a model is published, and what a device follows, unless told.
ONLINE_ROLES = (Snapshot.type, Timestamp.type)  # Roles whose keys rotate-keys replaces.
_CHANNEL_RE = re.compile(r'^[a-z][a-z0-9-]{0,31}$')
_VERSIONED_RE = re.compile(r'^([1-9][0-9]*)\.(root|targets|snapshot)\.json$')
_TIMESTAMP = 'metadata/timestamp.json'
# Each lost race costs one round of reads and writes; this many means sustained contention.
MAX_ATTEMPTS = 16
EXPIRY = {
    Root.type: datetime.timedelta(days=365),
    Targets.type: datetime.timedelta(days=90),
    Snapshot.type: datetime.timedelta(days=30),
    Timestamp.type: datetime.timedelta(days=7),
}


def validate_channel(channel: str) -> str:
  if not isinstance(channel, str) or not _CHANNEL_RE.match(channel):
    raise ConfigError(f'channel={channel!r} is not accepted: use 1-32 lowercase letters, digits '
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


def _releases_in(targets: Metadata, name: Optional[str]) -> List[Release]:
  out = []
  for path, target in targets.signed.targets.items():
    custom = (target.unrecognized_fields.get('custom') or {}).get(CUSTOM)
    if not custom or (name is not None and custom.get('name') != name):
      continue
    out.append(Release(custom['name'], custom['version'], custom['channel'], path,
                       target.hashes['sha256'], target.length, custom))
  return sorted(out, key=lambda r: (r.name, r.version))


def _signed_by_trusted_key(md: Metadata, root: Metadata) -> bool:
  return bool(set(md.signatures) & set(root.signed.roles[md.signed.type].keyids))


def _backoff(attempt: int) -> None:
  # Jitter so that publishers that collided do not collide again in lockstep.
  time.sleep(random.uniform(0, min(1.0, 0.02 * 2 ** attempt)))


@dataclasses.dataclass(frozen=True)
class DeltaPolicy(JsonConfig):
  """When to publish bsdiff4 patches next to a full model.

  Attributes:
    last_k: patches from each of the last K published versions of the model (0 disables).
    max_ratio: publish a patch only when it is smaller than this fraction of the full file.
  """
  last_k: int = 3
  max_ratio: float = 0.5

  def __post_init__(self):
    validation.non_negative_int('last_k', self.last_k)
    validation.fraction('max_ratio', self.max_ratio, low_open=True)


class OTARepository:
  """A model repository at a local path or an fsspec URI (gs://, s3://, memory://, file://)."""

  def __init__(self, repo_dir: str, keys_dir: Optional[str] = None,
               delta_policy: DeltaPolicy = DeltaPolicy()):
    """Opens (without reading) the repository.

    Args:
      repo_dir: a local path or an fsspec URI.
      keys_dir: the local directory of <role>.pem signing keys; only operations that sign
        need it.
      delta_policy: which bsdiff4 patches publish() adds.

    Raises:
      ConfigError: repo_dir is a URI whose backend has no atomic exclusive create.
    """
    self.repo_dir = repo_dir
    self.delta_policy = delta_policy
    self.storage = storage_lib.open_storage(repo_dir)
    self.metadata_dir = self.storage.join('metadata')
    self.targets_dir = self.storage.join('targets')
    self._keys_dir = keys_dir
    self._serializer = JSONSerializer(compact=False)

  # --- reading -----------------------------------------------------------------------------

  def _load(self, role: str, version: Optional[int] = None) -> Metadata:
    name = f'{role}.json' if role == Timestamp.type else f'{version}.{role}.json'
    try:
      data = self.storage.read(f'metadata/{name}')
    except FileNotFoundError:
      raise OTARepositoryError(f'OTA repository {self.repo_dir}: no {name}; run '
                              '`tfx-edge ota init` first.') from None
    return Metadata.from_bytes(data)

  def _newest(self, role: str) -> Metadata:
    """The highest N.<role>.json there is, published by timestamp.json or not (yet)."""
    versions = [int(m.group(1)) for m in map(_VERSIONED_RE.match, self.storage.list('metadata'))
                if m and m.group(2) == role]
    if not versions:
      raise OTARepositoryError(f'OTA repository {self.repo_dir}: no {role} metadata; run '
                              '`tfx-edge ota init` first.')
    return self._load(role, max(versions))

  def _published(self):
    """(timestamp, snapshot, targets) as timestamp.json publishes them."""
    timestamp = self._load(Timestamp.type)
    snapshot = self._load(Snapshot.type, timestamp.signed.snapshot_meta.version)
    targets = self._load(Targets.type, snapshot.signed.meta['targets.json'].version)
    return timestamp, snapshot, targets

  def releases(self, name: Optional[str] = None) -> List[Release]:
    """Published releases, oldest first, optionally of one model name."""
    return _releases_in(self._published()[2], name)

  def read_target(self, release: Release) -> bytes:
    """The bytes of a published model."""
    directory, base = posixpath.split(release.path)
    return self.storage.read(f'targets/{directory}/{release.sha256}.{base}')

  # --- writing -----------------------------------------------------------------------------

  def init(self) -> None:
    """Creates keys (if missing) and the first metadata of every role.

    Re-running an init that died part-way finishes it, with the same keys.
    """
    if self.storage.exists(_TIMESTAMP):
      raise OTARepositoryError(f'OTA repository {self.repo_dir} already exists.')
    with self._locked():
      signers = signing_keys.create_or_load(self._keys())
      root = Metadata(Root(expires=_expires(Root.type), consistent_snapshot=True))
      for role, signer in signers.items():
        root.signed.add_key(signer.public_key, role)
      for md in (root, Metadata(Targets(expires=_expires(Targets.type))),
                 Metadata(Snapshot(expires=_expires(Snapshot.type)))):
        md.sign(signers[md.signed.type])
        try:
          self._write(md)
        except FileExistsError:
          # Left by an init that died; keep it if it names our keys (then it is ours).
          existing = self._load(Root.type, 1).signed.roles
          if any(existing[r].keyids != root.signed.roles[r].keyids for r in signing_keys.ROLES):
            raise OTARepositoryError(f'OTA repository {self.repo_dir} already has a root with '
                                  'other keys.') from None
      timestamp = Metadata(Timestamp(expires=_expires(Timestamp.type)))
      timestamp.sign(signers[Timestamp.type])
      try:
        self.storage.create(_TIMESTAMP, timestamp.to_bytes(self._serializer))
      except FileExistsError:
        raise OTARepositoryError(f'OTA repository {self.repo_dir} already exists.') from None

  def publish(self, name: str, model: bytes, channel: str = DEFAULT_CHANNEL,
              info: Optional[Mapping[str, Any]] = None) -> Release:
    """Publishes model bytes as the next version of `name` on `channel`.

    `info` goes into the target's custom info (floats as strings, see canonical_info).

    Publishing bytes that are already the latest release of name on channel publishes nothing
    and returns that release (so a re-run push is idempotent).

    Raises:
      PublishConflictError: other publishers took the next version MAX_ATTEMPTS times.
    """
    validation.model_name(name)
    validate_channel(channel)
    sha256 = hashlib.sha256(model).hexdigest()
    with self._locked():
      signers = signing_keys.load(self._keys())
      for attempt in range(MAX_ATTEMPTS):
        if attempt:
          _backoff(attempt)
        targets = self._newest(Targets.type)
        releases = _releases_in(targets, name)
        current = [r for r in releases if r.channel == channel]
        if current and current[-1].sha256 == sha256:
          # Already there, maybe from a push that died before its commit: finish that.
          self._commit(signers)
          return current[-1]
        version = max((r.version for r in releases), default=0) + 1
        path = f'{name}/{channel}/model-v{version:06d}.tflite'
        # Target files first: immutable, hash-prefixed, invisible until metadata names them.
        self._write_target(path, model)
        new_targets = {}
        patches = []
        k = self.delta_policy.last_k
        for old in (releases[-k:] if k else []):
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
        targets.signed.targets.update(new_targets)
        targets.signed.version += 1
        targets.signed.expires = _expires(Targets.type)
        self._sign(targets, signers, self._newest(Root.type))
        try:
          self._write(targets)
        except FileExistsError:
          logging.info('OTA repository %s: another publisher took targets version %d; '
                       'retrying.', self.repo_dir, targets.signed.version)
          continue
        self._commit(signers)
        return Release(name, version, channel, path, sha256, len(model), custom)
    raise PublishConflictError(
        f'OTA repository {self.repo_dir}: other publishers took the next targets version '
        f'{MAX_ATTEMPTS} times in a row; nothing of this push was published. Push again.')

  def rollback(self, name: str, to_version: int, channel: Optional[str] = None) -> Release:
    """Re-publishes the bytes of an earlier version as a new, higher version."""
    old = next((r for r in self.releases(name) if r.version == to_version), None)
    if old is None:
      raise NotPublishedError(f'{name!r} has no version {to_version}; published versions: '
                       f'{[r.version for r in self.releases(name)]}.')
    model = self.read_target(old)
    info = {k: v for k, v in old.custom.items()
            if k not in ('name', 'version', 'channel', 'patches')}
    info['rolled_back_from'] = to_version
    return self.publish(name, model, channel or old.channel, info)

  def rotate_keys(self, role: str) -> int:
    """Replaces the signing key of an online role (snapshot or timestamp).

    Generates the new key (kept as <role>.pem.new until root names it), writes root version
    N+1 naming it instead of the old one, signed with the root key, makes it <role>.pem (the
    old file is kept as <role>.pem.old-<N+1>), and re-signs the role. Clients that trusted an
    older root walk the root chain on their next refresh. Running it again after a crash
    finishes the rotation.

    Returns:
      The new root version.
    """
    if role not in ONLINE_ROLES:
      raise ConfigError(f'role={role!r}: rotate-keys replaces the online keys {ONLINE_ROLES}; '
                       'root and targets keys are offline keys.')
    with self._locked():
      signers = signing_keys.load(self._keys())
      root = self._newest(Root.type)
      new_key = signing_keys.pending(self._keys(), role)
      if new_key.public_key.keyid not in root.signed.roles[role].keyids:
        for keyid in list(root.signed.roles[role].keyids):
          root.signed.revoke_key(keyid, role)
        root.signed.add_key(new_key.public_key, role)
        root.signed.version += 1
        root.signed.expires = _expires(Root.type)
        root.signatures.clear()
        # One root key signs for both the old root's threshold and the new one's.
        root.sign(signers[Root.type])
        self._write(root)  # Only if absent: a concurrent rotation cannot be lost.
      signing_keys.activate(self._keys(), role, root.signed.version)
      self._commit(signing_keys.load(self._keys()))  # Re-signs what the old key signed.
      return root.signed.version

  def _commit(self, signers) -> None:
    """Makes snapshot and timestamp.json publish the newest targets, signed with trusted keys.

    Runs until a check after its own timestamp write finds no newer snapshot, so that when two
    publishers commit at once the later state wins even if their writes land out of order.
    """
    for attempt in range(MAX_ATTEMPTS):
      if attempt:
        _backoff(attempt)
      root = self._newest(Root.type)
      targets_version = self._newest(Targets.type).signed.version
      snapshot = self._newest(Snapshot.type)
      if (snapshot.signed.meta['targets.json'].version < targets_version or
          not _signed_by_trusted_key(snapshot, root)):
        snapshot.signed.meta['targets.json'] = MetaFile(version=max(
            targets_version, snapshot.signed.meta['targets.json'].version))
        snapshot.signed.version += 1
        snapshot.signed.expires = _expires(Snapshot.type)
        self._sign(snapshot, signers, root)
        try:
          self._write(snapshot)
        except FileExistsError:
          continue  # Another publisher made this snapshot version: look again.
      timestamp = self._load(Timestamp.type)
      if (timestamp.signed.snapshot_meta.version < snapshot.signed.version or
          not _signed_by_trusted_key(timestamp, root)):
        timestamp.signed.snapshot_meta = MetaFile(version=max(
            snapshot.signed.version, timestamp.signed.snapshot_meta.version))
        timestamp.signed.version += 1
        timestamp.signed.expires = _expires(Timestamp.type)
        self._sign(timestamp, signers, root)
        self._write(timestamp)
      # A newer snapshot means another publisher committed meanwhile, and its timestamp
      # write may have landed before ours: look again. A newer targets file without a
      # snapshot is still being committed by its own publisher.
      if self._newest(Snapshot.type).signed.version == snapshot.signed.version:
        return
    raise PublishConflictError(
        f'OTA repository {self.repo_dir}: others kept committing while this push brought '
        f'timestamp.json up to date ({MAX_ATTEMPTS} attempts). Its metadata is written; '
        'timestamp.json may not publish it yet: push again (idempotent) to finish.')

  def _sign(self, md: Metadata, signers, root: Metadata) -> None:
    """Signs md with its role's key, checking that root trusts that key."""
    role = md.signed.type
    if signers[role].public_key.keyid not in root.signed.roles[role].keyids:
      # The key may have been rotated since this publisher loaded it.
      signers.update(signing_keys.load(self._keys()))
      if signers[role].public_key.keyid not in root.signed.roles[role].keyids:
        raise SigningKeyError(f'the {role} key in {self._keys_dir} is not the one root version '
                         f'{root.signed.version} trusts; if a key rotation was interrupted, run '
                         f'`tfx-edge ota rotate-keys --role {role}` again.')
    md.signatures.clear()
    md.sign(signers[role])

  def _write_target(self, path: str, data: bytes) -> None:
    directory, base = posixpath.split(path)
    digest = hashlib.sha256(data).hexdigest()
    self.storage.write(f'targets/{directory}/{digest}.{base}', data)

  def _write(self, md: Metadata) -> None:
    """Writes metadata: timestamp.json in place, versioned files only if absent."""
    role = md.signed.type
    data = md.to_bytes(self._serializer)
    if role == Timestamp.type:
      self.storage.write(_TIMESTAMP, data)
    else:
      self.storage.create(f'metadata/{md.signed.version}.{role}.json', data)

  def _keys(self) -> str:
    if not self._keys_dir:
      raise ConfigError('this operation signs metadata and needs keys_dir (--keys).')
    return self._keys_dir

  @contextlib.contextmanager
  def _locked(self) -> Iterator[None]:
    with self.storage.locked():
      yield
