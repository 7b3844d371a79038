"""The device-side client: verify with tuf.ngclient, pick the release, install atomically.

State in `dest`:
    metadata/        trusted TUF metadata, kept between runs (rollback protection needs it)
    device_id        this device's id, generated once (decides which rollouts include it)
    <name>.tflite    the installed model
    <name>.json      what is installed (version, sha256, channel)

The device installs the newest live release on its channel whose rollout includes it
(components/common/releases.py): pending and rejected releases are invisible, and a halted
release sends the devices that took it back to the newest live release that includes them.
"""
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from typing import Optional
import uuid

import bsdiff4
from tuf.api import exceptions
from tuf.api.metadata import Metadata
from tuf.ngclient import Updater

from components.common import releases
from components.errors import ConfigError
from components.errors import NotPublishedError
from components.ota import repository

DEVICE_ID_FILE = 'device_id'
_DEVICE_ID_RE = re.compile(r'^[!-~]{1,128}$')  # Printable ASCII, no spaces.


@dataclasses.dataclass(frozen=True)
class FetchResult:
  """What the client did."""
  name: str
  version: int
  path: str
  updated: bool
  downloaded_bytes: int = 0
  via_patch: bool = False
  device_id: str = ''


# The selection rule lives in the shared layer, where the regression gate uses it too.
select_release = releases.select_release
in_rollout = releases.in_rollout
rollout_bucket = releases.rollout_bucket


def validate_device_id(device_id: str) -> str:
  if not isinstance(device_id, str) or not _DEVICE_ID_RE.match(device_id):
    raise ConfigError(f'device_id={device_id!r} is not accepted: use 1-128 printable ASCII '
                      'characters without spaces (for example a serial number or a UUID).')
  return device_id


def device_id_of(dest: str) -> str:
  """The id kept in `<dest>/device_id`, generated (a UUID4) and kept there on first use.

  Raises:
    ConfigError: the file exists but cannot be read or holds no valid id.
  """
  path = os.path.join(dest, DEVICE_ID_FILE)
  way_out = ('fix or remove it, or pass --device-id. Removing it makes this a new device, which '
             'may fall in or out of rollouts in progress.')
  try:
    with open(path, encoding='ascii') as f:
      text = f.read().strip()
  except FileNotFoundError:
    os.makedirs(dest, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.device_id-', dir=dest)
    with os.fdopen(fd, 'w') as f:
      f.write(uuid.uuid4().hex + '\n')
      f.flush()
      os.fsync(f.fileno())
    try:
      os.link(tmp, path)  # Only if absent: two first fetches at once agree on one id.
    except FileExistsError:
      pass
    finally:
      os.unlink(tmp)
    return device_id_of(dest)
  except (OSError, UnicodeDecodeError) as e:
    raise ConfigError(f'the device id file {path} cannot be read ({e}): {way_out}') from None
  if not _DEVICE_ID_RE.match(text):
    raise ConfigError(f'the device id file {path} holds {text[:40]!r}, which is not a device id '
                      f'(1-128 printable ASCII characters without spaces): {way_out}')
  return text


def fetch(url: str, trusted_root: str, name: str, dest: str,
          channel: str = repository.DEFAULT_CHANNEL,
          device_id: Optional[str] = None) -> FetchResult:
  """Refreshes metadata from `url` and installs the release of `name` selected for the device.

  The release is releases.select_release's: the newest live release on `channel` whose rollout
  includes the device. It may be older than the installed one when that one was halted.

  Args:
    url: base URL of the repository (serving metadata/ and targets/).
    trusted_root: a root.json obtained out of band; used only on the first run.
    name: model name.
    dest: the device's model directory.
    channel: release channel.
    device_id: the device's id; None reads `<dest>/device_id`, generating it on first use.

  Raises:
    tuf.api.exceptions.RepositoryError: tampered, expired or replayed metadata, or a target
      whose hash does not match (nothing is installed then).
    NotPublishedError: no release of name on channel is live for this device (a LookupError).
    ConfigError: a bad device id, or a device id file that cannot be read.
  """
  repository.validate_channel(channel)
  device_id = validate_device_id(device_id) if device_id is not None else device_id_of(dest)
  metadata_dir = os.path.join(dest, 'metadata')
  os.makedirs(metadata_dir, exist_ok=True)
  if not os.path.exists(os.path.join(metadata_dir, 'root.json')):
    # Trust on first use of the out-of-band root; later runs trust what they verified since.
    shutil.copyfile(trusted_root, os.path.join(metadata_dir, 'root.json'))
  base = url.rstrip('/')
  updater = Updater(metadata_dir, f'{base}/metadata/', os.path.join(dest, '.downloads'),
                    f'{base}/targets/')
  updater.refresh()
  # targets.json in metadata_dir is what ngclient verified and stored during refresh().
  targets = Metadata.from_file(os.path.join(metadata_dir, 'targets.json'))
  selected = select_release(targets, name, channel, device_id)
  if selected is None:
    _raise_nothing_for(targets, url, name, channel, device_id)
  path, custom = selected
  installed_path = os.path.join(dest, f'{name}.tflite')
  state_path = os.path.join(dest, f'{name}.json')
  if os.path.exists(state_path):
    with open(state_path) as f:
      if json.load(f).get('version') == custom['version']:
        return FetchResult(name, custom['version'], installed_path, updated=False,
                           device_id=device_id)

  info = updater.get_targetinfo(path)
  os.makedirs(os.path.join(dest, '.downloads'), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.incoming-', dir=dest)
  os.close(fd)
  try:
    downloaded, via_patch = _download_patched(updater, custom, installed_path, info, tmp)
    if not via_patch:
      # download_target verifies length and hashes against the signed targets metadata.
      updater.download_target(info, filepath=tmp)
      downloaded = info.length
    os.replace(tmp, installed_path)  # The old model stays until the new one is verified.
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  state = {'name': name, 'version': custom['version'], 'channel': channel,
           'sha256': info.hashes['sha256']}
  fd, tmp_state = tempfile.mkstemp(prefix='.state-', dir=dest)
  with os.fdopen(fd, 'w') as f:
    json.dump(state, f)
  os.replace(tmp_state, state_path)
  shutil.rmtree(os.path.join(dest, '.downloads'), ignore_errors=True)
  return FetchResult(name, custom['version'], installed_path, True, downloaded, via_patch,
                     device_id)


def _raise_nothing_for(targets: Metadata, url: str, name: str, channel: str, device_id: str):
  found = [c for c in ((t.unrecognized_fields.get('custom') or {}).get(releases.CUSTOM)
                       for t in targets.signed.targets.values())
           if c and c.get('name') == name and c.get('channel') == channel]
  if not found:
    raise NotPublishedError(f'no model {name!r} is published on channel {channel!r} at {url}.')
  there = ', '.join(f'version {c["version"]} {releases.state_of(c)}' + (
      f' at {releases.rollout_percent_of(c)}%' if releases.state_of(c) == releases.LIVE
      else '') for c in sorted(found, key=lambda c: c['version']))
  raise NotPublishedError(f'no release of {name!r} on channel {channel!r} at {url} is live for '
                          f'device {device_id!r} ({there}); the installed model, if any, stays.')


def _download_patched(updater: Updater, custom: dict, installed_path: str, info,
                      out_path: str):
  """Builds the new model from the installed one and a signed patch, when one applies.

  Returns (patch bytes downloaded, True) when out_path holds the new model with the hash the
  signed metadata gives; (0, False) when no patch applies or the result does not verify, so
  the caller downloads the full file.
  """
  if not os.path.exists(installed_path):
    return 0, False
  with open(installed_path, 'rb') as f:
    installed = f.read()
  installed_sha = hashlib.sha256(installed).hexdigest()
  for patch in custom.get('patches', []):
    if patch['from_sha256'] != installed_sha:
      continue
    patch_info = updater.get_targetinfo(patch['path'])
    if patch_info is None:
      continue
    try:
      patch_file = updater.download_target(patch_info)  # Verified against its signed hash.
    except exceptions.RepositoryError as e:
      logging.warning('OTA client: patch %s failed verification (%s); downloading the full '
                      'file.', patch['path'], e)
      return 0, False
    with open(patch_file, 'rb') as f:
      patched = bsdiff4.patch(installed, f.read())
    if hashlib.sha256(patched).hexdigest() != info.hashes['sha256'] or len(patched) != info.length:
      logging.warning('OTA client: patch %s gave a model whose hash does not match the signed '
                      'metadata; downloading the full file.', patch['path'])
      return 0, False
    with open(out_path, 'wb') as f:
      f.write(patched)
    return patch_info.length, True
  return 0, False
