"""The online keys in a real PKCS#11 HSM: SoftHSM2 (Debian's softhsm2) through securesystemslib's
HSMSigner (python-pkcs11).

Each test makes a token of its own in a temporary SOFTHSM2_CONF directory and generates ECDSA
P-256 keys on it; the repository signs through `hsm:<id>?label=<token>` URIs, a device fetches
over loopback HTTP and verifies what the token signed (tuf.ngclient). The keys are made
extractable so that the tests can read their private values and check that they reach no file,
no log line and no output.
"""
import binascii
import itertools
import json
import logging
import os
import shutil
import subprocess

import pytest
from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import Metadata

from components import errors
from components.ota import cli
from components.ota import repository
from components.ota import signing_keys
from tests.ota.support import days_ago
from tests.ota.support import fetch
from tests.ota.support import files
from tests.ota.support import installed
from tests.ota.support import serve_storage

pkcs11 = pytest.importorskip('pkcs11', reason='python-pkcs11 is the [hsm] extra of tfx-edge')
from pkcs11.util.ec import encode_named_curve_parameters  # noqa: E402  pylint: disable=g-import-not-at-top

LIBRARIES = ('/usr/lib/softhsm/libsofthsm2.so',
             '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so',
             '/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so')
PIN = '271828'
SO_PIN = '31415926'
_labels = itertools.count()


def _library():
  return next((path for path in LIBRARIES if os.path.exists(path)), None)


class Token:
  """A SoftHSM2 token of one test, and the keys generated on it."""

  def __init__(self, label, lib):
    self.label = label
    self.lib = lib
    self.secrets = []  # The private values of the keys made here, as hex.

  def uri(self, key_id):
    return f'hsm:{key_id}?label={self.label}'

  def make_key(self, key_id):
    """An ECDSA P-256 key pair stored on the token under key_id; returns its URI."""
    token = self.lib.get_token(token_label=self.label)
    with token.open(rw=True, user_pin=PIN) as session:
      params = session.create_domain_parameters(pkcs11.KeyType.EC, {
          pkcs11.Attribute.EC_PARAMS: encode_named_curve_parameters('secp256r1')}, local=True)
      _, private = params.generate_keypair(
          store=True, label=f'key-{key_id}', id=pkcs11.util.biginteger(key_id),
          private_template={pkcs11.Attribute.SENSITIVE: False,
                            pkcs11.Attribute.EXTRACTABLE: True})
      self.secrets.append(binascii.hexlify(private[pkcs11.Attribute.VALUE]).decode())
    return self.uri(key_id)

  def leaked(self, *texts):
    """The secrets (key values, the PIN) found in any of texts (str or bytes)."""
    found = []
    for text in texts:
      if isinstance(text, bytes):
        text = text.decode('latin-1')
      lowered = text.lower()
      found += [s for s in self.secrets if s in lowered or s[:32] in lowered]
      if PIN in text:
        found.append('the PIN')
    return found


@pytest.fixture
def token(tmp_path, monkeypatch):
  """A fresh SoftHSM2 token (its own SOFTHSM2_CONF and token directory), PIN in the env."""
  library = _library()
  if library is None or shutil.which('softhsm2-util') is None:
    reason = ('softhsm2 is not installed (apt-get install softhsm2; .ci/run installs it), so '
              'the HSM signing path cannot be tested here')
    if os.environ.get('CI'):
      pytest.fail(reason)  # CI installs it: a skip there would hide a broken install step.
    pytest.skip(reason)
  home = tmp_path / 'softhsm'
  (home / 'tokens').mkdir(parents=True)
  conf = home / 'softhsm2.conf'
  conf.write_text(f'directories.tokendir = {home / "tokens"}\nobjectstore.backend = file\n'
                  'log.level = ERROR\n')
  monkeypatch.setenv('SOFTHSM2_CONF', str(conf))
  monkeypatch.setenv(signing_keys.PKCS11_ENV, library)
  monkeypatch.setenv(signing_keys.PIN_ENV, PIN)
  label = f'ota-{os.getpid()}-{next(_labels)}'
  subprocess.run(['softhsm2-util', '--init-token', '--free', '--label', label, '--so-pin', SO_PIN,
                  '--pin', PIN], check=True, capture_output=True, env=os.environ.copy())
  lib = pkcs11.lib(library)
  # The module reads SOFTHSM2_CONF when initialized, once per process: re-read it for this test.
  lib.reinitialize()
  return Token(label, lib)


def _write_signers(keys_dir, config):
  os.makedirs(keys_dir, exist_ok=True)
  with open(os.path.join(keys_dir, signing_keys.SIGNERS_FILE), 'w', encoding='utf-8') as f:
    json.dump(config, f)


def _keyid_of(uri, tmp_path):
  """The TUF keyid of the key at an hsm: URI, read from the token."""
  return signing_keys.Keyring(str(tmp_path / 'nowhere')).signer_for(
      'timestamp', uri).public_key.keyid


def _all_bytes(*directories):
  out = []
  for directory in directories:
    for base, _, names in os.walk(directory):
      for name in names:
        with open(os.path.join(base, name), 'rb') as f:
          out.append(f.read())
  return out


def test_init_publish_refresh_rotate_with_the_online_keys_in_the_hsm(token, tmp_path, caplog,
                                                                       capsys):
  caplog.set_level(logging.DEBUG)
  keys_dir = str(tmp_path / 'keys')
  uris = {role: token.make_key(key_id) for role, key_id in
          (('targets', 1), ('snapshot', 2), ('timestamp', 3))}
  # snapshot and targets name their public key (PEM, as an HSM's tools export it); timestamp's is
  # read from the token.
  config = {'timestamp': {'uri': uris['timestamp']}}
  for role in ('targets', 'snapshot'):
    key = signing_keys.Keyring(keys_dir).signer_for(role, uris[role]).public_key
    config[role] = {'uri': uris[role], 'public_key': key.keyval['public']}
  _write_signers(keys_dir, config)
  repo = repository.OTARepository(str(tmp_path / 'repo'), keys_dir)
  repo.init()
  root = Metadata.from_file(os.path.join(repo.metadata_dir, '1.root.json'))

  # A push 80 days ago: timestamp and snapshot expired, targets (90 days) within its window.
  days_ago(repo, 80).publish('digits', b'model-one')
  with serve_storage(repo) as url:
    with pytest.raises(tuf_exceptions.ExpiredMetadataError):
      fetch(repo, url, tmp_path / 'device')
    refreshed = repo.refresh()
    device = fetch(repo, url, tmp_path / 'device')
    new_timestamp = token.make_key(11)
    root_version = repo.rotate_keys('timestamp', new_signer=new_timestamp)
    repo.publish('digits', b'model-two')
    after_rotation = fetch(repo, url, tmp_path / 'device')
  verified = {role: Metadata.from_file(str(tmp_path / 'device' / 'metadata' / f'{role}.json'))
              for role in ('root', 'timestamp', 'snapshot', 'targets')}

  # Root names the token's keys (ECDSA), and only root has a key file.
  for role in ('targets', 'snapshot', 'timestamp'):
    (keyid,) = root.signed.roles[role].keyids
    assert keyid == _keyid_of(uris[role], tmp_path)
    assert root.signed.keys[keyid].scheme == 'ecdsa-sha2-nistp256'
  assert refreshed['resigned'] == ['targets', 'snapshot', 'timestamp']
  assert device.version == 1 and installed(tmp_path / 'device') == b'model-two'
  assert (root_version, after_rotation.version) == (2, 2)
  # The device walked to root 2 and verified a timestamp signed by the new HSM key.
  assert verified['root'].signed.version == 2
  new_keyid = _keyid_of(new_timestamp, tmp_path)
  assert set(verified['timestamp'].signatures) == {new_keyid}
  assert set(verified['snapshot'].signatures) == set(root.signed.roles['snapshot'].keyids)
  assert set(verified['targets'].signatures) == set(root.signed.roles['targets'].keyids)
  assert sorted(os.listdir(keys_dir)) == ['root.pem', 'signers.json']
  with open(os.path.join(keys_dir, 'signers.json'), encoding='utf-8') as f:
    after = json.load(f)
  assert after['timestamp']['uri'] == new_timestamp
  assert after['timestamp']['previous'] == [{'uri': uris['timestamp'],
                                             'replaced_by_root_version': 2}]
  assert after['snapshot'] == config['snapshot']  # Only the rotated role changed.
  # No private value and no PIN in any file, log record or output.
  out, err = capsys.readouterr()
  assert len(token.secrets) == 4
  assert token.leaked(f'x{token.secrets[0]}x') == [token.secrets[0]]  # The check can fail.
  assert not token.leaked(caplog.text, out, err, *_all_bytes(repo.repo_dir, keys_dir))


def test_the_cli_signs_with_hsm_keys_given_by_flags_and_rotates_to_a_new_one(token, tmp_path,
                                                                              capsys, caplog):
  caplog.set_level(logging.DEBUG)
  repo_dir, keys_dir = str(tmp_path / 'repo'), str(tmp_path / 'keys')
  online = [f'--signer=snapshot={token.make_key(2)}', f'--signer=timestamp={token.make_key(3)}']
  assert cli.main(['ota', 'init', '--repo', repo_dir, '--keys', keys_dir, *online]) == 0
  repo = repository.OTARepository(repo_dir, keys_dir,
                                  signers=signing_keys.parse_signer_flags(
                                      [flag.split('=', 1)[1] for flag in online]))
  # 20 days ago: timestamp (7 days) expired, snapshot (30 days) within its window of 15.
  days_ago(repo, 20, signers=repo._signer_uris).publish('digits', b'model-one')  # pylint: disable=protected-access
  # The scheduled refresh: a key directory without any key, the token holds both online keys.
  empty = str(tmp_path / 'online-keys')
  os.mkdir(empty)
  refresh = cli.main(['ota', 'refresh', '--repo', repo_dir, '--keys', empty, *online])
  refresh_out = capsys.readouterr().out
  rotate = cli.main(['ota', 'rotate-keys', '--repo', repo_dir, '--keys', keys_dir, *online,
                     '--role', 'snapshot', f'--new-signer={token.make_key(12)}'])
  rotate_out = capsys.readouterr().out
  # The old --signer flag for snapshot now names a key root 3 no longer trusts: refused.
  stale = cli.main(['ota', 'refresh', '--repo', repo_dir, '--keys', empty, *online,
                    '--if-expiring-within', '400d', '--online-only'])
  stale_err = capsys.readouterr().err
  with serve_storage(repo) as url:
    result = fetch(repo, url, tmp_path / 'device')

  assert sorted(os.listdir(keys_dir)) == ['root.pem', 'signers.json', 'targets.pem']
  assert os.listdir(empty) == []
  assert refresh == 0 and 're-signed snapshot' in refresh_out and 're-signed timestamp' in (
      refresh_out)
  assert rotate == 0 and 'root version 2 names the new key; signers.json names it' in rotate_out
  assert stale == 2 and 'the snapshot key at hsm:2?label=' in stale_err
  assert 'is not one that root version 2 trusts for snapshot' in stale_err
  assert result.version == 1 and installed(tmp_path / 'device') == b'model-one'
  assert not token.leaked(caplog.text, refresh_out, rotate_out, stale_err,
                          *_all_bytes(repo_dir, keys_dir))


def test_a_public_key_that_is_not_the_tokens_is_refused_and_init_writes_nothing(token, tmp_path):
  keys_dir = str(tmp_path / 'keys')
  other = signing_keys.Keyring(keys_dir).signer_for('timestamp', token.make_key(4)).public_key
  _write_signers(keys_dir, {'timestamp': {'uri': token.make_key(5),
                                          'public_key': other.keyval['public']}})
  repo = repository.OTARepository(str(tmp_path / 'repo'), keys_dir)

  with pytest.raises(errors.SigningKeyError) as raised:
    repo.init()

  assert f'the timestamp key hsm:5?label={token.label} did not produce a signature its public ' \
         'key verifies' in str(raised.value)
  assert 'Nothing was written' in str(raised.value)
  assert sorted(os.listdir(keys_dir)) == ['signers.json']
  assert not os.path.exists(repo.repo_dir) or files(repo) == {}


@pytest.mark.parametrize('variable,value,message', [
    (signing_keys.PIN_ENV, None, 'needs the token\'s user PIN in the environment variable '
     'TFX_EDGE_HSM_PIN, which is not set'),
    (signing_keys.PIN_ENV, '000000', 'PinIncorrect'),
    (signing_keys.PKCS11_ENV, None, 'set PYKCS11LIB to its PKCS#11 module'),
])
def test_a_missing_pin_or_module_is_a_clear_error_and_nothing_is_written(
    token, tmp_path, monkeypatch, variable, value, message):
  keys_dir = str(tmp_path / 'keys')
  _write_signers(keys_dir, {'timestamp': token.make_key(6)})
  if value is None:
    monkeypatch.delenv(variable)
  else:
    monkeypatch.setenv(variable, value)
  repo = repository.OTARepository(str(tmp_path / 'repo'), keys_dir)

  with pytest.raises(errors.SigningKeyError, match=message) as raised:
    repo.init()

  assert PIN not in str(raised.value) and '000000' not in str(raised.value)
  assert sorted(os.listdir(keys_dir)) == ['signers.json']
  assert not os.path.exists(repo.repo_dir) or files(repo) == {}


def test_rotating_an_hsm_role_without_a_new_signer_is_refused(token, tmp_path):
  keys_dir = str(tmp_path / 'keys')
  _write_signers(keys_dir, {'timestamp': token.make_key(7)})
  repo = repository.OTARepository(str(tmp_path / 'repo'), keys_dir)
  repo.init()
  before = files(repo)

  with pytest.raises(errors.ConfigError, match='rotate-keys generates new keys only for PEM '
                     r'files. Create the new key in the HSM or KMS and pass its URI \(--new-'):
    repo.rotate_keys('timestamp')

  assert files(repo) == before
  assert sorted(os.listdir(keys_dir)) == ['root.pem', 'signers.json', 'snapshot.pem',
                                          'targets.pem']


def test_an_hsm_rotation_that_died_after_root_is_finished_by_a_rerun(token, tmp_path,
                                                                     monkeypatch):
  keys_dir = str(tmp_path / 'keys')
  old_uri = token.make_key(8)
  _write_signers(keys_dir, {'timestamp': old_uri})
  repo = repository.OTARepository(str(tmp_path / 'repo'), keys_dir)
  repo.init()
  repo.publish('digits', b'model-one')
  new_uri = token.make_key(9)

  def dying_activate(*args):
    raise OSError(28, 'No space left on device')

  with monkeypatch.context() as patch:  # Not undo(): the token fixture's variables stay.
    patch.setattr(signing_keys.Keyring, 'activate_uri', dying_activate)
    with pytest.raises(OSError):
      repo.rotate_keys('timestamp', new_signer=new_uri)  # Root 2 names the new key; json not.
  # Signing with the key root 2 no longer trusts would break every device: refused instead.
  with pytest.raises(errors.SigningKeyError, match=rf'the timestamp key at hsm:8\?label='
                     f'{token.label} is not the one root version 2 trusts; if a key rotation '
                     'was interrupted, run `tfx-edge ota rotate-keys --role timestamp` again'):
    repo.publish('digits', b'model-two')
  again = repo.rotate_keys('timestamp', new_signer=new_uri)
  repo.publish('digits', b'model-two')
  with serve_storage(repo) as url:
    result = fetch(repo, url, tmp_path / 'device')

  assert again == 2  # The re-run finished rotation 2 instead of writing root 3.
  assert result.version == 2 and installed(tmp_path / 'device') == b'model-two'
  with open(os.path.join(keys_dir, 'signers.json'), encoding='utf-8') as f:
    assert json.load(f)['timestamp']['uri'] == new_uri
  assert not [name for name in os.listdir(keys_dir) if name.startswith('timestamp')]


def test_rotating_to_a_key_whose_public_key_is_another_is_refused_before_root(token, tmp_path,
                                                                             capsys):
  repo_dir, keys_dir = str(tmp_path / 'repo'), str(tmp_path / 'keys')
  _write_signers(keys_dir, {'timestamp': token.make_key(13)})
  assert cli.main(['ota', 'init', '--repo', repo_dir, '--keys', keys_dir]) == 0
  other = signing_keys.Keyring(keys_dir).signer_for('timestamp', token.make_key(14)).public_key
  pem = tmp_path / 'next.pub.pem'
  pem.write_text(other.keyval['public'])
  before = files(repository.OTARepository(repo_dir))
  capsys.readouterr()

  code = cli.main(['ota', 'rotate-keys', '--repo', repo_dir, '--keys', keys_dir, '--role',
                   'timestamp', '--new-signer', token.make_key(15), '--new-public-key', str(pem)])
  err = capsys.readouterr().err

  assert code == 2
  assert f'error: the timestamp key hsm:15?label={token.label} did not produce a signature its ' \
         'public key verifies' in err
  assert files(repository.OTARepository(repo_dir)) == before
  with open(os.path.join(keys_dir, 'signers.json'), encoding='utf-8') as f:
    assert json.load(f) == {'timestamp': token.uri(13)}
