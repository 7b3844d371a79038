"""Which OTA release a device installs: release states, staged rollout, and the selection rule.

Shared by the device client (components/ota/client.py) and the regression gate, which must see
the release that devices run now exactly as a device sees it. Plain Python over TUF's Metadata
API: no TFX, no TensorFlow.
"""
import hashlib
import os
import re
from urllib import parse
from typing import Any, Dict, Optional, Tuple

from tuf.api.metadata import Metadata

from components.errors import ConfigError

CUSTOM = 'tfx_edge'  # Key of our fields in a target's `custom`.
DEFAULT_CHANNEL = 'stable'  # Where a model is published, and what a device follows, unless told.
_CHANNEL_RE = re.compile(r'^[a-z][a-z0-9-]{0,31}$')
LIVE = 'live'  # Devices install it (within its rollout percentage).
PENDING = 'pending'  # Published, waiting for a human approval; no device installs it.
HALTED = 'halted'  # Stopped: devices that took it go back to the previous live release.
REJECTED = 'rejected'  # Refused at approval; never installed.
STATES = (LIVE, PENDING, HALTED, REJECTED)


def validate_channel(channel: str) -> str:
  """Returns channel when it is a valid channel name; raises ConfigError naming the rule."""
  if not isinstance(channel, str) or not _CHANNEL_RE.match(channel):
    raise ConfigError(f'channel={channel!r} is not accepted: use 1-32 lowercase letters, digits '
                      'or "-", starting with a letter (for example "stable", "canary").')
  return channel


def state_of(custom: Dict[str, Any]) -> str:
  """A release's state; releases published before states existed are live."""
  return custom.get('state', LIVE)


def rollout_percent_of(custom: Dict[str, Any]) -> int:
  """A release's rollout percentage; releases published before rollouts existed are at 100."""
  return int(custom.get('rollout_percent', 100))


def rollout_bucket(name: str, version: int, device_id: str) -> float:
  """The device's place in a release's rollout, in [0, 100).

  A hash of the name, version and device id: the same device keeps its place as the percentage
  grows (so it never drops out), and places are independent between releases.
  """
  digest = hashlib.sha256(f'{name}\0{version}\0{device_id}'.encode()).digest()
  return int.from_bytes(digest[:8], 'big') / 2**64 * 100.0


def in_rollout(name: str, version: int, device_id: Optional[str], percent: int) -> bool:
  """Whether a device is in a release's rollout; device_id None counts every device in."""
  return device_id is None or percent >= 100 or rollout_bucket(name, version, device_id) < percent


def verified_targets_of(updater: Any, metadata_dir: str, name: str) -> Metadata:
  """The verified targets metadata that lists name's releases, after updater.refresh().

  A repository with delegations gives each model its own targets role: ngclient verifies and
  stores it (as <name>.json in metadata_dir) when asked for a path only that role can hold, and
  no other model's role is downloaded. Without a delegation for name, targets.json lists them.

  Args:
    updater: a tuf.ngclient.Updater whose refresh() has run.
    metadata_dir: the updater's metadata directory.
    name: model name.
  """
  top = Metadata.from_file(os.path.join(metadata_dir, 'targets.json'))
  delegations = top.signed.delegations
  if delegations is None or not delegations.roles or name not in delegations.roles:
    return top
  updater.get_targetinfo(f'{name}/-/-')  # Matches `<name>/*/*`: loads name's role only.
  return Metadata.from_file(os.path.join(metadata_dir, f'{parse.quote(name, "")}.json'))


def select_release(targets: Metadata, name: str, channel: str,
                   device_id: Optional[str]) -> Optional[Tuple[str, Dict[str, Any]]]:
  """(target path, custom info) of the release of `name` a device installs from `channel`.

  The newest live release whose rollout includes the device. With device_id None, the newest
  live release whatever its rollout: the one the newest devices run, which a new model must not
  be worse than. Pending, rejected and halted releases are never selected.

  Args:
    targets: verified targets metadata.
    name: model name.
    channel: release channel.
    device_id: the device's stable id, or None.

  Returns:
    (path, custom) or None when no release qualifies.
  """
  best = None
  for path, target in targets.signed.targets.items():
    custom = (target.unrecognized_fields.get('custom') or {}).get(CUSTOM) or {}
    if custom.get('name') != name or custom.get('channel') != channel:
      continue
    if state_of(custom) != LIVE:
      continue
    if not in_rollout(name, custom['version'], device_id, rollout_percent_of(custom)):
      continue
    if best is None or custom['version'] > best[1]['version']:
      best = (path, custom)
  return best
