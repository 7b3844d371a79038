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

Each release carries its state in its signed custom info: `state` (live, pending, halted or
rejected; absent means live, as for releases published before states existed),
`rollout_percent` (1-100; absent means 100), the `approval` (who, when, note) once approved,
and an `audit` list of what was done to it. A state change (approve, reject, promote, halt) is
a new targets version with the changed entry, written by the same compare-and-swap loop and
commit as a publish (`_update_targets`). Devices install only live releases whose rollout
includes them (components/common/releases.py).
"""
import contextlib
import dataclasses
import datetime
import hashlib
import logging
import numbers
import posixpath
import random
import re
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import bsdiff4
from tuf.api.metadata import MetaFile
from tuf.api.metadata import Metadata
from tuf.api.metadata import Root
from tuf.api.metadata import Snapshot
from tuf.api.metadata import TargetFile
from tuf.api.metadata import Targets
from tuf.api.metadata import Timestamp
from tuf.api.serialization.json import JSONSerializer

from components.common import releases as releases_lib
from components.common import validation
from components.common.config import JsonConfig
from components.errors import ConfigError
from components.errors import NotPublishedError
from components.errors import OTARepositoryError
from components.errors import PublishConflictError
from components.errors import ReleaseStateError
from components.errors import SigningKeyError
from components.ota import signing_keys
from components.ota import storage as storage_lib

CUSTOM = releases_lib.CUSTOM  # Key of our fields in a target's `custom`.
DEFAULT_CHANNEL = releases_lib.DEFAULT_CHANNEL
validate_channel = releases_lib.validate_channel
ONLINE_ROLES = (Snapshot.type, Timestamp.type)  # Roles whose keys rotate-keys replaces.
_VERSIONED_RE = re.compile(r'^([1-9][0-9]*)\.(root|targets|snapshot)\.json$')
_TIMESTAMP = 'metadata/timestamp.json'
# Each lost race costs one round of reads and writes; this many means sustained contention.
MAX_ATTEMPTS = 16
# Release states (components/common/releases.py, with the rule that selects what a device
# installs): a pending release waits for approve(), a rejected one never ships, a halted one is
# skipped (devices that took it go back).
LIVE, PENDING, HALTED, REJECTED = (releases_lib.LIVE, releases_lib.PENDING, releases_lib.HALTED,
                                   releases_lib.REJECTED)
STATES = releases_lib.STATES
FULL_ROLLOUT = 100
state_of = releases_lib.state_of
rollout_percent_of = releases_lib.rollout_percent_of
# Fields of a release's custom info that publish() and the state changes own: info passed to
# publish() cannot set them, and a rollback does not copy them.
_RELEASE_FIELDS = ('name', 'version', 'channel', 'patches', 'state', 'rollout_percent',
                   'approval', 'audit', 'promoted_from')
EXPIRY = {
    Root.type: datetime.timedelta(days=365),
    Targets.type: datetime.timedelta(days=90),
    Snapshot.type: datetime.timedelta(days=30),
    Timestamp.type: datetime.timedelta(days=7),
}


def validate_rollout_percent(percent: Any, name: str = 'rollout_percent') -> int:
  """Returns percent if it is a whole number from 1 to 100; raises ConfigError otherwise."""
  if (isinstance(percent, bool) or not isinstance(percent, numbers.Integral) or
      not 1 <= percent <= FULL_ROLLOUT):
    raise ConfigError(f'{name}={percent!r} is not accepted; it must be a whole number from 1 to '
                      '100: the percentage of the channel\'s devices that install the release.')
  return int(percent)


def _who(name: str, value: Any, required: bool) -> Optional[str]:
  if value is None and not required:
    return None
  if not isinstance(value, str) or not value.strip():
    raise ConfigError(f'{name}={value!r} is not accepted; it must name who does this (a person '
                      'or a pipeline), for the audit record.')
  return value.strip()


def _note(note: Any) -> str:
  if not isinstance(note, str):
    raise ConfigError(f'note={note!r} is not accepted; it must be a string.')
  return note


def _version(version: Any) -> int:
  if isinstance(version, bool) or not isinstance(version, numbers.Integral) or version < 1:
    raise ConfigError(f'version={version!r} is not accepted; it must be a published version '
                      'number (an integer >= 1, see `tfx-edge ota status`).')
  return int(version)


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def _event(action: str, by: Optional[str], note: str = '', **details: Any) -> Dict[str, Any]:
  return dict(action=action, by=by, at=_now(), note=note, **details)


@dataclasses.dataclass(frozen=True)
class Release:
  """One published model version (on one channel)."""
  name: str
  version: int
  channel: str
  path: str  # TUF target path
  sha256: str
  length: int
  custom: Dict[str, Any]

  @property
  def state(self) -> str:
    return state_of(self.custom)

  @property
  def rollout_percent(self) -> int:
    return rollout_percent_of(self.custom)

  @property
  def approval(self) -> Optional[Dict[str, Any]]:
    """{by, at, note} once approved; None otherwise."""
    return self.custom.get('approval')

  @property
  def audit(self) -> List[Dict[str, Any]]:
    """What was done to the release, oldest first: {action, by, at, note, ...}."""
    return list(self.custom.get('audit', []))

  def describe(self) -> str:
    """For messages: `'digits' version 3 on stable (live at 10%, approved by ...)`."""
    detail = self.state + (f' at {self.rollout_percent}%' if self.state == LIVE else '')
    stopped = [e for e in self.audit if e.get('action') in ('reject', 'halt')]
    if self.state in (HALTED, REJECTED) and stopped:
      detail += f' by {stopped[-1].get("by") or "an unnamed operator"} at {stopped[-1]["at"]}'
    if self.approval:
      detail += f', approved by {self.approval["by"]} at {self.approval["at"]}'
    return f'{self.name!r} version {self.version} on {self.channel} ({detail})'


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
  return sorted(out, key=lambda r: (r.name, r.version, r.channel))


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
              info: Optional[Mapping[str, Any]] = None, rollout_percent: int = FULL_ROLLOUT,
              require_approval: bool = False, by: Optional[str] = None) -> Release:
    """Publishes model bytes as the next version of `name` on `channel`.

    `info` goes into the target's custom info (floats as strings, see canonical_info), next to
    the fields this class owns (name, version, channel, patches, state, rollout_percent, audit).

    Publishing bytes that are already the latest release of name on channel publishes nothing
    and returns that release, whatever its state and rollout (so a re-run push is idempotent,
    and a halted or rejected model is not brought back by re-running its pipeline).

    Args:
      name: model name.
      model: the .tflite bytes.
      channel: release channel.
      info: custom info to sign with the release (metrics, tensors, ...).
      rollout_percent: the percentage (1-100) of the channel's devices that install it.
      require_approval: publish it pending: no device installs it until approve().
      by: who publishes, for the audit record.

    Raises:
      ConfigError: a bad name, channel, percent or `by` (nothing is written).
      PublishConflictError: other publishers took the next version MAX_ATTEMPTS times.
    """
    validation.model_name(name)
    validate_channel(channel)
    rollout_percent = validate_rollout_percent(rollout_percent)
    if not isinstance(require_approval, bool):
      raise ConfigError(f'require_approval={require_approval!r} is not accepted; it must be True '
                        'or False.')
    by = _who('by', by, required=False)
    sha256 = hashlib.sha256(model).hexdigest()
    info = {k: v for k, v in canonical_info(info or {}).items() if k not in _RELEASE_FIELDS}

    def change(targets: Metadata) -> Tuple[Release, bool]:
      releases = _releases_in(targets, name)
      current = [r for r in releases if r.channel == channel]
      if current and current[-1].sha256 == sha256:
        return current[-1], False  # Already there, maybe from a push that died before its commit.
      version = max((r.version for r in releases), default=0) + 1
      path = f'{name}/{channel}/model-v{version:06d}.tflite'
      # Target files first: immutable, hash-prefixed, invisible until metadata names them.
      self._write_target(path, model)
      new_targets = {}
      patches = []
      k = self.delta_policy.last_k
      # Patches only from releases a device may hold: never from a rejected one.
      sources = [r for r in releases if r.state != REJECTED]
      for old in (sources[-k:] if k else []):
        patch = bsdiff4.diff(self.read_target(old), model)
        if len(patch) >= self.delta_policy.max_ratio * len(model):
          continue
        patch_path = f'{name}/{channel}/patches/v{old.version:06d}-v{version:06d}.bsdiff4'
        self._write_target(patch_path, patch)
        new_targets[patch_path] = TargetFile.from_data(patch_path, patch, ['sha256'])
        patches.append({'from_version': old.version, 'from_sha256': old.sha256,
                        'path': patch_path, 'length': len(patch)})
      custom = dict(info, name=name, version=version, channel=channel, patches=patches,
                    state=PENDING if require_approval else LIVE,
                    rollout_percent=rollout_percent,
                    audit=[_event('publish', by, channel=channel, percent=rollout_percent)])
      target = TargetFile.from_data(path, model, ['sha256'])
      target.unrecognized_fields['custom'] = {CUSTOM: custom}
      new_targets[path] = target
      targets.signed.targets.update(new_targets)
      return Release(name, version, channel, path, sha256, len(model), custom), True

    return self._update_targets(change, 'push')

  def rollback(self, name: str, to_version: int, channel: Optional[str] = None,
               by: Optional[str] = None) -> Release:
    """Re-publishes the bytes of an earlier version as a new, higher, live version (at 100%)."""
    releases = self.releases(name)
    old = [r for r in releases if r.version == to_version]
    if not old:
      raise NotPublishedError(f'{name!r} has no version {to_version}; published versions: '
                              f'{sorted({r.version for r in releases})}.')
    # A promoted version is on several channels, with the same bytes: prefer the one asked for.
    old = next((r for r in old if r.channel == channel), old[0])
    model = self.read_target(old)
    info = {k: v for k, v in old.custom.items() if k not in _RELEASE_FIELDS}
    info['rolled_back_from'] = to_version
    return self.publish(name, model, channel or old.channel, info, by=by)

  # --- release state -----------------------------------------------------------------------

  def _matching(self, targets: Metadata, name: str, version: int,
                channel: Optional[str]) -> List[Release]:
    """The entries of name at version (one per channel it is on), or NotPublishedError."""
    releases = _releases_in(targets, name)
    if not releases:
      names = sorted({r.name for r in _releases_in(targets, None)})
      raise NotPublishedError(f'no model {name!r} is published in OTA repository '
                              f'{self.repo_dir}; published models: {names}.')
    matching = [r for r in releases if r.version == version]
    if not matching:
      raise NotPublishedError(f'{name!r} has no version {version}; published versions: '
                              f'{sorted({r.version for r in releases})}.')
    if channel is not None:
      on_channel = [r for r in matching if r.channel == channel]
      if not on_channel:
        raise NotPublishedError(f'{name!r} version {version} is not on channel {channel!r}; it '
                                f'is on {sorted(r.channel for r in matching)}.')
      return on_channel
    return matching

  def _unfinished(self, releases: List[Release], done: Callable[[Release], bool]) -> bool:
    """True when the newest targets already hold this change but timestamp.json does not publish
    it yet: a writer died before its commit, and running the change again finishes it."""
    if not releases or not all(done(r) for r in releases):
      return False
    published = {r.path: r for r in _releases_in(self._published()[2], releases[0].name)}
    return any(r.path not in published or not done(published[r.path]) for r in releases)

  @staticmethod
  def _replace(targets: Metadata, release: Release, custom: Dict[str, Any]) -> Release:
    targets.signed.targets[release.path].unrecognized_fields['custom'] = {CUSTOM: custom}
    return dataclasses.replace(release, custom=custom)

  def approve(self, name: str, version: int, by: str, note: str = '') -> Release:
    """Makes a pending release live, at the rollout percentage it was published with.

    The approval ({by, at, note}) and an audit event are signed into the target's custom info.

    Raises:
      ConfigError: bad arguments (`by` is required).
      NotPublishedError: no such name or version.
      ReleaseStateError: the release is not pending (already approved, rejected, halted, or
        published without approval); nothing is changed.
    """
    validation.model_name(name)
    version = _version(version)
    by = _who('by', by, required=True)
    note = _note(note)

    def done(r: Release) -> bool:
      return r.state == LIVE and (r.approval or {}).get('by') == by

    def change(targets: Metadata) -> Tuple[Release, bool]:
      matching = self._matching(targets, name, version, None)
      pending = [r for r in matching if r.state == PENDING]
      if not pending:
        if self._unfinished(matching, done):
          return matching[0], False
        release = matching[0]
        if release.state == LIVE and release.approval:
          why = 'it is already approved and live'
        elif release.state == LIVE:
          why = 'it was published live, without --require-approval: there is nothing to approve'
        elif release.state == REJECTED:
          why = 'it was rejected, and a rejection is final: publish a new model to propose again'
        else:
          why = 'it was halted; a halted release is not shipped again: publish a new model'
        raise ReleaseStateError(f'cannot approve {release.describe()}: {why}. Only a pending '
                                'release can be approved; nothing was changed.')
      [release] = pending  # A pending release cannot be promoted, so it is on one channel.
      approval = {'by': by, 'at': _now(), 'note': note}
      custom = dict(release.custom, state=LIVE, approval=approval,
                    audit=release.audit + [_event('approve', by, note,
                                                  percent=release.rollout_percent)])
      return self._replace(targets, release, custom), True

    return self._update_targets(change, 'approval')

  def reject(self, name: str, version: int, by: Optional[str] = None, note: str = '') -> Release:
    """Discards a pending release: it stays in the metadata as rejected, and never ships.

    Raises:
      NotPublishedError: no such name or version.
      ReleaseStateError: the release is not pending; nothing is changed.
    """
    validation.model_name(name)
    version = _version(version)
    by = _who('by', by, required=False)
    note = _note(note)

    def change(targets: Metadata) -> Tuple[Release, bool]:
      matching = self._matching(targets, name, version, None)
      pending = [r for r in matching if r.state == PENDING]
      if not pending:
        if self._unfinished(matching, lambda r: r.state == REJECTED):
          return matching[0], False
        release = matching[0]
        if release.state == LIVE:
          why = ('it is live; devices may have installed it. To stop its rollout, halt it: '
                 f'tfx-edge ota halt --name {name} --version {version}')
        else:
          why = f'it is already {release.state}'
        raise ReleaseStateError(f'cannot reject {release.describe()}: {why}. Only a pending '
                                'release can be rejected; nothing was changed.')
      [release] = pending
      custom = dict(release.custom, state=REJECTED,
                    audit=release.audit + [_event('reject', by, note)])
      return self._replace(targets, release, custom), True

    return self._update_targets(change, 'rejection')

  def halt(self, name: str, version: int, channel: Optional[str] = None,
           by: Optional[str] = None, note: str = '') -> List[Release]:
    """Stops the rollout of a live release, on every channel it is on (or on `channel`).

    Devices that did not install it stay where they are; devices that did go back, on their next
    fetch, to the newest live release that includes them. Returns the halted entries.

    Raises:
      NotPublishedError: no such name or version (or not on `channel`).
      ReleaseStateError: no live entry to halt; nothing is changed.
    """
    validation.model_name(name)
    version = _version(version)
    if channel is not None:
      validate_channel(channel)
    by = _who('by', by, required=False)
    note = _note(note)

    def change(targets: Metadata) -> Tuple[List[Release], bool]:
      matching = self._matching(targets, name, version, channel)
      live = [r for r in matching if r.state == LIVE]
      if not live:
        if self._unfinished(matching, lambda r: r.state == HALTED):
          return matching, False
        release = matching[0]
        if release.state == PENDING:
          why = (f'it is pending and no device has it; reject it instead: tfx-edge ota reject '
                 f'--name {name} --version {version}')
        elif release.state == REJECTED:
          why = 'it was rejected and never shipped'
        else:
          why = 'it is already halted'
        raise ReleaseStateError(f'cannot halt {release.describe()}: {why}. Only a live release '
                                'can be halted; nothing was changed.')
      return [self._replace(targets, r, dict(
          r.custom, state=HALTED, audit=r.audit + [_event('halt', by, note, channel=r.channel)]))
              for r in live], True

    return self._update_targets(change, 'halt')

  def promote(self, name: str, version: int, percent: Optional[int] = None,
              to_channel: Optional[str] = None, channel: Optional[str] = None,
              by: Optional[str] = None, note: str = '') -> Release:
    """Raises a live release's rollout to `percent`, or copies it to `to_channel`.

    Exactly one of percent and to_channel. A rollout only grows: percent must be above the
    current one (to stop a rollout, halt it). `to_channel` publishes the same bytes as a live
    release of the same version at 100% on that channel (a channel the name already has, or
    DEFAULT_CHANNEL); its audit says where it came from.

    Args:
      name: model name.
      version: the live release.
      percent: the new rollout percentage.
      to_channel: the channel to promote it to.
      channel: which entry, when the version is on several channels.
      by: who promotes, for the audit record.
      note: why, for the audit record.

    Raises:
      ConfigError: not exactly one of percent and to_channel, a bad percent or channel name, or
        a version on several channels without `channel`.
      NotPublishedError: no such name or version, or a to_channel the name does not have.
      ReleaseStateError: the release is not live, the percent does not grow, or to_channel
        already has it or a newer live release; nothing is changed.
    """
    validation.model_name(name)
    version = _version(version)
    if (percent is None) == (to_channel is None):
      raise ConfigError(f'promote takes exactly one of percent (raise the rollout) or to_channel '
                        f'(copy the release to another channel); got percent={percent!r}, '
                        f'to_channel={to_channel!r}.')
    if percent is not None:
      percent = validate_rollout_percent(percent, 'percent')
    else:
      validate_channel(to_channel)
    if channel is not None:
      validate_channel(channel)
    by = _who('by', by, required=False)
    note = _note(note)

    def source(matching: List[Release]) -> Release:
      candidates = [r for r in matching if r.channel != to_channel]
      if percent is not None:
        # A promoted copy is at 100%: the entry whose rollout can grow is the one meant.
        candidates = [r for r in candidates if r.state != LIVE or r.rollout_percent < 100] or (
            candidates)
      if len(candidates) > 1:
        raise ConfigError(f'{name!r} version {version} is on channels '
                          f'{sorted(r.channel for r in candidates)}: name one with channel= '
                          '(--channel).')
      if not candidates:
        raise ReleaseStateError(f'{name!r} version {version} is only on {to_channel!r} already; '
                                'nothing was changed.')
      release = candidates[0]
      if release.state != LIVE:
        why = {PENDING: 'approve it first (tfx-edge ota approve)',
               HALTED: 'a halted release is not shipped again: publish a new model',
               REJECTED: 'it was rejected and never ships'}[release.state]
        raise ReleaseStateError(f'cannot promote {release.describe()}: {why}. Only a live '
                                'release can be promoted; nothing was changed.')
      return release

    def raise_percent(targets: Metadata) -> Tuple[Release, bool]:
      matching = self._matching(targets, name, version, channel)
      if self._unfinished(matching, lambda r: r.state == LIVE and r.rollout_percent == percent):
        return matching[0], False
      release = source(matching)
      if percent <= release.rollout_percent:
        raise ReleaseStateError(
            f'cannot promote {release.describe()} to {percent}%: a rollout only grows, so the '
            f'percent must be more than {release.rollout_percent} (up to 100). To stop a '
            'rollout, halt it. Nothing was changed.')
      custom = dict(release.custom, rollout_percent=percent, audit=release.audit + [_event(
          'promote', by, note, percent=percent, from_percent=release.rollout_percent)])
      return self._replace(targets, release, custom), True

    def copy_to_channel(targets: Metadata) -> Tuple[Release, bool]:
      matching = self._matching(targets, name, version, channel)
      path = f'{name}/{to_channel}/model-v{version:06d}.tflite'
      there = [r for r in matching if r.path == path]
      if there:
        if self._unfinished(there, lambda r: r.state == LIVE):
          return there[0], False
        raise ReleaseStateError(f'{there[0].describe()} is already there; nothing was changed.')
      release = source(matching)
      releases = _releases_in(targets, name)
      channels = sorted({r.channel for r in releases})
      if to_channel not in channels and to_channel != DEFAULT_CHANNEL:
        # A new channel by promotion is most likely a typo: devices would follow none.
        raise NotPublishedError(
            f'{name!r} has no channel {to_channel!r} (its channels: {channels}): promote to one '
            f'of them or to {DEFAULT_CHANNEL!r}, or start the channel with a publish.')
      newer = [r for r in releases if r.channel == to_channel and r.state == LIVE and
               r.version > version]
      if newer:
        raise ReleaseStateError(
            f'cannot promote {release.describe()} to {to_channel}: {newer[-1].describe()} is '
            'newer, and devices install the newest live release, so it would never be '
            'installed. Nothing was changed.')
      self._write_target(path, self.read_target(release))
      source_target = targets.signed.targets[release.path]
      target = TargetFile(source_target.length, dict(source_target.hashes), path)
      custom = {k: v for k, v in release.custom.items() if k not in ('state', 'audit')}
      custom.update(channel=to_channel, state=LIVE, rollout_percent=FULL_ROLLOUT,
                    promoted_from={'channel': release.channel, 'path': release.path},
                    audit=release.audit + [_event('promote', by, note, channel=to_channel,
                                                  from_channel=release.channel,
                                                  percent=FULL_ROLLOUT)])
      target.unrecognized_fields['custom'] = {CUSTOM: custom}
      targets.signed.targets[path] = target
      return Release(name, version, to_channel, path, release.sha256, release.length,
                     custom), True

    return self._update_targets(raise_percent if percent is not None else copy_to_channel,
                                'promotion')

  def channel_status(self) -> List[Dict[str, Any]]:
    """Per name and channel: what devices install and what waits, from the published metadata.

    Returns:
      One dict per (name, channel): `released_version` (the newest live release, or None),
      its `rollout_percent` and `approval`, `previous_version` (the newest older live release
      at 100%: what devices outside the rollout keep), and the `halted`, `pending` and
      `rejected` versions.
    """
    out = []
    releases = self.releases()
    for name, channel in sorted({(r.name, r.channel) for r in releases}):
      here = [r for r in releases if (r.name, r.channel) == (name, channel)]
      live = [r for r in here if r.state == LIVE]
      released = live[-1] if live else None
      previous = [r for r in live[:-1] if r.rollout_percent == FULL_ROLLOUT]
      out.append({
          'name': name, 'channel': channel,
          'released_version': released.version if released else None,
          'rollout_percent': released.rollout_percent if released else None,
          'approval': released.approval if released else None,
          'previous_version': previous[-1].version if previous else None,
          **{state: [r.version for r in here if r.state == state]
             for state in (HALTED, PENDING, REJECTED)},
      })
    return out

  def _update_targets(self, change: Callable[[Metadata], Tuple[Any, bool]],
                      operation: str) -> Any:
    """The one compare-and-swap loop through which every targets change is written.

    Each attempt loads the newest N.targets.json and calls change(targets), which edits it in
    place and returns (result, True), or returns (result, False) when the change is already
    there (then only the commit runs, finishing what a writer that died left uncommitted). It
    raises to refuse, having written no metadata (it may write target files: immutable and
    invisible until metadata names them). N+1.targets.json is created only if absent; when
    another writer took it, change runs again on that newer file.

    Raises:
      PublishConflictError: other writers took the next version MAX_ATTEMPTS times.
    """
    with self._locked():
      signers = signing_keys.load(self._keys())
      for attempt in range(MAX_ATTEMPTS):
        if attempt:
          _backoff(attempt)
        targets = self._newest(Targets.type)
        result, changed = change(targets)
        if changed:
          targets.signed.version += 1
          targets.signed.expires = _expires(Targets.type)
          self._sign(targets, signers, self._newest(Root.type))
          try:
            self._write(targets)
          except FileExistsError:
            logging.info('OTA repository %s: another writer took targets version %d; '
                         'retrying.', self.repo_dir, targets.signed.version)
            continue
        self._commit(signers)
        return result
    if operation == 'push':
      again = 'nothing of this push was published. Push again.'
    else:
      again = f'nothing of this {operation} was written. Run it again.'
    raise PublishConflictError(
        f'OTA repository {self.repo_dir}: other publishers took the next targets version '
        f'{MAX_ATTEMPTS} times in a row; {again}')

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
