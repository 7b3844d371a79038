"""Signing keys configured by URI per role: the PEM default, `file:` URIs, signers.json and
--signer, the cloud KMS signers built without network, and the errors of a bad configuration.

The KMS signers are real securesystemslib signers built with the real SDKs (google-cloud-kms,
boto3, azure-keyvault-keys); only signing would reach the network, and no test signs with them.
Credentials are fakes the SDKs accept offline (a generated service-account key, dummy AWS keys).
"""
import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from securesystemslib.signer import AWSSigner
from securesystemslib.signer import AzureSigner
from securesystemslib.signer import CryptoSigner
from securesystemslib.signer import GCPSigner
from securesystemslib.signer import SSlibKey
from tuf.api.metadata import Metadata

from components import errors
from components.ota import cli
from components.ota import repository
from components.ota import signing_keys
from tests.ota.support import fetch
from tests.ota.support import installed
from tests.ota.support import serve_storage

GCP_URI = 'gcpkms:projects/p/locations/europe-west1/keyRings/ota/cryptoKeys/timestamp/' \
          'cryptoKeyVersions/1'
AWS_URI = 'awskms:arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab'
AZURE_URI = 'azurekms://myvault.vault.azure.net/keys/ota-timestamp/0123456789abcdef'


def _ec_public_pem():
  key = ec.generate_private_key(ec.SECP256R1()).public_key()
  return key.public_bytes(serialization.Encoding.PEM,
                          serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _write_signers(keys_dir, config):
  os.makedirs(keys_dir, exist_ok=True)
  with open(os.path.join(keys_dir, signing_keys.SIGNERS_FILE), 'w', encoding='utf-8') as f:
    json.dump(config, f)


@pytest.fixture
def offline_cloud(tmp_path, monkeypatch):
  """Credentials the GCP, AWS and Azure SDKs accept without a network call."""
  private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
  account = tmp_path / 'service-account.json'
  account.write_text(json.dumps({
      'type': 'service_account', 'project_id': 'p', 'private_key_id': 'k',
      'private_key': private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()).decode(),
      'client_email': 'ota@p.iam.gserviceaccount.com', 'client_id': '1',
      'token_uri': 'https://oauth2.googleapis.com/token'}))
  monkeypatch.setenv('GOOGLE_APPLICATION_CREDENTIALS', str(account))
  for name, value in (('AWS_DEFAULT_REGION', 'eu-west-1'), ('AWS_ACCESS_KEY_ID', 'AKIDEXAMPLE'),
                      ('AWS_SECRET_ACCESS_KEY', 'example'),
                      ('AWS_CONFIG_FILE', str(tmp_path / 'none')),
                      ('AWS_SHARED_CREDENTIALS_FILE', str(tmp_path / 'none'))):
    monkeypatch.setenv(name, value)


# --- the default and file: URIs --------------------------------------------------------------


def test_without_configuration_every_role_is_its_pem_file(tmp_path):
  keys_dir = str(tmp_path / 'keys')
  signers = signing_keys.create_or_load(keys_dir)
  keyring = signing_keys.Keyring(keys_dir)

  assert sorted(os.listdir(keys_dir)) == ['root.pem', 'snapshot.pem', 'targets.pem',
                                          'timestamp.pem']
  assert all(isinstance(s, CryptoSigner) for s in signers.values())
  assert [keyring.uri(role) for role in signing_keys.ROLES] == [
      'file:root.pem', 'file:targets.pem', 'file:snapshot.pem', 'file:timestamp.pem']
  assert keyring.signer('timestamp').public_key == signers['timestamp'].public_key


def test_file_uris_put_the_online_keys_elsewhere_and_devices_verify_them(tmp_path):
  keys_dir, online = str(tmp_path / 'keys'), tmp_path / 'online'
  _write_signers(keys_dir, {'timestamp': f'file:{online}/ts.pem',
                            'snapshot': {'uri': 'file:online/snapshot.pem'}})
  repo = repository.OTARepository(str(tmp_path / 'repo'), keys_dir)
  repo.init()
  repo.publish('digits', b'model-one')
  with serve_storage(repo) as url:
    result = fetch(repo, url, tmp_path / 'device')
  root = Metadata.from_file(os.path.join(repo.metadata_dir, '1.root.json')).signed

  assert sorted(os.listdir(keys_dir)) == ['online', 'root.pem', 'signers.json', 'targets.pem']
  assert os.listdir(online) == ['ts.pem']
  assert os.listdir(os.path.join(keys_dir, 'online')) == ['snapshot.pem']
  ts_key = signing_keys.Keyring(keys_dir).signer('timestamp').public_key
  assert root.roles['timestamp'].keyids == [ts_key.keyid]
  assert result.version == 1 and installed(tmp_path / 'device') == b'model-one'


# --- unknown schemes and bad configuration: clear errors, nothing written -------------------


def test_an_unknown_scheme_is_refused_naming_the_accepted_schemes(tmp_path):
  with pytest.raises(errors.ConfigError) as raised:
    repository.OTARepository(str(tmp_path / 'repo'), str(tmp_path / 'keys'),
                             signers={'timestamp': 'vault:transit/keys/ota'})

  assert str(raised.value) == (
      "signers: the timestamp key URI has the unknown scheme 'vault'; the accepted schemes are "
      "['file', 'hsm', 'gcpkms', 'awskms', 'azurekms'] (a PEM file, a PKCS#11 HSM, GCP, AWS or "
      'Azure KMS). Nothing was written.')
  assert not os.path.exists(tmp_path / 'repo') and not os.path.exists(tmp_path / 'keys')


def test_an_unknown_scheme_in_signers_json_stops_init_before_any_file(tmp_path):
  keys_dir = str(tmp_path / 'keys')
  _write_signers(keys_dir, {'snapshot': {'uri': 'pkcs11:token=ota;object=snapshot'}})
  repo = repository.OTARepository(str(tmp_path / 'repo'), keys_dir)

  with pytest.raises(errors.ConfigError, match=r"signers.json: the snapshot key URI has the "
                     r"unknown scheme 'pkcs11'; the accepted schemes are \['file', 'hsm'"):
    repo.init()

  assert os.listdir(keys_dir) == ['signers.json'] and not os.path.exists(tmp_path / 'repo')


def test_the_cli_refuses_an_unknown_scheme_with_exit_2_and_writes_nothing(tmp_path, capsys):
  code = cli.main(['ota', 'init', '--repo', str(tmp_path / 'repo'), '--keys',
                   str(tmp_path / 'keys'), '--signer', 'timestamp=yubikey:9c'])
  err = capsys.readouterr().err

  assert code == 2
  assert "--signer: the timestamp key URI has the unknown scheme 'yubikey'; the accepted " \
         "schemes are ['file', 'hsm', 'gcpkms', 'awskms', 'azurekms']" in err
  assert not os.path.exists(tmp_path / 'repo') and not os.path.exists(tmp_path / 'keys')


@pytest.mark.parametrize('flags,message', [
    (['timestamp'], "--signer 'timestamp' is not ROLE=URI"),
    (['mirror=hsm:2'], "--signer: 'mirror' is not a TUF role; the roles are ['root', 'targets', "
     "'snapshot', 'timestamp']"),
    (['timestamp=hsm:2', 'timestamp=hsm:3'], "--signer: role 'timestamp' is given twice"),
    (['timestamp=hsm'], "--signer: the timestamp key URI 'hsm' is not a URI; give SCHEME:WHERE"),
])
def test_bad_signer_flags_are_clear_errors(flags, message):
  with pytest.raises(errors.ConfigError) as raised:
    signing_keys.parse_signer_flags(flags)
  assert message in str(raised.value)


@pytest.mark.parametrize('content,message', [
    ('{"timestamp": ', 'signers.json is not JSON'),
    ('["hsm:2"]', 'signers.json must hold {role: {"uri": URI, "public_key": ...}}'),
    ('{"mirror": "hsm:2"}', "signers.json: 'mirror' is not a TUF role"),
    ('{"timestamp": {"url": "hsm:2"}}', "signers.json: role 'timestamp' must map to"),
    ('{"timestamp": {"uri": "hsm:2", "pin": "1234"}}',
     "signers.json: role 'timestamp' has unknown fields ['pin']"),
    ('{"timestamp": {"uri": "hsm:2", "public_key": "not a key"}}',
     "signers.json: the public_key of role 'timestamp' is neither a PEM public key nor a TUF key "
     'dict'),
])
def test_a_bad_signers_json_is_a_clear_error_before_anything_is_written(tmp_path, content,
                                                                        message):
  keys_dir = tmp_path / 'keys'
  keys_dir.mkdir()
  (keys_dir / 'signers.json').write_text(content)
  repo = repository.OTARepository(str(tmp_path / 'repo'), str(keys_dir))

  with pytest.raises(errors.ConfigError) as raised:
    repo.init()

  assert message in str(raised.value)
  assert '1234' not in str(raised.value)  # A secret put in the file by mistake is not echoed.
  assert os.listdir(keys_dir) == ['signers.json'] and not os.path.exists(tmp_path / 'repo')


def test_a_pem_key_that_does_not_parse_is_named_without_its_content(tmp_path):
  keys_dir = tmp_path / 'keys'
  keys_dir.mkdir()
  secret = '-----BEGIN PRIVATE KEY-----\nTUlJQ2VnSUJBREFOQmdrcWhraUc5dzBCQVFFRkFBU0NBbVF3\n'
  (keys_dir / 'timestamp.pem').write_text(secret)

  with pytest.raises(errors.SigningKeyError) as raised:
    signing_keys.Keyring(str(keys_dir)).signer('timestamp')

  assert str(raised.value) == (f'signing key file {keys_dir}/timestamp.pem is not an unencrypted '
                               'PEM private key.')


# --- the cloud KMS signers, built without network -----------------------------------------


@pytest.mark.parametrize('uri,signer_class,where', [
    (GCP_URI, GCPSigner, lambda s: s.gcp_keyid),
    (AWS_URI, AWSSigner, lambda s: s.aws_key_id),
    (AZURE_URI, AzureSigner, lambda s: s.crypto_client.key_id),
])
def test_kms_uris_build_their_securesystemslib_signer(offline_cloud, tmp_path, uri, signer_class,
                                                      where):
  keys_dir = str(tmp_path / 'keys')
  pem = _ec_public_pem()
  _write_signers(keys_dir, {'timestamp': {'uri': uri, 'public_key': pem}})

  signer = signing_keys.Keyring(keys_dir).signer('timestamp')

  assert type(signer) is signer_class  # pylint: disable=unidiomatic-typecheck
  expected = {GCPSigner: GCP_URI.split(':', 1)[1], AWSSigner: AWS_URI.split(':', 1)[1],
              AzureSigner: AZURE_URI.replace('azurekms:', 'https:')}[signer_class]
  assert where(signer) == expected
  assert signer.public_key.keyval['public'] == pem
  assert signer.public_key.scheme == 'ecdsa-sha2-nistp256'
  assert os.listdir(keys_dir) == ['signers.json']  # Building a signer writes no key file.


def test_a_kms_public_key_can_be_a_tuf_key_dict_and_an_explicit_scheme(offline_cloud, tmp_path):
  keys_dir = str(tmp_path / 'keys')
  rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key(
      ).public_bytes(serialization.Encoding.PEM,
                     serialization.PublicFormat.SubjectPublicKeyInfo).decode()
  ec_key = SSlibKey.from_crypto(serialization.load_pem_public_key(_ec_public_pem().encode()))
  _write_signers(keys_dir, {
      'snapshot': {'uri': GCP_URI, 'public_key': rsa_pem, 'scheme': 'rsa-pkcs1v15-sha256'},
      'timestamp': {'uri': AWS_URI, 'public_key': ec_key.to_dict()}})
  keyring = signing_keys.Keyring(keys_dir)

  snapshot, timestamp = keyring.signer('snapshot'), keyring.signer('timestamp')

  assert (type(snapshot), snapshot.public_key.scheme) == (GCPSigner, 'rsa-pkcs1v15-sha256')
  assert (type(timestamp), timestamp.public_key.keyid) == (AWSSigner, ec_key.keyid)
  assert timestamp.aws_algo == 'ECDSA_SHA_256'


@pytest.mark.parametrize('uri', [GCP_URI, AWS_URI, AZURE_URI])
def test_a_kms_uri_without_its_public_key_says_where_to_put_it(tmp_path, uri):
  with pytest.raises(errors.SigningKeyError) as raised:
    signing_keys.Keyring(str(tmp_path / 'keys'), {'timestamp': uri}).signer('timestamp')

  assert str(raised.value) == (
      f'the timestamp key {uri} needs its public key: add "public_key" (PEM) for timestamp in '
      f'{tmp_path}/keys/signers.json (docs/ota.md, "Where the keys live").')


def test_an_sdk_that_refuses_its_configuration_is_a_signing_key_error(offline_cloud, tmp_path,
                                                                      monkeypatch):
  monkeypatch.delenv('AWS_DEFAULT_REGION')
  monkeypatch.delenv('AWS_REGION', raising=False)
  keys_dir = str(tmp_path / 'keys')
  _write_signers(keys_dir, {'timestamp': {'uri': AWS_URI, 'public_key': _ec_public_pem()}})
  azure_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(
      ).public_bytes(serialization.Encoding.PEM,
                     serialization.PublicFormat.SubjectPublicKeyInfo).decode()

  with pytest.raises(errors.SigningKeyError, match=f'the timestamp key {AWS_URI} cannot be used: '
                     'NoRegionError: You must specify a region.'):
    signing_keys.Keyring(keys_dir).signer('timestamp')
  _write_signers(keys_dir, {'timestamp': {'uri': AZURE_URI, 'public_key': azure_rsa}})
  with pytest.raises(errors.SigningKeyError, match=f'the timestamp key {AZURE_URI} cannot be '
                     'used: UnsupportedKeyType: Supplied key must be an EC key'):
    signing_keys.Keyring(keys_dir).signer('timestamp')


def test_rotating_to_a_file_uri_or_an_unknown_scheme_is_refused_before_anything_is_written(
    repo, tmp_path):
  before = sorted(os.listdir(repo._keys_dir))  # pylint: disable=protected-access

  with pytest.raises(errors.ConfigError, match='a file key is rotated without --new-signer'):
    repo.rotate_keys('timestamp', new_signer='file:next.pem')
  with pytest.raises(errors.ConfigError, match="unknown scheme 'kms'"):
    repo.rotate_keys('timestamp', new_signer='kms:alias/ota')

  assert sorted(os.listdir(repo._keys_dir)) == before  # pylint: disable=protected-access
  assert [p.name for p in (tmp_path / 'repo' / 'metadata').iterdir() if 'root' in p.name] == [
      '1.root.json']
