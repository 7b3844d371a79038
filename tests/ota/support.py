"""What the OTA tests share: a device fetching over HTTP, a server answering from any storage, the
repository's files to compare, and `tfx-edge ota status` output read back."""
import contextlib
import datetime
import http.server
import json
import os
import threading
import urllib.parse

from tuf.api.metadata import Metadata

from components.ota import client
from components.ota import repository


def days_ago(repo, days, keys_dir=None, **kwargs):
  """The same repository, signing as if `days` days ago: its metadata expires that much sooner.

  Devices check expiry against the real clock, so this is how a test makes time pass.
  """
  then = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days)
  return repository.OTARepository(repo.repo_dir, keys_dir or repo._keys_dir,  # pylint: disable=protected-access
                                  clock=lambda: then, **kwargs)


def fetch(repo, url, dest, name='digits', channel='stable', device_id=None):
  """Fetches as a device does, with the repository's first root as its out-of-band root."""
  return client.fetch(url, os.path.join(repo.metadata_dir, '1.root.json'), name, str(dest),
                      channel, device_id)


@contextlib.contextmanager
def serve_storage(repo):
  """An HTTP server on loopback answering GETs from repo's storage at request time."""
  storage = repo.storage

  class Handler(http.server.BaseHTTPRequestHandler):

    def do_GET(self):  # pylint: disable=invalid-name
      path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip('/')
      try:
        body = storage.read(path)
      except (FileNotFoundError, IsADirectoryError):
        self.send_error(404)
        return
      self.send_response(200)
      self.send_header('Content-Length', str(len(body)))
      self.end_headers()
      self.wfile.write(body)

    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f'http://127.0.0.1:{server.server_address[1]}'
  finally:
    server.shutdown()
    server.server_close()


def installed(dest, name='digits'):
  with open(os.path.join(dest, f'{name}.tflite'), 'rb') as f:
    return f.read()


def verified_targets(dest, name='digits'):
  """The targets metadata listing name's releases that a device verified (tuf.ngclient) and
  keeps in its directory: name's delegated role, or targets.json when it has none."""
  delegated = os.path.join(dest, 'metadata', f'{name}.json')
  return Metadata.from_file(delegated if os.path.exists(delegated) else
                            os.path.join(dest, 'metadata', 'targets.json'))


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


def status_lines(stdout):
  """(release lines, role lines) of `tfx-edge ota status`: role lines have `role`, not `name`."""
  lines = [json.loads(line) for line in stdout.splitlines()]
  return [x for x in lines if 'name' in x], [x for x in lines if 'role' in x]
