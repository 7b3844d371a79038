"""The device client: verify with tuf.ngclient, pick the release, health-check it, switch to it.

State in `dest`:
    metadata/                 trusted TUF metadata, kept between runs (rollback protection)
    device_id                 this device's id, generated once (decides which rollouts include it)
    <name>.tflite             the installed model
    <name>.json               what is installed (version, sha256, channel) and what was refused
    <name>.previous.tflite    the model installed before it, kept for a rollback without download
    <name>.previous.json      its version, sha256 and channel
    <name>.status.json        what the last run did, for the device's agent to upload (STATUS)

The device installs the newest live release on its channel whose rollout includes it
(releases.select_release): pending and rejected releases are invisible, and a halted release
sends the devices that took it back to the newest live release that includes them, from the
kept previous model when it is that one.

A new model is health-checked (health.check) after its download and before the switch: when it
fails, it is not installed, the previous model stays, its sha256 is recorded as refused (it is
not downloaded again), the status file says why and fetch raises HealthCheckError.
"""
import dataclasses
import datetime
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
from typing import Any, Dict, List, Optional
import uuid

import bsdiff4
from tuf.api import exceptions
from tuf.api.metadata import Metadata
from tuf.ngclient import Updater

from tfx_edge_device import health
from tfx_edge_device import releases
from tfx_edge_device.errors import ConfigError
from tfx_edge_device.errors import HealthCheckError
from tfx_edge_device.errors import NotPublishedError
from tfx_edge_device.errors import RollbackError

DEVICE_ID_FILE = 'device_id'
_DEVICE_ID_RE = re.compile(r'^[!-~]{1,128}$')  # Printable ASCII, no spaces.
STATUS = '{name}.status.json'  # The status file's default name in dest.
# Outcomes in the status file.
INSTALLED, UP_TO_DATE, ROLLED_BACK, REFUSED, ERROR = (
    'installed', 'up_to_date', 'rolled_back', 'refused', 'error')

# tuf 7 requires `bootstrap` (None: the root.json in the metadata directory), tuf 5.1 has none.
_UPDATER_KWARGS = ({'bootstrap': None}
                   if 'bootstrap' in inspect.signature(Updater.__init__).parameters else {})

select_release = releases.select_release
in_rollout = releases.in_rollout
rollout_bucket = releases.rollout_bucket


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
  outcome: str = INSTALLED  # installed, up_to_date or rolled_back (from the kept previous model)
  health: Optional[Dict[str, Any]] = None  # health.check()'s result, when a model was checked
  status_path: str = ''


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


def _paths(dest: str, name: str) -> Dict[str, str]:
  return {'model': os.path.join(dest, f'{name}.tflite'),
          'state': os.path.join(dest, f'{name}.json'),
          'previous': os.path.join(dest, f'{name}.previous.tflite'),
          'previous_state': os.path.join(dest, f'{name}.previous.json')}


def _read_json(path: str) -> Dict[str, Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return {}


def _write_json(path: str, value: Dict[str, Any]) -> None:
  """Writes atomically: readers see the old file or the new one."""
  directory = os.path.dirname(path) or '.'
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.tmp-', dir=directory)
  try:
    with os.fdopen(fd, 'w') as f:
      json.dump(value, f, indent=1, sort_keys=True)
      f.write('\n')
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def _sha256_of(path: str) -> Optional[str]:
  try:
    with open(path, 'rb') as f:
      return hashlib.sha256(f.read()).hexdigest()
  except FileNotFoundError:
    return None


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def _installed(state: Dict[str, Any]) -> Optional[Dict[str, Any]]:
  return ({k: state[k] for k in ('version', 'sha256', 'channel') if k in state}
          if 'version' in state else None)


def fetch(url: str, trusted_root: str, name: str, dest: str,
          channel: str = releases.DEFAULT_CHANNEL, device_id: Optional[str] = None,
          health_check: str = health.AUTO, status_file: Optional[str] = None) -> FetchResult:
  """Refreshes metadata from `url` and installs the release of `name` selected for the device.

  The release is releases.select_release's: the newest live release on `channel` whose rollout
  includes the device. It may be older than the installed one when that one was halted; when it
  is the kept previous model, it is restored without a download. Whatever happens, the status
  file describes it.

  Args:
    url: base URL of the repository (serving metadata/ and targets/).
    trusted_root: a root.json obtained out of band; used only on the first run.
    name: model name.
    dest: the device's model directory.
    channel: release channel.
    device_id: the device's id; None reads `<dest>/device_id`, generating it on first use.
    health_check: `auto` (check with LiteRT when it is installed), `require` or `off`
      (health.check).
    status_file: where to write the status JSON; default `<dest>/<name>.status.json`.

  Raises:
    tuf.api.exceptions.RepositoryError: tampered, expired or replayed metadata, or a target
      whose hash does not match (nothing is installed then).
    NotPublishedError: no release of name on channel is live for this device (a LookupError).
    HealthCheckError: the new model failed its health check, now or on an earlier run (the
      previous model stays).
    ConfigError: a bad argument or device id, or a device id file that cannot be read.
  """
  releases.validate_name(name)
  releases.validate_channel(channel)
  if health_check not in health.MODES:
    raise ConfigError(f'health_check={health_check!r} is not accepted: use one of '
                      f'{", ".join(health.MODES)}.')
  status_path = status_file or os.path.join(dest, STATUS.format(name=name))
  status = {'name': name, 'channel': channel, 'url': url, 'time': _now(), 'device_id': None}
  try:
    device_id = (validate_device_id(device_id) if device_id is not None
                 else device_id_of(dest))
    status['device_id'] = device_id
    result = _fetch(url, trusted_root, name, dest, channel, device_id, health_check, status)
  except HealthCheckError as e:
    _report(status_path, e.status)
    raise
  except Exception as e:
    if os.path.isdir(os.path.dirname(os.path.abspath(status_path))):  # Never creates dest.
      _report(status_path, dict(status, outcome=ERROR, error={'type': type(e).__name__,
                                                             'message': str(e)},
                                installed=_installed(_read_json(_paths(dest, name)['state']))))
    raise
  _report(status_path, status)
  return dataclasses.replace(result, status_path=status_path)


def _report(path: str, status: Dict[str, Any]) -> None:
  try:
    _write_json(path, status)
  except OSError as e:  # The fetch's own outcome matters more than its report.
    logging.warning('OTA client: cannot write the status file %s: %s', path, e)


def _verified_targets(updater: Updater, metadata_dir: str, name: str,
                      channel: str) -> List[Metadata]:
  """The verified targets roles that can hold `name`'s releases: top-level and delegated.

  ngclient verifies and stores a delegated role when it walks the delegations to a target path;
  asking for a path where this name's models live makes it load the roles that concern the name
  (and no other model's).
  """
  top = Metadata.from_file(os.path.join(metadata_dir, 'targets.json'))
  found = [top]
  if top.signed.delegations is None:
    return found
  probe = f'{name}/{channel}/model-v000001.tflite'
  updater.get_targetinfo(probe)
  pending = [top]
  while pending:
    delegations = pending.pop().signed.delegations
    if delegations is None:
      continue
    for role, _ in delegations.get_roles_for_target(probe):
      path = os.path.join(metadata_dir, f'{_quote(role)}.json')
      if os.path.exists(path):
        md = Metadata.from_file(path)
        found.append(md)
        pending.append(md)
  return found


def _quote(role: str) -> str:
  from urllib import parse  # pylint: disable=g-import-not-at-top
  return parse.quote(role, '')


def _fetch(url: str, trusted_root: str, name: str, dest: str, channel: str, device_id: str,
           health_check: str, status: Dict[str, Any]) -> FetchResult:
  """fetch() after its arguments are checked; fills `status` with what it did."""
  files = _paths(dest, name)
  metadata_dir = os.path.join(dest, 'metadata')
  os.makedirs(metadata_dir, exist_ok=True)
  if not os.path.exists(os.path.join(metadata_dir, 'root.json')):
    # Trust on first use of the out-of-band root; later runs trust what they verified since.
    shutil.copyfile(trusted_root, os.path.join(metadata_dir, 'root.json'))
  base = url.rstrip('/')
  downloads = os.path.join(dest, '.downloads')
  updater = Updater(metadata_dir, f'{base}/metadata/', downloads, f'{base}/targets/',
                    **_UPDATER_KWARGS)
  updater.refresh()
  roles = _verified_targets(updater, metadata_dir, name, channel)
  selected = select_release(roles, name, channel, device_id)
  state = _read_json(files['state'])
  status['installed'] = _installed(state)
  if selected is None:
    _raise_nothing_for(roles, url, name, channel, device_id)
  path, custom = selected
  info = updater.get_targetinfo(path)
  sha256 = info.hashes['sha256']
  status['selected'] = {'version': custom['version'], 'sha256': sha256, 'path': path}
  if state.get('version') == custom['version'] and os.path.exists(files['model']):
    status['outcome'] = UP_TO_DATE
    return FetchResult(name, custom['version'], files['model'], updated=False,
                       device_id=device_id, outcome=UP_TO_DATE)
  refused = next((r for r in state.get('refused', []) if r['sha256'] == sha256), None)
  if refused is not None:
    # Refused before: the same bytes fail the same way, so they are not downloaded again.
    message = (f'{name} version {custom["version"]} ({sha256[:12]}) was refused on this device '
               f'at {refused["at"]}: {refused["reason"]}; the installed model stays. Remove its '
               f'entry from "refused" in {files["state"]} to try it again.')
    raise HealthCheckError(message, dict(status, outcome=REFUSED, reason=message,
                                         previously_refused=refused))

  new_state = {'name': name, 'version': custom['version'], 'channel': channel, 'sha256': sha256,
               'installed_at': _now()}
  previous = _read_json(files['previous_state'])
  if previous.get('sha256') == sha256 and _sha256_of(files['previous']) == sha256:
    # A halted release sends the device back to the model it kept: no download, no new check
    # (it passed its health check when it was installed).
    fd, tmp = tempfile.mkstemp(prefix='.incoming-', dir=dest)
    os.close(fd)
    try:
      shutil.copyfile(files['previous'], tmp)
      _switch(files, tmp, new_state, state)
    finally:
      if os.path.exists(tmp):
        os.unlink(tmp)
    status['outcome'] = ROLLED_BACK
    status['installed'] = _installed(new_state)
    return FetchResult(name, custom['version'], files['model'], True, device_id=device_id,
                       outcome=ROLLED_BACK)

  os.makedirs(downloads, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.incoming-', dir=dest)
  os.close(fd)
  try:
    downloaded, via_patch = _download_patched(updater, custom, files['model'], info, tmp)
    if not via_patch:
      # download_target verifies length and hashes against the signed targets metadata.
      updater.download_target(info, filepath=tmp)
      downloaded = info.length
    golden = None
    if custom.get('golden') and health_check != health.OFF:
      golden_info = updater.get_targetinfo(custom['golden']['path'])
      if golden_info is None:
        raise exceptions.RepositoryError(f'the golden record {custom["golden"]["path"]} of '
                                         f'{path} is not a signed target')
      golden_file = updater.download_target(golden_info)  # Verified against its signed hash.
      with open(golden_file, 'rb') as f:
        golden = f.read()
      downloaded += golden_info.length
    with open(tmp, 'rb') as f:
      checked = health.check(f.read(), custom, golden, health_check)
    status.update(downloaded_bytes=downloaded, via_patch=via_patch, health_check=checked)
    if not checked['passed']:
      _refuse(files['state'], state, custom['version'], sha256, checked['reason'])
      message = (f'{name} version {custom["version"]} failed its health check on this device: '
                 f'{checked["reason"]}. It is not installed; the installed model stays.')
      raise HealthCheckError(message, dict(status, outcome=REFUSED, reason=message))
    _switch(files, tmp, new_state, state)  # The old model stays until the new one is checked.
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
    shutil.rmtree(downloads, ignore_errors=True)
  status['outcome'] = INSTALLED
  status['installed'] = _installed(new_state)
  return FetchResult(name, custom['version'], files['model'], True, downloaded, via_patch,
                     device_id, INSTALLED, checked)


def _refuse(state_path: str, state: Dict[str, Any], version: int, sha256: str,
            reason: str) -> None:
  refused = [r for r in state.get('refused', []) if r['sha256'] != sha256]
  refused.append({'version': version, 'sha256': sha256, 'reason': reason, 'at': _now()})
  _write_json(state_path, dict(state, refused=refused[-20:]))


def _switch(files: Dict[str, str], new_model: str, new_state: Dict[str, Any],
            old_state: Dict[str, Any]) -> None:
  """Makes new_model the installed model, keeping the installed one as the previous one.

  The installed model file exists at every instant: the previous copy is a hard link made
  before the new file replaces it.
  """
  # Only a model its state describes is kept (a run killed between the two replaces below leaves
  # a model newer than its state: it is not kept under the old version's name).
  if 'version' in old_state and _sha256_of(files['model']) == old_state.get('sha256'):
    link = files['previous'] + '.tmp'
    if os.path.exists(link):
      os.unlink(link)
    os.link(files['model'], link)
    os.replace(link, files['previous'])
    _write_json(files['previous_state'], {k: old_state[k] for k in old_state if k != 'refused'})
  os.replace(new_model, files['model'])
  _write_json(files['state'], dict(new_state, refused=old_state.get('refused', [])))


def rollback(dest: str, name: str, reason: str = '',
             status_file: Optional[str] = None) -> FetchResult:
  """Goes back to the kept previous model without a download (a failure found after switching).

  The model rolled back from is recorded as refused, so the next fetch does not install it again
  (it keeps the previous model until a newer release arrives).

  Raises:
    RollbackError: no previous model is kept (or it no longer has its recorded hash).
  """
  releases.validate_name(name)
  files = _paths(dest, name)
  status_path = status_file or os.path.join(dest, STATUS.format(name=name))
  state, previous = _read_json(files['state']), _read_json(files['previous_state'])
  if 'sha256' not in previous or _sha256_of(files['previous']) != previous['sha256']:
    raise RollbackError(f'no previous model of {name} is kept in {dest} to roll back to '
                        f'({os.path.basename(files["previous"])} is missing or does not match '
                        f'{os.path.basename(files["previous_state"])}).')
  fd, tmp = tempfile.mkstemp(prefix='.incoming-', dir=dest)
  os.close(fd)
  try:
    shutil.copyfile(files['previous'], tmp)
    new_state = dict(previous, installed_at=_now())
    _switch(files, tmp, new_state, state)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  why = reason or 'rolled back on the device'
  if 'sha256' in state:
    _refuse(files['state'], _read_json(files['state']), state.get('version'), state['sha256'],
            f'rolled back on the device: {why}')
  _report(status_path, {'name': name, 'time': _now(), 'outcome': ROLLED_BACK, 'reason': why,
                        'installed': _installed(new_state), 'rolled_back_from': _installed(state)})
  return FetchResult(name, previous['version'], files['model'], True, outcome=ROLLED_BACK,
                     status_path=status_path)


def _raise_nothing_for(roles: List[Metadata], url: str, name: str, channel: str,
                       device_id: str):
  found = [c for md in roles for c in map(releases.custom_of, md.signed.targets.values())
           if c.get('name') == name and c.get('channel') == channel]
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
