"""Publishers: where a blessed TFLite model goes. Plain logic, no TFX.

A Publisher takes the model bytes and their metadata and returns the version it published. The
pusher component only decides *whether* to push; *how* is a Publisher's job, so the signed OTA
repository can replace the versioned directory without touching the component's gating logic.
"""
import abc
import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from typing import Any, Dict, Mapping, Union

from components import spec_keys
from components.common import validation
from components.errors import ConfigError

MODEL_FILE = spec_keys.PLAIN_TFLITE_FILE_NAME
METADATA_FILE = 'metadata.json'
_VERSION_RE = re.compile(r'^\d{8}$')


@dataclasses.dataclass(frozen=True)
class PublishResult:
  """What a publish produced."""
  version: int
  uri: str
  created: bool  # False when the same model was already the latest version.
  # What the pushed_model artifact records beyond pushed/version/destination (for example the
  # OTA release state), and the push reason when the default ('pushed', 'same model already
  # latest') says too little.
  properties: Mapping[str, Union[int, str]] = dataclasses.field(default_factory=dict)
  reason: str = ''
  # Set when the publisher found the model already there but not shippable (a halted or
  # rejected OTA release): the push is recorded as not pushed, with this reason.
  refusal: str = ''


class Publisher(abc.ABC):
  """Publishes model files; implementations must never expose a half-written version."""

  @abc.abstractmethod
  def publish(self, name: str, model: bytes, metadata: Mapping[str, Any]) -> PublishResult:
    """Publishes `model` under `name` with `metadata`; returns the version it is served as."""


class VersionedDirectoryPublisher(Publisher):
  """Publishes to `<root>/<name>/<version, 8 digits>/{model.tflite, metadata.json}` locally.

  Versions only go up. A version directory is assembled under a temporary name next to its final
  place and renamed into place in one step, so a reader sees either a whole version or none, and
  a crash leaves only a temporary directory that the next publish ignores. Two concurrent
  publishes that pick the same version number race on the rename; the loser takes the next one.
  Publishing the bytes that are already the latest version publishes nothing new.
  """

  def __init__(self, root: str):
    if '://' in root:
      raise ConfigError(f'push_destination={root!r}: the versioned directory publisher writes to '
                       'a local path; remote URIs are served by the OTA publisher.')
    self._root = root

  def versions(self, name: str) -> Dict[int, str]:
    """Published versions of `name`, mapped to their directories."""
    base = os.path.join(self._root, validation.model_name(name))
    if not os.path.isdir(base):
      return {}
    return {int(d): os.path.join(base, d) for d in os.listdir(base) if _VERSION_RE.match(d)}

  def publish(self, name: str, model: bytes, metadata: Mapping[str, Any]) -> PublishResult:
    base = os.path.join(self._root, validation.model_name(name))
    os.makedirs(base, exist_ok=True)
    digest = hashlib.sha256(model).hexdigest()
    existing = self.versions(name)
    if existing:
      latest = max(existing)
      latest_meta = os.path.join(existing[latest], METADATA_FILE)
      with open(latest_meta, encoding='utf-8') as f:
        if json.load(f).get('sha256') == digest:
          return PublishResult(latest, existing[latest], created=False)

    staging = tempfile.mkdtemp(prefix='.staging-', dir=base)
    try:
      os.chmod(staging, 0o755)  # mkdtemp makes it private; a published version is world-readable.
      with open(os.path.join(staging, MODEL_FILE), 'wb') as f:
        f.write(model)
        f.flush()
        os.fsync(f.fileno())
      version = max(existing, default=0) + 1
      while True:
        record = dict(metadata, name=name, version=version, sha256=digest, size_bytes=len(model))
        with open(os.path.join(staging, METADATA_FILE), 'w', encoding='utf-8') as f:
          json.dump(record, f, indent=2, sort_keys=True)
          f.flush()
          os.fsync(f.fileno())
        target = os.path.join(base, f'{version:08d}')
        try:
          # rename(2) of a directory fails when the target exists and is not empty, so a version
          # taken by a concurrent publish is never overwritten.
          os.rename(staging, target)
          return PublishResult(version, target, created=True)
        except OSError:
          if not os.path.isdir(target):
            raise
          version += 1
    finally:
      if os.path.isdir(staging):
        shutil.rmtree(staging, ignore_errors=True)
