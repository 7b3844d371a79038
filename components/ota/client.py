"""The device-side client: verify with tuf.ngclient, pick the latest model, install atomically.

State in `dest`:
    metadata/        trusted TUF metadata, kept between runs (rollback protection needs it)
    <name>.tflite    the installed model
    <name>.json      what is installed (version, sha256, channel)
"""
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile

import bsdiff4
from tuf.api import exceptions
from tuf.api.metadata import Metadata
from tuf.ngclient import Updater

from components.errors import NotPublishedError
from components.ota import repository


@dataclasses.dataclass(frozen=True)
class FetchResult:
  """What the client did."""
  name: str
  version: int
  path: str
  updated: bool
  downloaded_bytes: int = 0
  via_patch: bool = False


def _latest(metadata_dir: str, name: str, channel: str):
  # targets.json in metadata_dir is what ngclient verified and stored during refresh().
  targets = Metadata.from_file(os.path.join(metadata_dir, 'targets.json'))
  best = None
  for path, target in targets.signed.targets.items():
    custom = (target.unrecognized_fields.get('custom') or {}).get(repository.CUSTOM, {})
    if custom.get('name') == name and custom.get('channel') == channel:
      if best is None or custom['version'] > best[1]['version']:
        best = (path, custom)
  return best


def fetch(url: str, trusted_root: str, name: str, dest: str,
          channel: str = repository.DEFAULT_CHANNEL) -> FetchResult:
  """Refreshes metadata from `url` and installs the latest `name` on `channel` into `dest`.

  Args:
    url: base URL of the repository (serving metadata/ and targets/).
    trusted_root: a root.json obtained out of band; used only on the first run.
    name: model name.
    dest: the device's model directory.
    channel: release channel.

  Raises:
    tuf.api.exceptions.RepositoryError: tampered, expired or replayed metadata, or a target
      whose hash does not match (nothing is installed then).
    NotPublishedError: nothing published for name on channel (a LookupError).
  """
  repository.validate_channel(channel)
  metadata_dir = os.path.join(dest, 'metadata')
  os.makedirs(metadata_dir, exist_ok=True)
  if not os.path.exists(os.path.join(metadata_dir, 'root.json')):
    # Trust on first use of the out-of-band root; later runs trust what they verified since.
    shutil.copyfile(trusted_root, os.path.join(metadata_dir, 'root.json'))
  base = url.rstrip('/')
  updater = Updater(metadata_dir, f'{base}/metadata/', os.path.join(dest, '.downloads'),
                    f'{base}/targets/')
  updater.refresh()
  latest = _latest(metadata_dir, name, channel)
  if latest is None:
    raise NotPublishedError(f'no model {name!r} is published on channel {channel!r} at {url}.')
  path, custom = latest
  installed_path = os.path.join(dest, f'{name}.tflite')
  state_path = os.path.join(dest, f'{name}.json')
  if os.path.exists(state_path):
    with open(state_path) as f:
      if json.load(f).get('version') == custom['version']:
        return FetchResult(name, custom['version'], installed_path, updated=False)

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
  return FetchResult(name, custom['version'], installed_path, True, downloaded, via_patch)


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
