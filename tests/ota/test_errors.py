"""The OTA repository when a push fails partway or a key file is bad: releases stay verifiable,
and no error message ever holds key material.
"""
import base64
import os
import traceback

from cryptography.hazmat.primitives import serialization
import pytest

from components import errors
from components.ota import client
from components.ota import repository
from components.ota import signing_keys
from tests.helpers import http_server
from tests.helpers import read_only
from tests.helpers import run_without_root_override

# --- a push that fails partway ---------------------------------------------------------------

_PUBLISH_TO_OTA = '''
import sys
from components.ota import repository
repository.OTARepository(sys.argv[1], sys.argv[2]).publish('digits', b'model-two')
'''


@pytest.mark.parametrize('read_only_dir', ['metadata', 'targets/digits/stable'])
def test_a_push_denied_permission_keeps_the_release_verifiable_and_a_rerun_completes(
    tmp_path, read_only_dir):
  repo = repository.OTARepository(str(tmp_path / 'repo'), str(tmp_path / 'keys'))
  repo.init()
  repo.publish('digits', b'model-one')

  with read_only(os.path.join(repo.repo_dir, read_only_dir)):
    proc = run_without_root_override(_PUBLISH_TO_OTA, repo.repo_dir, str(tmp_path / 'keys'))

  assert proc.returncode == 1 and 'PermissionError' in proc.stderr, proc.stderr[-2000:]
  assert [r.version for r in repo.releases('digits')] == [1]
  root = os.path.join(repo.metadata_dir, '1.root.json')
  with http_server(repo.repo_dir) as url:
    # A device verifies signatures and hashes and still gets version 1.
    during = client.fetch(url, root, 'digits', str(tmp_path / 'device'))
    assert repo.publish('digits', b'model-two').version == 2
    after = client.fetch(url, root, 'digits', str(tmp_path / 'device'))
  assert (during.version, after.version) == (1, 2)
  with open(after.path, 'rb') as f:
    assert f.read() == b'model-two'


# --- secrets ---------------------------------------------------------------------------------


def _encrypted(pem):
  key = serialization.load_pem_private_key(pem, password=None)
  return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.BestAvailableEncryption(b'passphrase'))


def _shown(raised):
  """Everything a log would show of an error: the message, the repr, the traceback and chain."""
  return ''.join(traceback.format_exception(raised.type, raised.value, raised.tb)) + repr(
      raised.value)


@pytest.mark.parametrize('corrupt', [
    lambda pem: pem[:len(pem) // 2],  # truncated
    lambda pem: pem.replace(pem.splitlines()[1][10:14], b'!!!!'),  # garbled body
    lambda pem: pem.replace(b'PRIVATE KEY', b'PUBLIC KEY'),  # wrong kind of PEM
    _encrypted,  # needs a passphrase it does not have
], ids=['truncated', 'garbled', 'wrong-kind', 'encrypted'])
def test_a_malformed_key_error_names_the_file_but_never_holds_key_material(tmp_path, corrupt):
  keys_dir = str(tmp_path / 'keys')
  signing_keys.create_or_load(keys_dir)
  path = os.path.join(keys_dir, 'targets.pem')
  with open(path, 'rb') as f:
    pem = f.read()
  raw = serialization.load_pem_private_key(pem, password=None).private_bytes(
      serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
  with open(path, 'wb') as f:
    f.write(corrupt(pem))

  with pytest.raises(errors.SigningKeyError) as raised:
    signing_keys.load(keys_dir)

  assert str(raised.value) == f'signing key file {path} is not an unencrypted PEM private key.'
  assert raised.value.__cause__ is None and raised.value.__suppress_context__
  shown = _shown(raised)
  body = b''.join(pem.splitlines()[1:-1]).decode()
  fragments = {body[i:i + 12] for i in range(len(body) - 12)}
  assert not [f for f in fragments if f in shown]
  for form in (raw.hex(), base64.b64encode(raw).decode()):
    assert form not in shown


def test_a_missing_key_file_is_named_with_its_role_and_the_fix(tmp_path):
  keys_dir = str(tmp_path / 'keys')
  signing_keys.create_or_load(keys_dir)
  os.remove(os.path.join(keys_dir, 'snapshot.pem'))

  with pytest.raises(errors.SigningKeyError) as raised:
    signing_keys.load(keys_dir)

  assert str(raised.value) == (
      f"signing key for role 'snapshot' not found at {keys_dir}/snapshot.pem; create keys with "
      '`tfx-edge ota init` or mount the key Secret there.')


def test_key_files_are_created_private_and_loaded_again_unchanged(tmp_path):
  keys_dir = str(tmp_path / 'keys')

  created = signing_keys.create_or_load(keys_dir)
  loaded = signing_keys.load(keys_dir)

  assert sorted(os.listdir(keys_dir)) == ['root.pem', 'snapshot.pem', 'targets.pem',
                                          'timestamp.pem']
  assert oct(os.stat(keys_dir).st_mode & 0o777) == '0o700'
  for role in signing_keys.ROLES:
    assert oct(os.stat(os.path.join(keys_dir, f'{role}.pem')).st_mode & 0o777) == '0o600'
    assert loaded[role].public_key.keyid == created[role].public_key.keyid
  # Distinct keys per role.
  assert len({signer.public_key.keyid for signer in loaded.values()}) == 4
