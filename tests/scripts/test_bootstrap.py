"""The setup script behind `make demo` / `make test`: finding Python 3.10, idempotent installs."""
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

FIND = os.path.join(REPO_ROOT, 'scripts', 'find_python310.sh')


def _find(env):
  return subprocess.run(['bash', FIND], env=env, capture_output=True, text=True, check=False)


def test_no_python310_anywhere_stops_with_instructions(tmp_path):
  env = {'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path), 'PYENV_ROOT': str(tmp_path / 'none')}

  proc = _find(env)

  assert proc.returncode == 1
  assert 'no Python 3.10 interpreter found' in proc.stderr
  assert 'pyenv install 3.10' in proc.stderr and 'uv python install 3.10' in proc.stderr


def test_a_python_of_another_version_is_not_accepted(tmp_path):
  other = os.path.realpath(sys.executable).replace('3.10', '3.11')
  env = {'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path), 'PYENV_ROOT': str(tmp_path / 'none'),
         'PYTHON': other if os.path.exists(other) else '/bin/false'}

  proc = _find(env)

  assert proc.returncode == 1
  assert proc.stdout == ''  # No interpreter printed: the other version was not taken.
  assert 'no Python 3.10 interpreter found' in proc.stderr


def test_python310_is_found_among_pyenv_versions_without_activation(tmp_path):
  # A pyenv root whose 3.10 is not selected and not on PATH, as on the machines here.
  real = os.path.realpath(sys.executable)
  bin_dir = tmp_path / 'pyenv' / 'versions' / '3.10.99' / 'bin'
  bin_dir.mkdir(parents=True)
  (bin_dir / 'python').symlink_to(real)
  env = {'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path), 'PYENV_ROOT': str(tmp_path / 'pyenv')}

  proc = _find(env)

  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == str(bin_dir / 'python')


def test_second_bootstrap_installs_nothing():
  # The suite runs inside the .venv that `make test` just bootstrapped.
  venv = os.path.dirname(os.path.dirname(sys.executable))
  proc = subprocess.run(['bash', os.path.join(REPO_ROOT, 'scripts', 'bootstrap.sh')],
                        env=dict(os.environ, VENV=venv), capture_output=True, text=True,
                        check=False, timeout=60)

  assert proc.returncode == 0, proc.stderr
  assert 'is up to date with requirements.lock (nothing to install)' in proc.stdout
