"""What the OTA tests share: a device fetching over HTTP, a server answering from any storage, the
repository's files to compare, `tfx-edge ota status` output read back, and a virtualenv with only
the device distribution installed."""
import contextlib
import datetime
import glob
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse

import pytest
from tuf.api.metadata import Metadata

from components.ota import client
from components.ota import repository
from tests.conftest import REPO_ROOT

DEVICE = os.path.join(REPO_ROOT, 'device')  # The device distribution's source.
# What OTAPusher records as the blessings of a model it publishes pending approval.
GATED = {'model_blessing': '/pipeline/VariantSelector/blessing/7',
         'regression_blessing': '/pipeline/RegressionGate/blessing/8',
         'regression_status': 'passed'}


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


# --- a fresh virtualenv on a device's Python: only the device distribution ---------------------


def python_interpreter(version):
  """A Python `version` interpreter: on PATH, or one of pyenv's (which need not be selected)."""
  candidates = [shutil.which(f'python{version}')]
  roots = [os.environ.get('PYENV_ROOT', os.path.expanduser('~/.pyenv'))]
  for root in roots:
    candidates += sorted(glob.glob(os.path.join(root, 'versions', f'{version}.*', 'bin',
                                                'python')), reverse=True)
  for candidate in filter(None, candidates):
    if subprocess.run([candidate, '-c', 'import venv'], capture_output=True).returncode == 0:
      return candidate
  pytest.skip(f'no Python {version} here (pyenv install {version})')


def device_venv(tmp_path, version, extra=''):
  """A virtualenv with only the device distribution (and its dependencies) installed."""
  venv = tmp_path / f'venv{version}'
  subprocess.run([python_interpreter(version), '-m', 'venv', str(venv)], check=True)
  # From a copy: setuptools builds in the source tree (build/, *.egg-info).
  source = tmp_path / 'device-dist'
  shutil.copytree(DEVICE, source, ignore=shutil.ignore_patterns('build', '*.egg-info',
                                                                '__pycache__'))
  start = time.monotonic()
  proc = subprocess.run([str(venv / 'bin' / 'python'), '-m', 'pip', 'install', '--quiet',
                         f'{source}{extra}'], capture_output=True, text=True, timeout=600)
  took = time.monotonic() - start
  assert proc.returncode == 0, proc.stderr[-3000:]
  installed = subprocess.run([str(venv / 'bin' / 'python'), '-m', 'pip', 'list',
                              '--format=json'], capture_output=True, text=True, check=True)
  names = {p['name'].lower() for p in json.loads(installed.stdout)}
  print(f'pip install device{extra} on Python {version}: {took:.1f}s, {sorted(names)}')
  assert not names & {'tensorflow', 'tfx', 'tf-keras', 'apache-beam', 'tfx-edge'}
  return venv, names


def device_fetch(venv, metadata_dir, url, dest, name='digits'):
  """Runs the device CLI's fetch in venv; returns (the process, its status file as a dict)."""
  proc = subprocess.run([str(venv / 'bin' / 'tfx-edge-device'), 'fetch', '--url', url,
                         '--trusted-root', os.path.join(metadata_dir, '1.root.json'),
                         '--name', name, '--dest', str(dest)],
                        capture_output=True, text=True, timeout=120)
  with open(os.path.join(dest, f'{name}.status.json')) as f:
    return proc, json.load(f)
