"""Fixtures of the OTA tests: a fresh local repository, and an HTTP server in front of it."""
import pytest

from components.ota import repository
from tests.helpers import http_server


@pytest.fixture
def repo(tmp_path):
  ota = repository.OTARepository(str(tmp_path / 'repo'), str(tmp_path / 'keys'))
  ota.init()
  return ota


@pytest.fixture
def server(repo):
  """`python -m http.server` serving the repository on a free loopback port."""
  with http_server(repo.repo_dir) as url:
    yield url
