"""Signing keys of the TUF roles, one PEM file per role in a directory (or a mounted Secret).

Keys are read from files only when signing; they never go into exec properties, ML Metadata,
logs or exception messages (errors name the file, never its content).

A rotation (repository.OTARepository.rotate_keys) keeps every key file it replaces:

    <role>.pem            the key root currently names for the role
    <role>.pem.new        the next key, written before root names it (so a crash loses nothing)
    <role>.pem.old-<N>    the key that root version N replaced
"""
import os
from typing import Dict

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner

from components.errors import SigningKeyError
from components.ota import storage

ROLES = ('root', 'targets', 'snapshot', 'timestamp')


def _path(keys_dir: str, role: str) -> str:
  return os.path.join(keys_dir, f'{role}.pem')


def _pending_path(keys_dir: str, role: str) -> str:
  return _path(keys_dir, role) + '.new'


def _load_one(path: str, role: str) -> CryptoSigner:
  try:
    with open(path, 'rb') as f:
      return CryptoSigner(load_pem_private_key(f.read(), password=None))
  except FileNotFoundError:
    raise SigningKeyError(f'signing key for role {role!r} not found at {path}; create keys '
                            'with `tfx-edge ota init` or mount the key Secret there.') from None
  except (ValueError, TypeError):  # cryptography raises TypeError for an encrypted key.
    raise SigningKeyError(
        f'signing key file {path} is not an unencrypted PEM private key.') from None


def _write_private(path: str, data: bytes) -> None:
  """Writes a key file atomically, 0600 from the start (mkstemp's mode)."""
  tmp = storage.durable_temp_file(path, data, 0o600)
  try:
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def load(keys_dir: str) -> Dict[str, CryptoSigner]:
  """{role: signer} from <keys_dir>/<role>.pem."""
  return {role: _load_one(_path(keys_dir, role), role) for role in ROLES}


def create_or_load(keys_dir: str) -> Dict[str, CryptoSigner]:
  """Generates an ed25519 key per role where none exists (files 0600), then loads all."""
  os.makedirs(keys_dir, mode=0o700, exist_ok=True)
  for role in ROLES:
    path = _path(keys_dir, role)
    if not os.path.exists(path):
      signer = CryptoSigner.generate_ed25519()
      fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
      with os.fdopen(fd, 'wb') as f:
        f.write(signer.private_bytes)
  return load(keys_dir)


def pending(keys_dir: str, role: str) -> CryptoSigner:
  """The key a rotation of role installs: <role>.pem.new, generated first if absent.

  The file is kept until activate() so that a rotation that died after root named the key can
  be finished by running it again.
  """
  path = _pending_path(keys_dir, role)
  if not os.path.exists(path):
    _write_private(path, CryptoSigner.generate_ed25519().private_bytes)
  return _load_one(path, role)


def activate(keys_dir: str, role: str, root_version: int) -> None:
  """Makes the pending key <role>.pem, keeping the replaced one as <role>.pem.old-<N>.

  Each step can be repeated after a crash: the old key is copied aside before it is replaced.
  """
  current, new = _path(keys_dir, role), _pending_path(keys_dir, role)
  if not os.path.exists(new):
    return  # Already done.
  old = f'{current}.old-{root_version}'
  if not os.path.exists(old):
    with open(current, 'rb') as f:
      _write_private(old, f.read())
  os.replace(new, current)
