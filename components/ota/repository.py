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

Each model name has its own delegated targets role (TUF delegations), so that a device downloads
the metadata of its model only: N.targets.json holds no release, only one delegation per name
(the role is named like the model, is signed by the targets key, and holds the paths
`<name>/*/*` and `<name>/*/*/*`), and N.<name>.json lists that model's releases. snapshot.json
names the version of targets.json and of every delegated role. A change to one model writes
N+1.<name>.json by the same create-if-absent compare-and-swap, built on the newest N.<name>.json;
the first write of a name first creates 1.<name>.json, then the targets version that delegates to
it, then commits: a role is delegated only once its file exists. A repository published before
delegations moves each name into its role at that name's next write (its entries leave
targets.json in the same targets version that delegates them); until then devices read that
name's releases from targets.json as before. A model name that is a top-level role's name
(root, targets, snapshot, timestamp, ignoring case) cannot be published, nor one that differs
from an existing model's only in case (devices may have case-insensitive file systems).
`OTARepository(delegations=False)` keeps names not yet delegated in targets.json (the layout
before delegations, which benchmarks/ota_metadata.py measures). A writer finds a role's newest
version by probing N+1, N+2... from the newest it saw (one listing of metadata/ per object seeds
it): metadata/ grows with the history, and a write should not.

Retention: a write lists, per name and channel, only the newest `keep_versions` versions
(DEFAULT_KEEP_VERSIONS; None keeps all) plus every version a device may still be sent or that
waits for a decision: pending releases, and the live releases from the second newest one at
100% up (what devices outside a rollout keep, and where a halt of the newest sends devices
back). No release is pinned otherwise: this repository has no pins. Dropped releases
take their patches and other files they name (a golden record) with them; their target files
stay in storage until gc() deletes the files that no metadata a device may still read names.

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

Metadata expires (EXPIRY, configurable per role in the repository's config.json or with
`expiry=`), and devices refuse expired metadata. refresh() re-signs timestamp, snapshot and
targets when they expire within their refresh window, adding and changing no release: a new
targets version goes through the same compare-and-swap loop as a publish, snapshot and timestamp
through the same commit, so a refresh racing a publish loses nothing. renew_root() writes the
next root with a new expiry (the root key is an offline key). Each operation loads only the keys
of the roles it signs.
"""
import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import numbers
import posixpath
import random
import re
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import bsdiff4
from tuf.api.metadata import DelegatedRole
from tuf.api.metadata import Delegations
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
# N.<role>.json: the top-level roles but timestamp, and the delegated roles (named like models).
_ROLE_ATTRIBUTE = '_tfx_edge_role'  # Set on a delegated role's Metadata object: its file name.
_VERSIONED_RE = re.compile(r'^([1-9][0-9]*)\.(.+)\.json$')
_TIMESTAMP = 'metadata/timestamp.json'
# The repository's own settings (the expiry periods), next to metadata/ and targets/: pushes,
# refreshes and `status` sign and warn with the same periods without repeating them as flags.
CONFIG = 'config.json'
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
                   'approval', 'audit', 'promoted_from', 'gated_by')
ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
# How many versions per name and channel targets metadata lists, unless keep_versions= says.
DEFAULT_KEEP_VERSIONS = 10
# Delegated roles hold the model files (<name>/<channel>/<file>) and the patches
# (<name>/<channel>/patches/<file>); TUF matches a pattern against as many path components.
_DELEGATED_PATHS = ('{name}/*/*', '{name}/*/*/*')
# gc() keeps files a device may still be sent: files named by metadata signed within this long.
DEFAULT_GC_MIN_AGE = datetime.timedelta(days=1)
REFRESHED_ROLES = (Targets.type, Snapshot.type, Timestamp.type)  # What refresh() re-signs.
# The roles a targets change signs: the root key stays offline.
_TARGETS_CHANGE_ROLES = REFRESHED_ROLES
# How long metadata stays valid after it is signed, unless OTARepository(expiry=) says otherwise.
EXPIRY = {
    Root.type: datetime.timedelta(days=365),
    Targets.type: datetime.timedelta(days=90),
    Snapshot.type: datetime.timedelta(days=30),
    Timestamp.type: datetime.timedelta(days=7),
}
# A role is refreshed (and `status` warns) when it expires within half its period. Renewing root
# is an offline ceremony: a month's notice, rather than a warning for half its life.
MAX_ROOT_WINDOW = datetime.timedelta(days=30)
_UNITS = (('d', 86400), ('h', 3600), ('m', 60), ('s', 1))
_DURATION_RE = re.compile(r'^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$')
# Long enough for any root; beyond it a datetime would overflow, and expiry would protect nothing.
MAX_DURATION = datetime.timedelta(days=3650)
DURATION_FORMAT = ('a duration from 1s to 3650d: whole numbers with the units d, h, m and s, '
                   'largest first, for example 7d, 12h, 30m or 1d12h')


def parse_duration(value: Any, name: str = 'duration') -> datetime.timedelta:
  """A timedelta from `7d`, `12h`, `30m`, `1d12h` (or a timedelta); ConfigError otherwise.

  Args:
    value: the text (or a datetime.timedelta).
    name: how the value is named in the error (for example `--timestamp-expiry`).

  Raises:
    ConfigError: not a duration from 1 second to MAX_DURATION; names the accepted format.
  """
  duration = None
  if isinstance(value, datetime.timedelta):
    duration = value
  elif isinstance(value, str) and value:
    match = _DURATION_RE.match(value)
    if match:
      seconds = sum(int(n) * size for n, (_, size) in zip(match.groups(), _UNITS) if n)
      if seconds <= MAX_DURATION.total_seconds():
        duration = datetime.timedelta(seconds=seconds)
  if duration is None or not datetime.timedelta(seconds=1) <= duration <= MAX_DURATION:
    raise ConfigError(f'{name}={value!r} is not accepted; give {DURATION_FORMAT}.')
  return duration


def format_duration(duration: datetime.timedelta, parts: Optional[int] = None,
                    sep: str = '') -> str:
  """`7d`, `1d12h`: what parse_duration reads; `parts=2, sep=' '` gives `6d 23h` for people."""
  seconds = int(abs(duration.total_seconds()))
  out = []
  for unit, size in _UNITS:
    n, seconds = divmod(seconds, size)
    if n:
      out.append(f'{n}{unit}')
  return sep.join(out[:parts] if parts else out) or '0s'


def _human(duration: datetime.timedelta) -> str:
  return format_duration(duration, parts=2, sep=' ')


def validate_expiry(expiry: Optional[Mapping[str, Any]],
                    name: str = 'expiry') -> Dict[str, datetime.timedelta]:
  """{role: period} for every role: EXPIRY updated with `expiry` (durations or timedeltas).

  Raises:
    ConfigError: not a mapping, a role that does not exist, or a value parse_duration refuses.
  """
  if expiry is None:
    return dict(EXPIRY)
  if not isinstance(expiry, Mapping):
    raise ConfigError(f'{name}={expiry!r} is not accepted; give a mapping from role '
                      f'({", ".join(ROLES)}) to a duration such as "7d".')
  unknown = sorted(str(role) for role in expiry if role not in ROLES)
  if unknown:
    raise ConfigError(f'{name} names {unknown}, which are not TUF roles; the roles are '
                      f'{", ".join(ROLES)}.')
  out = dict(EXPIRY)
  out.update({role: parse_duration(value, f'{name}[{role!r}]') for role, value in expiry.items()})
  return out


def validate_role_name(name: str) -> str:
  """Returns the delegated targets role of model `name` (the name itself), or ConfigError.

  Raises:
    ConfigError: not a valid model name, or a top-level role's name (ignoring case, as a device's
      file system may: the role's file would clash with that role's).
  """
  validation.model_name(name)
  clash = next((role for role in ROLES if role.casefold() == name.casefold()), None)
  if clash:
    raise ConfigError(f'model name {name!r} cannot be published: each model has a delegated '
                      f'targets role named like it, and {name!r} is the top-level role '
                      f'{clash!r} (compared ignoring case). Use another model name (not one of '
                      f'{", ".join(ROLES)}); nothing was written.')
  return name


def validate_keep_versions(keep: Any, name: str = 'keep_versions') -> Optional[int]:
  """Returns keep when it is None (keep every version) or a whole number >= 1; else ConfigError."""
  if keep is None:
    return None
  if isinstance(keep, bool) or not isinstance(keep, numbers.Integral) or keep < 1:
    raise ConfigError(f'{name}={keep!r} is not accepted; give how many versions per model name '
                      'and channel the metadata lists (a whole number >= 1), or None (0 on the '
                      'command line) to list every version.')
  return int(keep)


def _belongs(path: str, role: str) -> bool:
  """Whether a target path is one of a delegated role's (its model's files)."""
  return path.split('/', 1)[0] == role


def _strings(value: Any) -> Iterator[str]:
  """Every string in a custom info: the paths a release names (patches, golden record...)."""
  if isinstance(value, str):
    yield value
  elif isinstance(value, Mapping):
    for v in value.values():
      yield from _strings(v)
  elif isinstance(value, (list, tuple)):
    for v in value:
      yield from _strings(v)


def retain(targets: Metadata, keep: Optional[int]) -> List[str]:
  """Removes from targets the releases the retention policy drops; returns the removed paths.

  Per name and channel it keeps the newest `keep` versions, pending releases, and the live
  releases from the second newest one at 100% up: devices may be sent any of them, and a halt of
  the newest sends them back to that one. A file that is not a
  release (a patch, a golden record) goes when a dropped release names it and no kept one does.
  """
  if keep is None:
    return []
  groups: Dict[Tuple[str, str], List[Release]] = {}
  for release in _releases_in(targets, None):
    groups.setdefault((release.name, release.channel), []).append(release)
  dropped, kept = [], []
  for group in groups.values():
    live = [r for r in group if r.state == LIVE]
    full = [i for i, r in enumerate(live) if r.rollout_percent == FULL_ROLLOUT]
    # From the live release at 100% before the newest one: where a halt of the newest sends
    # devices back.
    selectable = live[full[-2]:] if len(full) > 1 else live
    protected = {r.path for r in group[-keep:] + selectable}
    protected.update(r.path for r in group if r.state == PENDING)
    for release in group:
      (kept if release.path in protected else dropped).append(release)
  if not dropped:
    return []
  named_by_kept = {s for r in kept for s in _strings(r.custom)}
  named_by_dropped = {s for r in dropped for s in _strings(r.custom)}
  removed = [r.path for r in dropped] + [
      path for path, target in targets.signed.targets.items()
      if not (target.unrecognized_fields.get('custom') or {}).get(CUSTOM) and
      path in named_by_dropped and path not in named_by_kept]
  for path in removed:
    del targets.signed.targets[path]
  return removed


def _iso(when: datetime.datetime) -> str:
  return when.strftime('%Y-%m-%dT%H:%M:%SZ')


def _when(md: Metadata, now: datetime.datetime) -> str:
  """`expires in 2d 3h (2025-06-01T00:00:00Z)`, or `expired 1d 2h ago (...)`."""
  left = md.signed.expires - now
  if left.total_seconds() > 0:
    return f'expires in {_human(left)} ({_iso(md.signed.expires)})'
  return f'expired {_human(left)} ago ({_iso(md.signed.expires)})'


def _utc_now() -> datetime.datetime:
  return datetime.datetime.now(datetime.timezone.utc)


def _load_key(keys_dir: str, role: str, signers: Optional[Mapping[str, str]] = None):
  """The signer of one role, so that an operation needs only the keys of what it signs."""
  return signing_keys.Keyring(keys_dir, signers).signer(role)


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


def _config_bytes(periods: Mapping[str, datetime.timedelta]) -> bytes:
  """config.json holding the expiry period of every role."""
  return json.dumps({'expiry': {role: format_duration(periods[role]) for role in ROLES}},
                    indent=1).encode()


class OTARepository:
  """A model repository at a local path or an fsspec URI (gs://, s3://, memory://, file://)."""

  def __init__(self, repo_dir: str, keys_dir: Optional[str] = None,
               delta_policy: DeltaPolicy = DeltaPolicy(),
               expiry: Optional[Mapping[str, Any]] = None,
               clock: Optional[Callable[[], datetime.datetime]] = None,
               signers: Optional[Mapping[str, str]] = None,
               keep_versions: Optional[int] = DEFAULT_KEEP_VERSIONS,
               delegations: bool = True):
    """Opens (without reading) the repository.

    Args:
      repo_dir: a local path or an fsspec URI.
      keys_dir: the local directory of <role>.pem signing keys, and of signers.json for the
        roles whose key is in an HSM or a KMS (signing_keys.py); only operations that sign need
        it, and each reads only the keys of the roles it signs.
      delta_policy: which bsdiff4 patches publish() adds.
      expiry: {role: period} for the roles whose period differs from EXPIRY: how long the
        metadata this object signs stays valid (a timedelta or a duration such as "7d").
      clock: returns the current time as an aware datetime (tests pass one to sign as if at
        another time); default the system clock.
      signers: {role: private key URI} for the roles whose key is not the one keys_dir
        configures (its <role>.pem, or its signers.json): `file:`, `hsm:`, `gcpkms:`,
        `awskms:` or `azurekms:` (signing_keys.SCHEMES).
      keep_versions: how many versions per name and channel a write leaves in the targets
        metadata (plus those still in use, see retain()); None lists every version.
      delegations: give each model name its own delegated targets role (the default); False
        keeps names not yet delegated in targets.json, as repositories were before delegations
        (benchmarks/ota_metadata.py measures that layout).

    Raises:
      ConfigError: repo_dir is a URI whose backend has no atomic exclusive create; a bad
        expiry, clock, or signer URI (an unknown scheme).
    """
    self.repo_dir = repo_dir
    self.delta_policy = delta_policy
    # Checked now; merged with the repository's config.json when first used.
    self._expiry_given = {role: period for role, period in validate_expiry(expiry).items()
                          if role in (expiry or {})}
    self._expiry: Optional[Dict[str, datetime.timedelta]] = None
    if clock is not None and not callable(clock):
      raise ConfigError(f'clock={clock!r} is not accepted; give a function that returns the '
                        'current time as a timezone-aware datetime.')
    self._clock = clock or _utc_now
    self.keep_versions = validate_keep_versions(keep_versions)
    if not isinstance(delegations, bool):
      raise ConfigError(f'delegations={delegations!r} is not accepted; it must be True or False.')
    self.delegations = delegations
    self.storage = storage_lib.open_storage(repo_dir)
    self.metadata_dir = self.storage.join('metadata')
    self.targets_dir = self.storage.join('targets')
    self._keys_dir = keys_dir
    self._signer_uris = signing_keys.validate_signers(signers)
    self._serializer = JSONSerializer(compact=False)
    # {role: the newest version seen}: versions only go up and every N+1 is built on N, so the
    # newest is found by probing N+1, N+2... from here instead of listing a directory that
    # grows with the history (one listing per object seeds it).
    self._known: Dict[str, int] = {}
    self._listed = False

  # --- settings ------------------------------------------------------------------------------

  def stored_expiry(self) -> Dict[str, datetime.timedelta]:
    """{role: period} that the repository's config.json sets (empty when it has none).

    Raises:
      OTARepositoryError: config.json is not a JSON object whose `expiry` maps roles to
        durations.
    """
    if not self.storage.exists(CONFIG):
      return {}
    path = self.storage.join(CONFIG)
    try:
      stored = json.loads(self.storage.read(CONFIG)).get('expiry', {})
      return {role: value for role, value in validate_expiry(stored, f'{path} expiry').items()
              if role in stored}
    except (ValueError, AttributeError) as e:  # JSONDecodeError and ConfigError are ValueErrors.
      raise OTARepositoryError(f'{path} cannot be read as the repository\'s settings: {e}. It '
                               'holds {"expiry": {ROLE: DURATION}}; rewrite it with '
                               '`tfx-edge ota config`.') from e

  @property
  def expiry(self) -> Dict[str, datetime.timedelta]:
    """{role: period} this object signs with: EXPIRY, then config.json, then `expiry=`."""
    if self._expiry is None:
      self._expiry = {**EXPIRY, **self.stored_expiry(), **self._expiry_given}
    return self._expiry

  def save_expiry(self) -> Dict[str, datetime.timedelta]:
    """Writes the periods in effect (EXPIRY, config.json, `expiry=`) to config.json, atomically.

    Returns:
      The periods written, for every role.

    Raises:
      OTARepositoryError: there is no repository at repo_dir (`init` writes config.json itself).
    """
    if not self.storage.exists(_TIMESTAMP):
      raise OTARepositoryError(f'{self.repo_dir} is not an OTA repository (no {_TIMESTAMP}); '
                               '`tfx-edge ota init` creates one and stores its expiry flags.')
    periods = dict(self.expiry)
    with self._locked():
      self.storage.write(CONFIG, _config_bytes(periods))
    return periods

  # --- time ---------------------------------------------------------------------------------

  def _time(self) -> datetime.datetime:
    now = self._clock()
    if not isinstance(now, datetime.datetime) or now.tzinfo is None:
      raise ConfigError(f'clock() returned {now!r}; it must return a timezone-aware datetime.')
    return now.astimezone(datetime.timezone.utc).replace(microsecond=0)

  def _expires(self, role: str, now: Optional[datetime.datetime] = None) -> datetime.datetime:
    return (now or self._time()) + self.expiry[role]

  def refresh_window(self, role: str,
                     if_expiring_within: Any = None) -> datetime.timedelta:
    """How close to its expiry a role is re-signed by refresh() (and flagged by expiry_status).

    `if_expiring_within` (a timedelta or a duration such as "3d") when given; otherwise half the
    role's period, and for root at most MAX_ROOT_WINDOW.
    """
    if if_expiring_within is not None:
      return parse_duration(if_expiring_within, 'if_expiring_within')
    half = self.expiry[role] / 2
    return min(half, MAX_ROOT_WINDOW) if role == Root.type else half

  # --- reading -----------------------------------------------------------------------------

  def _load(self, role: str, version: Optional[int] = None) -> Metadata:
    name = f'{role}.json' if role == Timestamp.type else f'{version}.{role}.json'
    try:
      data = self.storage.read(f'metadata/{name}')
    except FileNotFoundError:
      raise OTARepositoryError(f'OTA repository {self.repo_dir}: no {name}; run '
                              '`tfx-edge ota init` first.') from None
    return Metadata.from_bytes(data)

  def _newest_version(self, role: str) -> Optional[int]:
    """The highest N of the N.<role>.json there are, or None when there is none."""
    if not self._listed:
      for listed, version in self._versions().items():
        self._saw(listed, version)
      self._listed = True
    version = self._known.get(role, 0)
    while self.storage.exists(f'metadata/{version + 1}.{role}.json'):
      version += 1
    if not version:
      return None
    self._saw(role, version)
    return version

  def _saw(self, role: str, version: int) -> None:
    self._known[role] = max(self._known.get(role, 0), version)

  def _versions(self) -> Dict[str, int]:
    """{role: the highest N of the N.<role>.json there are}, from one listing."""
    out: Dict[str, int] = {}
    for match in map(_VERSIONED_RE.match, self.storage.list('metadata')):
      if match:
        out[match.group(2)] = max(out.get(match.group(2), 0), int(match.group(1)))
    return out

  def _newest(self, role: str, versions: Optional[Mapping[str, int]] = None) -> Metadata:
    """The highest N.<role>.json there is (in `versions`, a listing the caller made),
    published by timestamp.json or not (yet)."""
    version = self._newest_version(role) if versions is None else versions.get(role)
    if version is None:
      raise OTARepositoryError(f'OTA repository {self.repo_dir}: no {role} metadata; run '
                              '`tfx-edge ota init` first.')
    return self._load(role, version)

  def _published(self):
    """(timestamp, snapshot, targets) as timestamp.json publishes them."""
    timestamp = self._load(Timestamp.type)
    snapshot = self._load(Snapshot.type, timestamp.signed.snapshot_meta.version)
    targets = self._load(Targets.type, snapshot.signed.meta['targets.json'].version)
    return timestamp, snapshot, targets

  def _published_roles(self, snapshot: Metadata,
                       names: Optional[Any] = None) -> Dict[str, Metadata]:
    """{role: metadata} of the delegated roles `snapshot` publishes (only `names`' if given)."""
    out = {}
    for file_name, meta in snapshot.signed.meta.items():
      role = file_name[:-len('.json')]
      if role != Targets.type and (names is None or role in names):
        out[role] = self._load(role, meta.version)
    return out

  def releases(self, name: Optional[str] = None) -> List[Release]:
    """Published releases, oldest first, optionally of one model name."""
    _, snapshot, targets = self._published()
    roles = [targets, *self._published_roles(snapshot, None if name is None else {name}).values()]
    return sorted((r for md in roles for r in _releases_in(md, name)),
                  key=lambda r: (r.name, r.version, r.channel))

  def read_target(self, release: Release) -> bytes:
    """The bytes of a published model."""
    directory, base = posixpath.split(release.path)
    return self.storage.read(f'targets/{directory}/{release.sha256}.{base}')

  # --- garbage collection -------------------------------------------------------------------

  def gc(self, dry_run: bool = False, min_age: Any = DEFAULT_GC_MIN_AGE,
         trim: bool = True) -> Dict[str, Any]:
    """Deletes the target files that no metadata a device may still be given names.

    With keys_dir (and keep_versions), it first trims every model's metadata to the retention
    policy, as its next write would (a new version of the roles that list more). Then a target
    file stays when any of these names it: the metadata timestamp.json publishes; every snapshot
    written within min_age (the snapshots before it: a device whose fetch began before the last
    commit, or that a cache serves an older timestamp.json); every snapshot newer than the
    published one, the newest file of every role and every role file written within min_age (a
    change being committed); and a file written within min_age stays whatever names it (a
    publish writes its files before its metadata). Deleting only files nothing names, one at a
    time, a gc killed at any point leaves a repository devices accept; running it again
    finishes it.

    Args:
      dry_run: only report what would be deleted.
      min_age: the grace period (a timedelta or a duration such as "1d"; "0s" for none).
      trim: apply the retention policy first (needs keys_dir; skipped without it).

    Returns:
      {'deleted': the paths deleted (or that would be, with dry_run), 'young': unnamed paths
       kept because they were written within min_age, 'referenced': how many target files
       metadata names, 'trimmed': the model names whose metadata was trimmed, 'dry_run'}.

    Raises:
      ConfigError: a bad min_age or dry_run.
      OTARepositoryError: the repository is not initialized.
    """
    if not isinstance(dry_run, bool):
      raise ConfigError(f'dry_run={dry_run!r} is not accepted; it must be True or False.')
    if min_age in (0, '0', '0s') or min_age == datetime.timedelta(0):
      grace = 0.0
    else:
      grace = parse_duration(min_age, 'min_age').total_seconds()
    trimmed = self._trim() if (trim and not dry_run and self._keys_dir and
                               self.keep_versions is not None) else []
    with self._locked():
      self._time()  # Checks the clock; the ages need its sub-second precision.
      now = self._clock().timestamp()
      versions = self._versions()
      timestamp = self._load(Timestamp.type)
      published = timestamp.signed.snapshot_meta.version
      role_versions = {(role, version) for role, version in versions.items()
                       if role not in (Root.type, Snapshot.type)}
      snapshots = set(range(published, versions[Snapshot.type] + 1))
      for path, mtime in self.storage.walk('metadata'):
        match = _VERSIONED_RE.match(posixpath.basename(path))
        if match and now - mtime < grace and match.group(2) != Root.type:
          (snapshots.add(int(match.group(1))) if match.group(2) == Snapshot.type else
           role_versions.add((match.group(2), int(match.group(1)))))
      for version in snapshots:
        for file_name, meta in self._load(Snapshot.type, version).signed.meta.items():
          role_versions.add((file_name[:-len('.json')], meta.version))
      referenced = set()
      for role, version in role_versions:
        for path, target in self._load(role, version).signed.targets.items():
          directory, base = posixpath.split(path)
          referenced.add(f'targets/{directory}/{target.hashes["sha256"]}.{base}')
      deleted, young = [], []
      for path, mtime in sorted(self.storage.walk('targets')):
        if path in referenced:
          continue
        if now - mtime < grace:
          young.append(path)
          continue
        if not dry_run:
          self.storage.delete(path)
        deleted.append(path)
    return {'deleted': deleted, 'young': young, 'referenced': len(referenced),
            'trimmed': trimmed, 'dry_run': dry_run}

  def _trim(self) -> List[str]:
    """Writes a new version of every model's metadata that lists more than the retention keeps;
    returns those model names."""
    _, snapshot, targets = self._published()
    names = sorted(set(self._published_roles(snapshot)) | {r.name for r in
                                                            _releases_in(targets, None)})
    trimmed = []
    for name in names:
      def change(md: Metadata) -> Tuple[bool, bool]:
        dropped = bool(retain(md, self.keep_versions))
        return dropped, dropped
      if self._update_targets(change, 'gc', name):
        trimmed.append(name)
    return trimmed

  # --- writing -----------------------------------------------------------------------------

  def init(self) -> None:
    """Creates keys (if missing) and the first metadata of every role.

    Re-running an init that died part-way finishes it, with the same keys.
    """
    if self.storage.exists(_TIMESTAMP):
      raise OTARepositoryError(f'OTA repository {self.repo_dir} already exists.')
    keyring = self._keyring()  # Checks signers.json and the URIs before anything is written.
    with self._locked():
      # PEM files are generated for file roles only; HSM and KMS keys are checked by a signature.
      signers = keyring.create_or_load()
      # The periods go with the repository (written first: timestamp.json marks a finished init).
      self.storage.write(CONFIG, _config_bytes(self.expiry))
      root = Metadata(Root(expires=self._expires(Root.type), consistent_snapshot=True))
      for role, signer in signers.items():
        root.signed.add_key(signer.public_key, role)
      for md in (root, Metadata(Targets(expires=self._expires(Targets.type))),
                 Metadata(Snapshot(expires=self._expires(Snapshot.type)))):
        self._sign(md, signers, root)
        try:
          self._write(md)
        except FileExistsError:
          # Left by an init that died; keep it if it names our keys (then it is ours).
          existing = self._load(Root.type, 1).signed.roles
          if any(existing[r].keyids != root.signed.roles[r].keyids for r in signing_keys.ROLES):
            raise OTARepositoryError(f'OTA repository {self.repo_dir} already has a root with '
                                  'other keys.') from None
      timestamp = Metadata(Timestamp(expires=self._expires(Timestamp.type)))
      self._sign(timestamp, signers, root)
      try:
        self.storage.create(_TIMESTAMP, timestamp.to_bytes(self._serializer))
      except FileExistsError:
        raise OTARepositoryError(f'OTA repository {self.repo_dir} already exists.') from None

  def publish(self, name: str, model: bytes, channel: str = DEFAULT_CHANNEL,
              info: Optional[Mapping[str, Any]] = None, rollout_percent: int = FULL_ROLLOUT,
              require_approval: bool = False, by: Optional[str] = None,
              golden: Optional[bytes] = None,
              gated_by: Optional[Mapping[str, Any]] = None) -> Release:
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
      require_approval: publish it pending: no device installs it until approve(). Needs
        `gated_by`: a release proposed for approval must be one a gate blessed.
      by: who publishes, for the audit record.
      golden: the model's golden record (tfx_edge_device.health.record_bytes), published as a
        second target `<model path>.golden.json` in the same commit and named by the custom
        info's `golden` ({path, sha256, length}): the device's health check runs it.
      gated_by: the gates that blessed this model (OTAPusher records its blessings' URIs and
        verdicts), signed into the custom info as `gated_by`; required with
        `require_approval`, so that an approver only ever sees blessed models.

    Raises:
      ConfigError: a bad name, channel, percent, `by` or golden, or `require_approval` without
        `gated_by` (nothing is written).
      PublishConflictError: other publishers took the next version MAX_ATTEMPTS times.
    """
    validation.model_name(name)
    validate_channel(channel)
    rollout_percent = validate_rollout_percent(rollout_percent)
    if not isinstance(require_approval, bool):
      raise ConfigError(f'require_approval={require_approval!r} is not accepted; it must be True '
                        'or False.')
    if gated_by is not None and (not isinstance(gated_by, Mapping) or not gated_by):
      raise ConfigError(f'gated_by={gated_by!r:.80} is not accepted; give a non-empty mapping of '
                        'the gates that blessed the model (their blessings and verdicts), or None.')
    if require_approval and gated_by is None:
      # Approval is the last of the gates, not a replacement for them: an approver must never be
      # offered a model that failed, or never met, the accuracy and regression gates.
      raise ConfigError(f'{name!r} cannot be published pending approval without the record of the '
                        'gates that blessed it (gated_by): a pending release exists only for a '
                        'blessed model. OTAPusher(require_approval=True) (the pipeline\'s '
                        '--require-approval) publishes one; nothing was written.')
    by = _who('by', by, required=False)
    if golden is not None and (not isinstance(golden, bytes) or not golden):
      raise ConfigError(f'golden={golden!r:.60} is not accepted; give the golden record\'s bytes '
                        '(tfx_edge_device.health.record_bytes) or None.')
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
      golden_ref = {}
      if golden is not None:  # Next to its model, in the same targets version.
        golden_path = f'{path[:-len(".tflite")]}.golden.json'
        self._write_target(golden_path, golden)
        new_targets[golden_path] = TargetFile.from_data(golden_path, golden, ['sha256'])
        golden_ref = {'golden': {'path': golden_path, 'length': len(golden),
                                 'sha256': hashlib.sha256(golden).hexdigest()}}
      gate_ref = {'gated_by': canonical_info(gated_by)} if gated_by else {}
      custom = dict(info, **golden_ref, **gate_ref, name=name, version=version, channel=channel,
                    patches=patches, state=PENDING if require_approval else LIVE,
                    rollout_percent=rollout_percent,
                    audit=[_event('publish', by, channel=channel, percent=rollout_percent)])
      target = TargetFile.from_data(path, model, ['sha256'])
      target.unrecognized_fields['custom'] = {CUSTOM: custom}
      new_targets[path] = target
      targets.signed.targets.update(new_targets)
      return Release(name, version, channel, path, sha256, len(model), custom), True

    return self._update_targets(change, 'push', name)

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
    return self.publish(name, model, channel or old.channel, info, by=by,
                        gated_by=old.custom.get('gated_by'))

  # --- release state -----------------------------------------------------------------------

  def _matching(self, targets: Metadata, name: str, version: int,
                channel: Optional[str]) -> List[Release]:
    """The entries of name at version (one per channel it is on), or NotPublishedError."""
    releases = _releases_in(targets, name)
    if not releases:
      names = sorted({r.name for r in self.releases()})
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
    published = {r.path: r for r in self.releases(releases[0].name)}
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

    return self._update_targets(change, 'approval', name)

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

    return self._update_targets(change, 'rejection', name)

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

    return self._update_targets(change, 'halt', name)

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
                                'promotion', name)

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
                      operation: str, name: str) -> Any:
    """The one compare-and-swap loop through which every change to a model's releases is written.

    Each attempt loads the newest metadata that holds name's releases (N.<name>.json, its
    delegated role; targets.json for a name not delegated) and calls change(targets), which
    edits it in place and returns (result, True), or returns (result, False) when the change is
    already there (then only the commit runs, finishing what a writer that died left
    uncommitted). It raises to refuse, having written no metadata (it may write target files:
    immutable and invisible until metadata names them). The next version is created only if
    absent; when another writer took it, change runs again on that newer file. Retention
    (keep_versions) applies to what is written.

    Raises:
      ConfigError: name's role would clash with a top-level role or another model's role.
      PublishConflictError: other writers took the next version MAX_ATTEMPTS times.
    """
    if self.delegations:
      validate_role_name(name)
    with self._locked():
      signers = self._load_keys(_TARGETS_CHANGE_ROLES)
      return self._write_targets(change, operation, signers, name=name)[0]

  def _holder(self, name: Optional[str], top: Metadata) -> str:
    """The role that holds name's releases: its delegated role, or targets (name None too)."""
    delegations = top.signed.delegations
    if name is None:
      return Targets.type
    if (delegations is not None and delegations.roles and name in delegations.roles) or (
        self.delegations):
      return name
    return Targets.type

  def _role_to_write(self, role: str, top: Metadata,
                     version: Optional[int]) -> Tuple[Metadata, bool]:
    """(the newest N.<role>.json, False), or (a role to create, True) holding the entries of the
    model that targets.json still lists (a repository from before delegations)."""
    if version is not None:
      return self._load(role, version), False
    delegations = top.signed.delegations
    taken = [r for r in (delegations.roles if delegations and delegations.roles else {})
             if r != role and r.casefold() == role.casefold()]
    if taken:
      raise ConfigError(f'model name {role!r} cannot be published: the model {taken[0]!r} is '
                        'already there, and their delegated roles would clash on a file system '
                        'that ignores case (a device\'s may). Use another model name; nothing '
                        'was written.')
    md = Metadata(Targets(expires=self._expires(Targets.type)))
    md.signed.version = 0  # The first write makes it 1.
    md.signed.targets.update({path: target for path, target in top.signed.targets.items()
                              if _belongs(path, role)})
    return md, True

  def _write_targets(self, change: Callable[[Metadata], Tuple[Any, bool]], operation: str,
                     signers, windows: Optional[Mapping[str, datetime.timedelta]] = None,
                     name: Optional[str] = None, commit: bool = True
                     ) -> Tuple[Any, List[str]]:
    """_update_targets' loop, under the caller's lock: (change's result, the roles written).

    name None changes targets.json itself (a refresh); commit=False leaves the commit to the
    caller (a refresh re-signing several roles commits once).
    """
    role = Targets.type
    for attempt in range(MAX_ATTEMPTS):
      if attempt:
        _backoff(attempt)
      top = self._newest(Targets.type)
      root = self._newest(Root.type)
      role = self._holder(name, top)
      md, new = (top, False) if role == Targets.type else self._role_to_write(
          role, top, self._newest_version(role))
      result, changed = change(md)
      changed = changed or new  # A new role is written even when its entries are unchanged.
      if changed:
        if operation != 'refresh':  # A refresh re-signs; it adds and drops nothing.
          retain(md, self.keep_versions)
        md.signed.version += 1
        md.signed.expires = self._expires(Targets.type)
        self._sign(md, signers, root)
        try:
          self._create_role(md, role)
        except FileExistsError:
          logging.info('OTA repository %s: another writer took %s version %d; retrying.',
                       self.repo_dir, role, md.signed.version)
          continue
      written = [role] if changed else []
      if role != Targets.type and not self._delegates(top, root, role):
        written += self._delegate(role, signers, operation)
      if commit:
        written += self._commit(signers, windows, operation=operation)
      return result, written
    if operation == 'push':
      again = 'nothing of this push was published. Push again.'
    else:
      again = f'nothing of this {operation} was written. Run it again.'
    what = 'targets version' if role == Targets.type else f'version of the {role} targets role'
    raise PublishConflictError(
        f'OTA repository {self.repo_dir}: other publishers took the next {what} '
        f'{MAX_ATTEMPTS} times in a row; {again}')

  @staticmethod
  def _wanted_role(role: str, root: Metadata) -> DelegatedRole:
    # Delegated roles are signed by the targets key: the keys root trusts for targets now.
    trusted = root.signed.roles[Targets.type]
    return DelegatedRole(role, list(trusted.keyids), trusted.threshold, True,
                         paths=[p.format(name=role) for p in _DELEGATED_PATHS])

  def _delegates(self, top: Metadata, root: Metadata, role: str) -> bool:
    """Whether top delegates role's paths as root's targets keys require, and lists none."""
    wanted = self._wanted_role(role, root)
    delegations = top.signed.delegations
    return (delegations is not None and bool(delegations.roles) and
            delegations.roles.get(role) == wanted and
            all(k in delegations.keys for k in wanted.keyids) and
            not any(_belongs(path, role) for path in top.signed.targets))

  def _delegate(self, role: str, signers, operation: str) -> List[str]:
    """Makes the newest targets.json delegate role's paths to it, with the targets key, and
    list none of them itself. Returns [targets] when it wrote a targets version, else []."""
    for attempt in range(MAX_ATTEMPTS):
      if attempt:
        _backoff(attempt)
      top, root = self._newest(Targets.type), self._newest(Root.type)
      if self._delegates(top, root, role):
        return []
      wanted = self._wanted_role(role, root)
      delegations = top.signed.delegations
      moved = [path for path in top.signed.targets if _belongs(path, role)]
      if delegations is None:
        delegations = top.signed.delegations = Delegations(keys={}, roles={})
      delegations.keys.update({k: root.signed.keys[k] for k in wanted.keyids})
      delegations.roles[role] = wanted
      for path in moved:
        del top.signed.targets[path]
      top.signed.version += 1
      top.signed.expires = self._expires(Targets.type)
      self._sign(top, signers, root)
      try:
        self._create_role(top, Targets.type)
      except FileExistsError:
        continue
      return [Targets.type]
    raise PublishConflictError(
        f'OTA repository {self.repo_dir}: other publishers took the next targets version '
        f'{MAX_ATTEMPTS} times in a row while this {operation} delegated {role!r} to its role; '
        'its metadata is written but not published: run it again to finish.')

  def _create_role(self, md: Metadata, role: str) -> None:
    """Creates N.<role>.json (targets.json or a delegated role's), only if absent."""
    setattr(md, _ROLE_ATTRIBUTE, role)
    self._write(md)

  # --- expiry ---------------------------------------------------------------------------------

  def _windows(self, if_expiring_within: Any) -> Dict[str, datetime.timedelta]:
    return {role: self.refresh_window(role, if_expiring_within) for role in ROLES}

  @staticmethod
  def _due(md: Metadata, windows: Mapping[str, datetime.timedelta], root: Metadata,
           now: datetime.datetime) -> bool:
    """Whether md must be re-signed: it expires within its window, or root no longer trusts
    the key that signed it (a rotation)."""
    return (md.signed.expires - now <= windows[md.signed.type] or
            not _signed_by_trusted_key(md, root))

  def expiry_status(self, if_expiring_within: Any = None) -> List[Dict[str, Any]]:
    """Each role's published version and expiry, and a warning when it is within its window.

    Args:
      if_expiring_within: the refresh window of every role (a timedelta or a duration such as
        "3d"); default refresh_window(role) for each.

    Returns:
      One dict per role (root, targets, snapshot, timestamp, then each model's delegated role,
      with `delegated` True), as timestamp.json publishes them (root: the newest): `role`,
      `version`, `expires` (ISO 8601, UTC), `expires_in_s` (negative once expired),
      `refresh_window_s`, and `warning`: None, or what is wrong and the command that fixes it.

    Raises:
      ConfigError: a bad if_expiring_within.
    """
    windows = self._windows(if_expiring_within)
    timestamp, snapshot, targets = self._published()
    now = self._time()
    out = []
    for md in (self._newest(Root.type), targets, snapshot, timestamp):
      role = md.signed.type
      left = md.signed.expires - now
      warning = None
      if left <= windows[role]:
        fix = {Root.type: 'renew it with the offline root key: `tfx-edge ota renew-root` '
                          '(docs/ota.md, "Renewing root")',
               Targets.type: 'run `tfx-edge ota refresh` with the targets key'}.get(
                   role, 'run `tfx-edge ota refresh` (the online keys suffice)')
        warning = (f'{role} version {md.signed.version} {_when(md, now)}, within its refresh '
                   f'window of {_human(windows[role])}: {fix}.')
      out.append({'role': role, 'version': md.signed.version, 'expires': _iso(md.signed.expires),
                  'expires_in_s': int(left.total_seconds()),
                  'refresh_window_s': int(windows[role].total_seconds()), 'warning': warning})
    # Then each model's delegated role: signed with the targets key, with targets' period.
    window = windows[Targets.type]
    for role, md in self._published_roles(snapshot).items():
      left = md.signed.expires - now
      warning = None
      if left <= window:
        warning = (f'the delegated targets role {role} version {md.signed.version} '
                   f'{_when(md, now)}, within its refresh window of {_human(window)}: run '
                   '`tfx-edge ota refresh` with the targets key.')
      out.append({'role': role, 'delegated': True, 'version': md.signed.version,
                  'expires': _iso(md.signed.expires), 'expires_in_s': int(left.total_seconds()),
                  'refresh_window_s': int(window.total_seconds()), 'warning': warning})
    return out

  def refresh(self, if_expiring_within: Any = None, online_only: bool = False) -> Dict[str, Any]:
    """Re-signs targets, snapshot and timestamp where they expire within their refresh window.

    Adds and changes no release. Re-signing targets writes N+1.targets.json through the same
    compare-and-swap loop as a publish, and so re-signs snapshot and timestamp; re-signing
    snapshot re-signs timestamp. Snapshot versions are created only if absent and timestamp.json
    is written by the same commit as a publish's, which looks again after its own write: a
    refresh racing a publish never loses the publish. Like every write, a refresh finishes the
    commit of a change another writer wrote but did not publish. Running it again right after
    re-signs nothing.

    Only the keys of the roles to re-sign are read: snapshot.pem and timestamp.pem suffice while
    targets is outside its window. Every key is checked against the newest root before
    anything is written.

    Args:
      if_expiring_within: the window of every role (a timedelta or a duration such as "3d");
        default refresh_window(role) for each (half its period).
      online_only: re-sign only snapshot and timestamp (the keys a scheduled job holds); a
        targets file within its window is reported in `warnings` instead.

    Returns:
      {'resigned': the top-level roles written, in signing order, 'resigned_delegated': the
       models' delegated roles re-signed (with the targets key, before targets.json),
       'roles': expiry_status() after,
       'warnings': the warnings of expiry_status() after (what still needs a hand: root, or
       targets with online_only)}.

    Raises:
      ConfigError: a bad if_expiring_within or online_only, or no keys_dir (nothing read).
      SigningKeyError: a key needed is missing (for targets, the message names its expiry), or
        is not one the newest root trusts; nothing was written.
      OTARepositoryError: the repository is not initialized.
    """
    windows = self._windows(if_expiring_within)
    if not isinstance(online_only, bool):
      raise ConfigError(f'online_only={online_only!r} is not accepted; it must be True or False.')
    keys_dir = self._keys()
    resigned: List[str] = []
    resigned_delegated: List[str] = []
    with self._locked():
      now = self._time()
      timestamp, snapshot, targets = self._published()
      root = self._newest(Root.type)
      due = {md.signed.type for md in (targets, snapshot, timestamp)
             if self._due(md, windows, root, now)}
      # Delegated roles are signed with the targets key and re-signed like targets.json.
      due_delegated = [role for role, md in self._published_roles(snapshot).items()
                       if self._due(md, windows, root, now)]
      if due_delegated:
        due.add(Targets.type)
      if online_only:
        due.discard(Targets.type)
      needed = [role for i, role in enumerate(REFRESHED_ROLES)
                if due & set(REFRESHED_ROLES[:i + 1])]
      keyring = self._keyring()
      if Targets.type in needed and not keyring.available(Targets.type):
        # Name targets.json when it is due, else the first delegated role that is.
        due_md, what = targets, 'targets'
        if not self._due(targets, windows, root, now):
          due_md = self._load(due_delegated[0], snapshot.signed.meta[
              f'{due_delegated[0]}.json'].version)
          what = f'the delegated targets role {due_delegated[0]}'
        raise SigningKeyError(
            f'{what} version {due_md.signed.version} {_when(due_md, now)}, within its '
            f'refresh window of {_human(windows[Targets.type])}, and must be re-signed with the '
            f'targets key, which is not in {keys_dir}. It is an offline key: run the refresh '
            'where it is available, or pass --online-only (online_only=True) to re-sign only '
            'snapshot and timestamp. Nothing was written.')
      signers = self._load_keys(needed)
      for role, signer in signers.items():
        if signer.public_key.keyid not in root.signed.roles[role].keyids:
          raise SigningKeyError(
              f'the {role} key {keyring.where(role)} is not one that root version '
              f'{root.signed.version} trusts for {role}: it belongs to another repository, or a '
              f'key rotation replaced it (rotate-keys keeps those as {role}.pem.old-N). Give '
              f'the current {role}.pem (after a rotation, update the Secret a scheduled refresh '
              'mounts). Nothing was written.')

      def resign_targets(newest: Metadata) -> Tuple[None, bool]:
        # The newest file, not the published one: a newer one is a change being committed
        # (or left by a writer that died), which the new version must keep.
        return None, self._due(newest, windows, self._newest(Root.type), self._time())

      if Targets.type in needed:
        written = []
        for role in due_delegated:
          written += self._write_targets(resign_targets, 'refresh', signers, windows, name=role,
                                         commit=False)[1]
        written += self._write_targets(resign_targets, 'refresh', signers, windows)[1]
        resigned = [role for role in REFRESHED_ROLES if role in written]
        resigned_delegated = [role for role in due_delegated if role in written]
      elif needed:
        resigned = self._commit(signers, windows, advance=False, operation='refresh')
    status = self.expiry_status(if_expiring_within)
    return {'resigned': resigned, 'resigned_delegated': resigned_delegated, 'roles': status,
            'warnings': [s['warning'] for s in status if s['warning']]}

  def renew_root(self, expiry: Any = None) -> int:
    """Writes root version N+1: the same keys and roles, a new expiry, signed with the root key.

    Devices that trusted any older root walk the chain to it on their next fetch, even when the
    root they hold has expired (TUF checks the expiry of the newest root only).

    Args:
      expiry: how long the new root stays valid (a timedelta or a duration such as "365d");
        default this repository's root period.

    Returns:
      The new root version.

    Raises:
      ConfigError: a bad expiry, or no keys_dir.
      SigningKeyError: root.pem is missing or not a key the newest root trusts; nothing was
        written.
      PublishConflictError: other writers took the next root version MAX_ATTEMPTS times.
    """
    period = self.expiry[Root.type] if expiry is None else parse_duration(expiry, 'root expiry')
    keys_dir = self._keys()
    with self._locked():
      signer = _load_key(keys_dir, Root.type, self._signer_uris)
      where = signing_keys.Keyring(keys_dir, self._signer_uris).where(Root.type)
      for attempt in range(MAX_ATTEMPTS):
        if attempt:
          _backoff(attempt)
        root = self._newest(Root.type)
        if signer.public_key.keyid not in root.signed.roles[Root.type].keyids:
          raise SigningKeyError(f'the root key {where} is not one that root version '
                                f'{root.signed.version} trusts; nothing was written.')
        root.signed.version += 1
        root.signed.expires = self._time() + period
        root.signatures.clear()
        signing_keys.sign(root, signer, Root.type, lambda: where)
        try:
          self._write(root)  # Only if absent: a concurrent rotation is not overwritten.
        except FileExistsError:
          continue
        return root.signed.version
    raise PublishConflictError(f'OTA repository {self.repo_dir}: other writers took the next root '
                               f'version {MAX_ATTEMPTS} times in a row; nothing was written. Run '
                               'it again.')

  def rotate_keys(self, role: str, new_signer: Optional[str] = None,
                  new_public_key: Optional[str] = None) -> int:
    """Replaces the signing key of an online role (snapshot or timestamp).

    For a PEM file key, generates the new key (kept as <role>.pem.new until root names it),
    writes root version N+1 naming it instead of the old one, signed with the root key, makes
    it <role>.pem (the old file is kept as <role>.pem.old-<N+1>), and re-signs the role. A key
    in an HSM or a KMS is replaced by one made there beforehand, given by `new_signer`: it must
    sign a check payload that its public key verifies before root names it, and once root does,
    keys_dir's signers.json names it (the old URI kept under `previous`); no key file is
    written. Clients that trusted an older root walk the root chain on their next refresh.
    Running it again (with the same new_signer) after a crash finishes the rotation.

    Args:
      role: snapshot or timestamp.
      new_signer: the private key URI of the new key (signing_keys.SCHEMES but `file:`);
        required when the role's key is not a PEM file.
      new_public_key: the new key's public key (PEM), for a KMS URI; an `hsm:` key's is read
        from the token.

    Returns:
      The new root version.

    Raises:
      ConfigError: another role, a URI of an unknown scheme, or no new_signer for an HSM or
        KMS key (nothing written).
      SigningKeyError: the root key or the new key is missing or unusable (nothing written).
    """
    if role not in ONLINE_ROLES:
      raise ConfigError(f'role={role!r}: rotate-keys replaces the online keys {ONLINE_ROLES}; '
                       'root and targets keys are offline keys.')
    keyring = self._keyring()
    if new_signer is None and not keyring.is_file(role):
      raise ConfigError(
          f'the {role} key is {keyring.uri(role)}: rotate-keys generates new keys only for PEM '
          'files. Create the new key in the HSM or KMS and pass its URI (--new-signer URI, '
          'new_signer=). Nothing was written.')
    new_key = None
    if new_signer is not None:
      new_key = keyring.signer_for(role, new_signer, new_public_key)
      signing_keys.check(new_key, role, new_signer)
    with self._locked():
      root_signer = keyring.signer(Root.type)
      root = self._newest(Root.type)
      if new_key is None:
        new_key = signing_keys.pending(self._keys(), role, keyring.path(role))
      if new_key.public_key.keyid not in root.signed.roles[role].keyids:
        for keyid in list(root.signed.roles[role].keyids):
          root.signed.revoke_key(keyid, role)
        root.signed.add_key(new_key.public_key, role)
        root.signed.version += 1
        root.signed.expires = self._expires(Root.type)
        root.signatures.clear()
        # One root key signs for both the old root's threshold and the new one's.
        signing_keys.sign(root, root_signer, Root.type, lambda: keyring.where(Root.type))
        self._write(root)  # Only if absent: a concurrent rotation cannot be lost.
      if new_signer is None:
        signing_keys.activate(self._keys(), role, root.signed.version, keyring.path(role))
      else:
        keyring.activate_uri(role, new_key, new_signer, root.signed.version)
        self._signer_uris.pop(role, None)  # An override named the key just replaced.
      self._commit(self._load_keys(ONLINE_ROLES))  # Re-signs what the old key signed.
      return root.signed.version

  def _commit(self, signers, windows: Optional[Mapping[str, datetime.timedelta]] = None,
              advance: bool = True, operation: str = 'push') -> List[str]:
    """Makes snapshot and timestamp.json publish the newest targets, signed with trusted keys.

    Runs until a check after its own timestamp write finds no newer snapshot, so that when two
    publishers commit at once the later state wins even if their writes land out of order.

    Args:
      signers: {role: signer} with at least snapshot and timestamp.
      windows: a refresh's windows: snapshot and timestamp are re-signed too when they expire
        within theirs.
      advance: False for a refresh that re-signs no targets: the snapshot keeps naming the
        targets version it names (publishing nothing new); True moves it to the newest.
      operation: what runs, for the error.

    Returns:
      The roles written (snapshot, timestamp), in that order.
    """
    written = []
    for attempt in range(MAX_ATTEMPTS):
      if attempt:
        _backoff(attempt)
      root = self._newest(Root.type)
      now = self._time()
      snapshot = self._newest(Snapshot.type)
      named = {file_name: meta.version for file_name, meta in snapshot.signed.meta.items()}
      wanted = self._snapshot_meta(named) if advance else named
      if (wanted != named or not _signed_by_trusted_key(snapshot, root) or
          (windows and self._due(snapshot, windows, root, now))):
        snapshot.signed.meta = {file_name: MetaFile(version=version)
                                for file_name, version in wanted.items()}
        snapshot.signed.version += 1
        snapshot.signed.expires = self._expires(Snapshot.type, now)
        self._sign(snapshot, signers, root)
        try:
          self._write(snapshot)
        except FileExistsError:
          continue  # Another publisher made this snapshot version: look again.
        written.append(Snapshot.type)
      timestamp = self._load(Timestamp.type)
      if (timestamp.signed.snapshot_meta.version < snapshot.signed.version or
          not _signed_by_trusted_key(timestamp, root) or
          (windows and self._due(timestamp, windows, root, now))):
        timestamp.signed.snapshot_meta = MetaFile(version=max(
            snapshot.signed.version, timestamp.signed.snapshot_meta.version))
        timestamp.signed.version += 1
        timestamp.signed.expires = self._expires(Timestamp.type, now)
        self._sign(timestamp, signers, root)
        self._write(timestamp)
        written.append(Timestamp.type)
      # A newer snapshot means another publisher committed meanwhile, and its timestamp
      # write may have landed before ours: look again. A newer targets file without a
      # snapshot is still being committed by its own publisher.
      if self._newest(Snapshot.type).signed.version == snapshot.signed.version:
        return sorted(set(written), key=REFRESHED_ROLES.index)
    again = ('push again (idempotent) to finish' if operation == 'push' else
             f'run the {operation} again to finish')
    raise PublishConflictError(
        f'OTA repository {self.repo_dir}: others kept committing while this {operation} brought '
        f'timestamp.json up to date ({MAX_ATTEMPTS} attempts). Its metadata is written; '
        f'timestamp.json may not publish it yet: {again}.')

  def _snapshot_meta(self, named: Mapping[str, int]) -> Dict[str, int]:
    """{file name: version} a snapshot lists: the newest targets.json, and the newest file of
    every role it delegates (a role is delegated only once its first file exists)."""
    targets_version = max(named['targets.json'], self._newest_version(Targets.type) or 0)
    delegations = self._load(Targets.type, targets_version).signed.delegations
    wanted = {'targets.json': targets_version}
    for role in (delegations.roles if delegations is not None and delegations.roles else {}):
      self._saw(role, named.get(f'{role}.json', 0))  # Probe from what snapshot names.
      version = max(named.get(f'{role}.json', 0), self._newest_version(role) or 0)
      if version:
        wanted[f'{role}.json'] = version
    return wanted

  def _sign(self, md: Metadata, signers, root: Metadata) -> None:
    """Signs md with its role's key, checking that root trusts that key."""
    role = md.signed.type
    if role not in signers or (
        signers[role].public_key.keyid not in root.signed.roles[role].keyids):
      # The key may have been rotated since this publisher loaded it (or, for a refresh, the
      # role came due while it ran).
      signers[role] = self._keyring().signer(role)
      if signers[role].public_key.keyid not in root.signed.roles[role].keyids:
        raise SigningKeyError(f'the {role} key {self._keyring().where(role)} is not the one root '
                         f'version {root.signed.version} trusts; if a key rotation was '
                         f'interrupted, run `tfx-edge ota rotate-keys --role {role}` again.')
    md.signatures.clear()
    # An HSM or KMS can fail while signing (token removed, PIN, network): a SigningKeyError.
    signing_keys.sign(md, signers[role], role, lambda: self._keyring().where(role))

  def _keyring(self) -> signing_keys.Keyring:
    """Where each role's key is: keys_dir (<role>.pem, signers.json) and the signers given."""
    return signing_keys.Keyring(self._keys(), self._signer_uris)

  def _load_keys(self, roles) -> Dict[str, Any]:
    keyring = self._keyring()
    return {role: keyring.signer(role) for role in roles}

  def _write_target(self, path: str, data: bytes) -> None:
    directory, base = posixpath.split(path)
    digest = hashlib.sha256(data).hexdigest()
    self.storage.write(f'targets/{directory}/{digest}.{base}', data)

  def _write(self, md: Metadata) -> None:
    """Writes metadata: timestamp.json in place, versioned files only if absent."""
    # A delegated role's metadata is of type targets; _create_role says which role it is.
    role = getattr(md, _ROLE_ATTRIBUTE, md.signed.type)
    data = md.to_bytes(self._serializer)
    if role == Timestamp.type:
      self.storage.write(_TIMESTAMP, data)
    else:
      try:
        self.storage.create(f'metadata/{md.signed.version}.{role}.json', data)
      finally:  # Written by this call or (FileExistsError) by another writer: it exists.
        if self.storage.exists(f'metadata/{md.signed.version}.{role}.json'):
          self._saw(role, md.signed.version)

  def _keys(self) -> str:
    if not self._keys_dir:
      raise ConfigError('this operation signs metadata and needs keys_dir (--keys).')
    return self._keys_dir

  @contextlib.contextmanager
  def _locked(self) -> Iterator[None]:
    with self.storage.locked():
      yield
