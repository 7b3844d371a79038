"""Signing keys of the TUF roles, one PEM file per role in a directory (or a mounted Secret).

Keys are read from files only when signing; they never go into exec properties, ML Metadata,
logs or exception messages (errors name the file, never its content).
"""
import os
from typing import Dict

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner

ROLES = ('root', 'targets', 'snapshot', 'timestamp')


def _path(keys_dir: str, role: str) -> str:
  return os.path.join(keys_dir, f'{role}.pem')


def load(keys_dir: str) -> Dict[str, CryptoSigner]:
  """{role: signer} from <keys_dir>/<role>.pem."""
  signers = {}
  for role in ROLES:
    path = _path(keys_dir, role)
    try:
      with open(path, 'rb') as f:
        signers[role] = CryptoSigner(load_pem_private_key(f.read(), password=None))
    except FileNotFoundError:
      raise FileNotFoundError(f'signing key for role {role!r} not found at {path}; create keys '
                              'with `tfx-edge ota init` or mount the key Secret there.') from None
    except ValueError:
      raise ValueError(f'signing key file {path} is not an unencrypted PEM private key.') from None
  return signers


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
