"""TFLitePusher's publisher when a push fails partway: the previous version stays whole."""
import errno
import hashlib
import json
import os

import pytest

from components.pusher import publisher as publisher_lib
from tests.helpers import read_only
from tests.helpers import run_without_root_override


def _version_intact(pub, version, model):
  path = pub.versions('digits')[version]
  with open(os.path.join(path, publisher_lib.MODEL_FILE), 'rb') as f:
    assert f.read() == model
  with open(os.path.join(path, publisher_lib.METADATA_FILE)) as f:
    assert json.load(f)['sha256'] == hashlib.sha256(model).hexdigest()


_PUBLISH_TO_DIRECTORY = '''
import sys
from components.pusher import publisher
publisher.VersionedDirectoryPublisher(sys.argv[1]).publish('digits', b'model-2', {})
'''


def test_a_read_only_destination_fails_the_push_and_keeps_the_previous_version(tmp_path):
  pub = publisher_lib.VersionedDirectoryPublisher(str(tmp_path))
  pub.publish('digits', b'model-1', {})

  with read_only(tmp_path / 'digits'):
    proc = run_without_root_override(_PUBLISH_TO_DIRECTORY, str(tmp_path))

  assert proc.returncode == 1 and 'PermissionError' in proc.stderr, proc.stderr[-2000:]
  assert sorted(pub.versions('digits')) == [1]
  _version_intact(pub, 1, b'model-1')
  assert pub.publish('digits', b'model-2', {}).version == 2


@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EIO], ids=['disk-full', 'io-error'])
def test_a_write_failing_midway_keeps_the_previous_version_and_no_leftovers(tmp_path, monkeypatch,
                                                                           code):
  pub = publisher_lib.VersionedDirectoryPublisher(str(tmp_path))
  pub.publish('digits', b'model-1', {})

  def failing_fsync(fd):
    raise OSError(code, os.strerror(code))

  monkeypatch.setattr(os, 'fsync', failing_fsync)  # The model file is half-written when it fails.
  with pytest.raises(OSError, match=os.strerror(code)) as raised:
    pub.publish('digits', b'model-2', {})
  monkeypatch.undo()

  assert raised.value.errno == code
  assert sorted(os.listdir(tmp_path / 'digits')) == ['00000001']
  _version_intact(pub, 1, b'model-1')
  assert pub.publish('digits', b'model-2', {}).version == 2
