"""What the OTA tests share: a device fetching over HTTP, and the repository's files to compare."""
import os

from tuf.api.metadata import Metadata

from components.ota import client


def fetch(repo, url, dest, name='digits', channel='stable', device_id=None):
  """Fetches as a device does, with the repository's first root as its out-of-band root."""
  return client.fetch(url, os.path.join(repo.metadata_dir, '1.root.json'), name, str(dest),
                      channel, device_id)


def installed(dest, name='digits'):
  with open(os.path.join(dest, f'{name}.tflite'), 'rb') as f:
    return f.read()


def verified_targets(dest):
  """The targets metadata a device verified (tuf.ngclient) and keeps in its directory."""
  return Metadata.from_file(os.path.join(dest, 'metadata', 'targets.json'))


def files(repo):
  """{path: bytes} of every file of a local repository: what a refused change leaves as is."""
  out = {}
  for directory, _, names in os.walk(repo.repo_dir):
    for name in names:
      if name != '.publish.lock':
        path = os.path.join(directory, name)
        with open(path, 'rb') as f:
          out[os.path.relpath(path, repo.repo_dir)] = f.read()
  return out
