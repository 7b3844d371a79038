"""The model devices run now, fetched from the OTA repository and verified as a device verifies it.

The regression gate must compare a new model with what is really released, not with a file that
happens to lie on disk: it refreshes TUF metadata from the repository (root chain, timestamp,
snapshot, targets, signatures, expiry, rollback protection) with python-tuf's ngclient, picks the
release with the devices' own rule (components.common.releases), and downloads it against its
signed length and hash. The repository may be served over HTTP(S) or be read where the pushers
write it (a local path or an fsspec URI such as gs://); either way the bytes are verified.
"""
import dataclasses
import logging
import os
import shutil
from typing import Any, Dict, Iterator, Optional

import fsspec
from tuf.api import exceptions as tuf_exceptions
from tuf.ngclient import FetcherInterface
from tuf.ngclient import Updater

from components.common import releases
from components.errors import OTARepositoryError

_CHUNK = 1 << 20
_HTTP = ('http://', 'https://')


@dataclasses.dataclass(frozen=True)
class Released:
  """A verified release: its bytes and its signed custom info (version, tensors, metrics...)."""
  path: str
  version: int
  sha256: str
  model: bytes
  custom: Dict[str, Any]


class StorageFetcher(FetcherInterface):
  """Serves ngclient from a path or fsspec URI, as an HTTP server would serve the same files."""

  def _fetch(self, url: str) -> Iterator[bytes]:
    try:
      with fsspec.open(url, 'rb') as f:
        while chunk := f.read(_CHUNK):
          yield chunk
    except FileNotFoundError:
      # What an HTTP server answers: ngclient reads 404 as "no newer root" and the like.
      raise tuf_exceptions.DownloadHTTPError(f'{url} not found', 404) from None


def repository_exists(location: str) -> bool:
  """Whether a repository was initialized at a path or fsspec URI (its timestamp.json exists)."""
  if location.startswith(_HTTP):
    return True  # Asked over the network; refresh() says if it is not there.
  fs, path = fsspec.core.url_to_fs(location)
  return fs.exists(f'{path.rstrip("/")}/metadata/timestamp.json')


def fetch_released(location: str, trusted_root: str, name: str, channel: str,
                   workdir: str) -> Optional[Released]:
  """The newest live release of `name` on `channel`, verified through TUF; None when none.

  Args:
    location: the repository: an http(s) URL, a local path or an fsspec URI.
    trusted_root: a root.json obtained out of band, as a device has one.
    name: model name.
    channel: release channel.
    workdir: an empty local directory for the client's metadata and downloads.

  Raises:
    OTARepositoryError: the trusted root cannot be read.
    tuf.api.exceptions.RepositoryError: metadata or the model failed verification (tampered,
      expired, replayed, signed by an untrusted key, wrong hash).
  """
  metadata_dir = os.path.join(workdir, 'metadata')
  os.makedirs(metadata_dir, exist_ok=True)
  try:
    with fsspec.open(trusted_root, 'rb') as f:
      root = f.read()
  except FileNotFoundError:
    raise OTARepositoryError(f'trusted root {trusted_root} does not exist: give the root.json '
                             'devices trust (metadata/1.root.json of the repository, kept out '
                             'of band).') from None
  with open(os.path.join(metadata_dir, 'root.json'), 'wb') as f:
    f.write(root)
  base = location.rstrip('/')
  fetcher = None if location.startswith(_HTTP) else StorageFetcher()
  downloads = os.path.join(workdir, 'downloads')
  os.makedirs(downloads, exist_ok=True)
  updater = Updater(metadata_dir, f'{base}/metadata/', downloads, f'{base}/targets/',
                    fetcher=fetcher)
  updater.refresh()
  # What refresh() verified and stored (name's delegated role, if it has one), as a device reads.
  targets = releases.verified_targets_of(updater, metadata_dir, name)
  selected = releases.select_release(targets, name, channel, device_id=None)
  if selected is None:
    return None
  path, custom = selected
  info = updater.get_targetinfo(path)
  file_path = updater.download_target(info)  # Verified against the signed length and hash.
  with open(file_path, 'rb') as f:
    model = f.read()
  shutil.rmtree(downloads, ignore_errors=True)
  logging.info('Released %s version %s on %s: %s (%d bytes, verified through TUF).', name,
               custom['version'], channel, path, len(model))
  return Released(path, int(custom['version']), info.hashes['sha256'], model, custom)
