"""Fixtures of the OTA tests: a fresh local repository, an HTTP server in front of it, and the CLI
run in-process against it."""
import uuid

import fsspec
import pytest

from components.ota import cli
from components.ota import repository
from tests.helpers import http_server


@pytest.fixture
def repo(tmp_path):
  ota = repository.OTARepository(str(tmp_path / 'repo'), str(tmp_path / 'keys'))
  ota.init()
  return ota


@pytest.fixture
def mem_uri():
  """A memory:// repository of its own, removed afterwards (the memory store is global)."""
  bucket = f'/ota-test-{uuid.uuid4().hex}'
  yield f'memory://{bucket}/repo'
  fs = fsspec.filesystem('memory')
  if fs.exists(bucket):
    fs.rm(bucket, recursive=True)


@pytest.fixture
def server(repo):
  """`python -m http.server` serving the repository on a free loopback port."""
  with http_server(repo.repo_dir) as url:
    yield url


@pytest.fixture
def cli_run(repo, capsys):
  """Runs `tfx-edge ota COMMAND --repo R --keys K ...` in-process: (exit code, stdout, stderr)."""

  def run(command, *args, keys=True):
    where = ['--repo', repo.repo_dir] + (['--keys', repo._keys_dir] if keys else [])  # pylint: disable=protected-access
    code = cli.main(['ota', command, *where, *args])
    out, err = capsys.readouterr()
    return code, out, err

  return run
