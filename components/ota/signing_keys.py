"""Signing keys of the TUF roles: PEM files in a directory, or keys in an HSM or a cloud KMS.

Every role signs through securesystemslib's Signer interface, chosen per role by a private key
URI. Without configuration a role's key is the PEM file `<keys_dir>/<role>.pem` (`file:` URIs,
as before). `<keys_dir>/signers.json` (SIGNERS_FILE) moves roles elsewhere:

    {"timestamp": {"uri": "hsm:3?label=ota"},
     "snapshot":  {"uri": "gcpkms:projects/p/locations/l/keyRings/r/cryptoKeys/k/...",
                   "public_key": "-----BEGIN PUBLIC KEY-----\\n..."}}

and `tfx-edge ota ... --signer ROLE=URI` (OTARepository(signers=...)) overrides it for one run.
The accepted schemes are SCHEMES. A URI key needs its public key (securesystemslib's signers do
not fetch it): `public_key` in signers.json, as PEM (with an optional `scheme`) or as a TUF key
dict; an `hsm:` key's is read from the token when absent. An HSM's PIN is read from the
environment (PIN_ENV) when signing, never from a file or a flag.

Keys are read only when signing; they never go into exec properties, ML Metadata, logs or
exception messages (errors name the file or the URI, never a key's content).

A rotation (repository.OTARepository.rotate_keys) keeps every key it replaces:

    <role>.pem            the key root currently names for the role
    <role>.pem.new        the next key, written before root names it (so a crash loses nothing)
    <role>.pem.old-<N>    the key that root version N replaced

and for a URI role, signers.json records the replaced URIs under the role's `previous`.
"""
import json
import os
import urllib.parse
from typing import Any, Callable, Dict, List, Mapping, Optional

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.exceptions import UnsupportedLibraryError
from securesystemslib.signer import AWSSigner
from securesystemslib.signer import AzureSigner
from securesystemslib.signer import CryptoSigner
from securesystemslib.signer import GCPSigner
from securesystemslib.signer import HSMSigner
from securesystemslib.signer import Signer
from securesystemslib.signer import SSlibKey
from tuf.api.exceptions import UnsignedMetadataError

from components.errors import ConfigError
from components.errors import SigningKeyError
from components.ota import storage

ROLES = ('root', 'targets', 'snapshot', 'timestamp')
SIGNERS_FILE = 'signers.json'
FILE = 'file'
# The schemes a role's URI may have, and the securesystemslib Signer that signs for each.
SIGNER_CLASSES = {'hsm': HSMSigner, 'gcpkms': GCPSigner, 'awskms': AWSSigner,
                  'azurekms': AzureSigner}
SCHEMES = (FILE,) + tuple(SIGNER_CLASSES)
# Where the PIN of a PKCS#11 token comes from (a Kubernetes Secret exposed as a variable).
PIN_ENV = 'TFX_EDGE_HSM_PIN'
# The PKCS#11 module securesystemslib's HSMSigner opens (its own variable name).
PKCS11_ENV = 'PYKCS11LIB'
_CHECK_PAYLOAD = b'tfx-edge signing key check'
_ENTRY_FIELDS = ('uri', 'public_key', 'scheme', 'previous')


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


# --- URIs -----------------------------------------------------------------------------------


def scheme_of(uri: str) -> str:
  return uri.partition(':')[0]


def validate_uri(role: str, uri: Any, source: str = 'signers') -> str:
  """Returns uri if its scheme is one of SCHEMES; raises ConfigError naming them otherwise."""
  if role not in ROLES:
    raise ConfigError(f'{source}: {role!r} is not a TUF role; the roles are {list(ROLES)}.')
  if not isinstance(uri, str) or ':' not in uri or not uri.partition(':')[2].strip():
    raise ConfigError(f'{source}: the {role} key URI {uri!r} is not a URI; give SCHEME:WHERE '
                      f'with SCHEME one of {list(SCHEMES)} (docs/ota.md, "Where the keys '
                      'live").')
  scheme = scheme_of(uri)
  if scheme not in SCHEMES:
    raise ConfigError(f'{source}: the {role} key URI has the unknown scheme {scheme!r}; the '
                      f'accepted schemes are {list(SCHEMES)} (a PEM file, a PKCS#11 HSM, GCP, '
                      'AWS or Azure KMS). Nothing was written.')
  return uri


def validate_signers(signers: Optional[Mapping[str, str]]) -> Dict[str, str]:
  """{role: uri} after validate_uri, for OTARepository(signers=...)."""
  if signers is None:
    return {}
  if not isinstance(signers, Mapping):
    raise ConfigError(f'signers={signers!r} is not accepted; give {{role: key URI}}.')
  return {role: validate_uri(role, uri) for role, uri in signers.items()}


def parse_signer_flags(values: Optional[List[str]]) -> Dict[str, str]:
  """{role: uri} from `--signer ROLE=URI` flags (one role once)."""
  out: Dict[str, str] = {}
  for value in values or []:
    role, sep, uri = value.partition('=')
    if not sep:
      raise ConfigError(f'--signer {value!r} is not ROLE=URI (for example '
                        f'timestamp=hsm:3?label=ota); the roles are {list(ROLES)}.')
    if role in out:
      raise ConfigError(f'--signer: role {role!r} is given twice.')
    out[role] = validate_uri(role, uri, '--signer')
  return out


# --- public keys ---------------------------------------------------------------------------


def _public_key(entry: Mapping[str, Any], role: str, source: str) -> Optional[SSlibKey]:
  """The public key of a signers.json entry: PEM (+ optional scheme) or a TUF key dict."""
  value = entry.get('public_key')
  if value is None:
    return None
  try:
    if isinstance(value, str):
      return SSlibKey.from_crypto(load_pem_public_key(value.encode()), scheme=entry.get('scheme'))
    if isinstance(value, Mapping):
      # The keyid is derived from the key, as TUF computes it, never taken from the file.
      from securesystemslib.signer._utils import compute_default_keyid  # pylint: disable=g-import-not-at-top
      fields = {k: value[k] for k in ('keytype', 'scheme', 'keyval')}
      keyid = compute_default_keyid(fields['keytype'], fields['scheme'], fields['keyval'])
      return SSlibKey.from_dict(keyid, dict(fields))
  except (ValueError, KeyError, TypeError) as e:
    raise ConfigError(f'{source}: the public_key of role {role!r} is neither a PEM public key '
                      f'nor a TUF key dict {{keytype, scheme, keyval}} ({type(e).__name__}).'
                      ) from None
  raise ConfigError(f'{source}: the public_key of role {role!r} must be a PEM string or a TUF '
                    'key dict.')


def _key_dict(key: SSlibKey) -> Dict[str, Any]:
  return {'keytype': key.keytype, 'scheme': key.scheme, 'keyval': dict(key.keyval)}


def _pin(_: str) -> str:
  pin = os.environ.get(PIN_ENV)
  if not pin:
    raise SigningKeyError(f'an hsm: key needs the token\'s user PIN in the environment variable '
                          f'{PIN_ENV}, which is not set.')
  return pin


def _hsm_import(uri: str, role: str) -> SSlibKey:
  parsed = urllib.parse.urlparse(uri)
  label = dict(urllib.parse.parse_qsl(parsed.query)).get('label')
  try:
    keyid = int(parsed.path) if parsed.path else HSMSigner.SCHEME_KEYID
    return HSMSigner.import_(keyid, label, _pin)[1]
  except SigningKeyError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise SigningKeyError(f'the {role} key {uri}: could not read its public key from the '
                          f'PKCS#11 token: {type(e).__name__}: {e}') from None


# --- the keyring ---------------------------------------------------------------------------


class Keyring:
  """Where each role's key is: the keys directory, its signers.json, and per-run overrides."""

  def __init__(self, keys_dir: str, overrides: Optional[Mapping[str, str]] = None):
    self.keys_dir = keys_dir
    self._overrides = validate_signers(overrides)
    self._config_path = os.path.join(keys_dir, SIGNERS_FILE)
    self._config = self._read_config()

  def _read_config(self) -> Dict[str, Dict[str, Any]]:
    try:
      with open(self._config_path, 'rb') as f:
        config = json.loads(f.read())
    except FileNotFoundError:
      return {}
    except ValueError as e:
      raise ConfigError(f'{self._config_path} is not JSON: {e}.') from None
    if not isinstance(config, dict):
      raise ConfigError(f'{self._config_path} must hold '
                        '{role: {"uri": URI, "public_key": ...}}.')
    for role, entry in config.items():
      if isinstance(entry, str):
        config[role] = entry = {'uri': entry}
      if not isinstance(entry, dict) or 'uri' not in entry:
        raise ConfigError(f'{self._config_path}: role {role!r} must map to '
                          '{"uri": URI, "public_key": ...} or to a URI.')
      unknown = sorted(set(entry) - set(_ENTRY_FIELDS))
      if unknown:
        raise ConfigError(f'{self._config_path}: role {role!r} has unknown fields {unknown}; '
                          f'the fields are {list(_ENTRY_FIELDS)}.')
      validate_uri(role, entry['uri'], self._config_path)
      _public_key(entry, role, self._config_path)  # Checked now, before anything is written.
    return config

  def uri(self, role: str) -> str:
    """The role's key URI: an override, signers.json, else file:<role>.pem."""
    if role in self._overrides:
      return self._overrides[role]
    if role in self._config:
      return self._config[role]['uri']
    return f'{FILE}:{role}.pem'

  def where(self, role: str) -> str:
    """For messages: `in <keys_dir>` for a file key, `at <URI>` otherwise."""
    return f'in {self.keys_dir}' if self.is_file(role) else f'at {self.uri(role)}'

  def is_file(self, role: str) -> bool:
    return scheme_of(self.uri(role)) == FILE

  def path(self, role: str) -> str:
    """The PEM file of a file: role (relative paths are in the keys directory)."""
    where = urllib.parse.unquote(self.uri(role).partition(':')[2])
    if where.startswith('//'):  # file:///abs/path
      where = where[2:]
    return os.path.join(self.keys_dir, where)

  def available(self, role: str) -> bool:
    """Whether the role's key can be tried here: its file exists, or it has a URI."""
    return not self.is_file(role) or os.path.exists(self.path(role))

  def _entry_for(self, role: str, uri: str) -> Mapping[str, Any]:
    entry = self._config.get(role, {})
    return entry if entry.get('uri') == uri else {}

  def _from_uri(self, role: str, uri: str, public_key: Optional[SSlibKey]) -> Signer:
    scheme = scheme_of(uri)
    if scheme == 'hsm' and not os.environ.get(PKCS11_ENV):
      raise SigningKeyError(f'the {role} key {uri} is in a PKCS#11 token: set {PKCS11_ENV} to '
                            'its PKCS#11 module (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so).')
    if public_key is None:
      if scheme != 'hsm':
        raise SigningKeyError(
            f'the {role} key {uri} needs its public key: add "public_key" (PEM) for {role} in '
            f'{self._config_path} (docs/ota.md, "Where the keys live").')
      public_key = _hsm_import(uri, role)
    try:
      return SIGNER_CLASSES[scheme].from_priv_key_uri(uri, public_key, _pin)
    except UnsupportedLibraryError as e:
      extra = 'hsm' if scheme == 'hsm' else 'kms'
      raise SigningKeyError(f'the {role} key {uri} cannot be used: {e} Install the extra: pip '
                            f'install "tfx-edge[{extra}]".') from None
    except Exception as e:  # pylint: disable=broad-except
      # A bad URI or key type (ValueError), or the SDK's own check (an AWS client needs a region).
      raise SigningKeyError(f'the {role} key {uri} cannot be used: {type(e).__name__}: '
                            f'{e}') from None

  def signer(self, role: str) -> Signer:
    """The role's signer (reads a PEM file, or builds the HSM/KMS signer; signs nothing)."""
    uri = self.uri(role)
    if scheme_of(uri) == FILE:
      return _load_one(self.path(role), role)
    return self._from_uri(role, uri, _public_key(self._entry_for(role, uri), role,
                                                  self._config_path))

  def signer_for(self, role: str, uri: str, public_key_pem: Optional[str] = None) -> Signer:
    """A signer for a key not (yet) configured: the next key of a rotation."""
    validate_uri(role, uri, '--new-signer')
    if scheme_of(uri) == FILE:
      raise ConfigError(f'--new-signer {uri}: a file key is rotated without --new-signer (the '
                        'new PEM file is generated).')
    key = _public_key({'public_key': public_key_pem}, role, '--new-public-key')
    return self._from_uri(role, uri, key)

  def create_or_load(self) -> Dict[str, Signer]:
    """Generates an ed25519 PEM file for each file role without one (0600); loads every role.

    Roles whose key is in an HSM or a KMS get no file: their keys are made there.
    """
    # HSM and KMS keys first: one that cannot sign, or whose public key is not its own, stops
    # the init before a file is written.
    signers = {role: self.signer(role) for role in ROLES if not self.is_file(role)}
    for role, signer in signers.items():
      check(signer, role, self.uri(role))
    os.makedirs(self.keys_dir, mode=0o700, exist_ok=True)
    for role in ROLES:
      if self.is_file(role) and not os.path.exists(self.path(role)):
        os.makedirs(os.path.dirname(self.path(role)), mode=0o700, exist_ok=True)
        signer = CryptoSigner.generate_ed25519()
        fd = os.open(self.path(role), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'wb') as f:
          f.write(signer.private_bytes)
      if self.is_file(role):
        signers[role] = self.signer(role)
    return {role: signers[role] for role in ROLES}

  def activate_uri(self, role: str, signer: Signer, uri: str, root_version: int) -> None:
    """Makes uri the role's key in signers.json, recording the replaced one under previous."""
    config = self._read_config()
    old = config.get(role, {'uri': self.uri(role)})
    previous = list(old.get('previous', []))
    if old.get('uri') != uri:
      previous.append({'uri': old['uri'], 'replaced_by_root_version': root_version})
    config[role] = {'uri': uri, 'public_key': _key_dict(signer.public_key),
                    'previous': previous}
    data = (json.dumps(config, indent=2, sort_keys=True) + '\n').encode()
    tmp = storage.durable_temp_file(self._config_path, data, 0o600)
    os.replace(tmp, self._config_path)
    self._config = config
    self._overrides.pop(role, None)


def check(signer: Signer, role: str, where: str) -> None:
  """Signs a fixed payload and verifies it with the configured public key.

  A public key that is not the HSM's or KMS's own would otherwise go into root, and devices
  would refuse every signature made after.
  """
  try:
    signature = signer.sign(_CHECK_PAYLOAD)
  except SigningKeyError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise SigningKeyError(f'the {role} key {where} could not sign: {type(e).__name__}: {e}. '
                          'Nothing was written.') from None
  try:
    signer.public_key.verify_signature(signature, _CHECK_PAYLOAD)
  except Exception as e:  # pylint: disable=broad-except
    raise SigningKeyError(f'the {role} key {where} did not produce a signature its public key '
                          f'verifies ({type(e).__name__}); the public key configured for it is '
                          'another key\'s. Nothing was written.') from None


def sign(md, signer: Signer, role: str, where: Callable[[], str]) -> None:
  """md.sign(signer), with a signer's failure (token gone, PIN, KMS) as a SigningKeyError."""
  try:
    md.sign(signer)
  except UnsignedMetadataError as e:
    cause = e.__cause__
    if isinstance(cause, SigningKeyError):
      raise cause from None
    raise SigningKeyError(f'the {role} key {where()} could not sign: {type(cause).__name__}: '
                          f'{cause}') from None


# --- the keys directory's files (file roles) -----------------------------------------------


def load(keys_dir: str, overrides: Optional[Mapping[str, str]] = None) -> Dict[str, Signer]:
  """{role: signer} of every role."""
  keyring = Keyring(keys_dir, overrides)
  return {role: keyring.signer(role) for role in ROLES}


def create_or_load(keys_dir: str,
                   overrides: Optional[Mapping[str, str]] = None) -> Dict[str, Signer]:
  """Keyring(keys_dir, overrides).create_or_load()."""
  return Keyring(keys_dir, overrides).create_or_load()


def pending(keys_dir: str, role: str, path: Optional[str] = None) -> CryptoSigner:
  """The key a rotation of a file role installs: <role>.pem.new, generated first if absent.

  The file is kept until activate() so that a rotation that died after root named the key can
  be finished by running it again.
  """
  path = (path or _path(keys_dir, role)) + '.new'
  if not os.path.exists(path):
    _write_private(path, CryptoSigner.generate_ed25519().private_bytes)
  return _load_one(path, role)


def activate(keys_dir: str, role: str, root_version: int, path: Optional[str] = None) -> None:
  """Makes the pending key <role>.pem, keeping the replaced one as <role>.pem.old-<N>.

  Each step can be repeated after a crash: the old key is copied aside before it is replaced.
  """
  current = path or _path(keys_dir, role)
  new = current + '.new'
  if not os.path.exists(new):
    return  # Already done.
  old = f'{current}.old-{root_version}'
  if not os.path.exists(old):
    with open(current, 'rb') as f:
      _write_private(old, f.read())
  os.replace(new, current)
