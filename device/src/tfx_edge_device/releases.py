"""Which release a device installs: release states, staged rollout, and the selection rule.

The device-side twin of tfx-edge's components/common/releases.py, which the regression gate uses
to see the release devices run (tests/ota/test_device_dist.py checks that the two agree).
Plain Python over TUF's Metadata API.
"""
import hashlib
import re
from typing import Any, Dict, Iterable, Optional, Tuple

from tuf.api.metadata import Metadata

from tfx_edge_device.errors import ConfigError

CUSTOM = 'tfx_edge'  # Key of tfx-edge's fields in a target's `custom`.
DEFAULT_CHANNEL = 'stable'
_CHANNEL_RE = re.compile(r'^[a-z][a-z0-9-]{0,31}$')
_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$')
LIVE = 'live'
PENDING = 'pending'
HALTED = 'halted'
REJECTED = 'rejected'


def validate_channel(channel: str) -> str:
  """Returns channel when it is a valid channel name; raises ConfigError naming the rule."""
  if not isinstance(channel, str) or not _CHANNEL_RE.match(channel):
    raise ConfigError(f'channel={channel!r} is not accepted: use 1-32 lowercase letters, digits '
                      'or "-", starting with a letter (for example "stable", "canary").')
  return channel


def validate_name(name: str) -> str:
  """Returns a model name that is safe as one file name; raises ConfigError otherwise."""
  if not isinstance(name, str) or not _NAME_RE.match(name) or name in ('.', '..'):
    raise ConfigError(f'name={name!r} is not accepted: use 1-128 letters, digits, "_", "-" or '
                      '".", starting with a letter or digit (no path separators).')
  return name


def custom_of(target) -> Dict[str, Any]:
  """tfx-edge's custom info of a TargetFile ({} for other targets)."""
  return (target.unrecognized_fields.get('custom') or {}).get(CUSTOM) or {}


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


def select_release(targets, name: str, channel: str,
                   device_id: Optional[str]) -> Optional[Tuple[str, Dict[str, Any]]]:
  """(target path, custom info) of the release of `name` a device installs from `channel`.

  The newest live release whose rollout includes the device (with device_id None, whatever its
  rollout). Pending, rejected and halted releases are never selected.

  Args:
    targets: verified targets metadata (a Metadata), or several (an iterable of them: the
      top-level role and the delegated roles that concern `name`).
    name: model name.
    channel: release channel.
    device_id: the device's stable id, or None.

  Returns:
    (path, custom) or None when no release qualifies.
  """
  best = None
  for path, custom in _entries(targets):
    if custom.get('name') != name or custom.get('channel') != channel:
      continue
    if state_of(custom) != LIVE:
      continue
    if not in_rollout(name, custom['version'], device_id, rollout_percent_of(custom)):
      continue
    if best is None or custom['version'] > best[1]['version']:
      best = (path, custom)
  return best


def _entries(targets) -> Iterable[Tuple[str, Dict[str, Any]]]:
  for md in ([targets] if isinstance(targets, Metadata) else targets):
    for path, target in md.signed.targets.items():
      yield path, custom_of(target)
