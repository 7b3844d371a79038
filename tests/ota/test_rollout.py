"""Staged rollout: which devices a percentage includes, promote, halt, and the device id.

Selections run client.select_release on the targets metadata a real device verified over HTTP.
"""
import math
import os

import pytest

from components import errors
from components.ota import client
from components.ota import repository
from tests.ota.support import GATED
from tests.ota.support import fetch
from tests.ota.support import files
from tests.ota.support import installed
from tests.ota.support import verified_targets

DEVICES = [f'sensor-{i:04d}' for i in range(1000)]


def _on_new_version(targets, version):
  return {d for d in DEVICES
          if client.select_release(targets, 'digits', 'stable', d)[1]['version'] == version}


def test_a_rollout_reaches_its_share_of_devices_and_growing_it_drops_none(repo, server, tmp_path):
  repo.publish('digits', b'model-one')
  release = repo.publish('digits', b'model-two', rollout_percent=10)
  observer = tmp_path / 'observer'  # A device whose verified metadata the selections read.

  reached = {}
  for percent in (10, 25, 50, 100):
    if percent != 10:
      repo.promote('digits', 2, percent=percent, by='release-manager')
    fetch(repo, server, observer, device_id='observer')
    targets = verified_targets(observer)
    reached[percent] = _on_new_version(targets, 2)
    # The newest live release, whatever the rollout: what a device in every rollout runs.
    assert client.select_release(targets, 'digits', 'stable', None)[1]['version'] == 2

  # 1,000 devices at 10%: the count is Binomial(1000, 0.1), sd 9.5; 7-13% is beyond 3 sd.
  assert 70 <= len(reached[10]) <= 130, len(reached[10])
  assert 220 <= len(reached[25]) <= 280 and 450 <= len(reached[50]) <= 550
  assert len(reached[100]) == 1000
  # No device ever leaves a rollout as it grows.
  assert reached[10] <= reached[25] <= reached[50] <= reached[100]
  # The rollout is decided by the bucket alone, the same on every call.
  assert reached[10] == {d for d in DEVICES if client.rollout_bucket('digits', 2, d) < 10}
  assert release.rollout_percent == 10
  assert [(e['action'], e.get('percent')) for e in repo.releases('digits')[1].audit] == [
      ('publish', 10), ('promote', 25), ('promote', 50), ('promote', 100)]


def test_each_version_starts_its_rollout_on_other_devices():
  first = {d for d in DEVICES if client.in_rollout('digits', 2, d, 10)}
  second = {d for d in DEVICES if client.in_rollout('digits', 3, d, 10)}

  # Independent draws of ~10% each overlap on ~1%, not on all of them.
  assert len(first & second) < 30


def _one_in_one_out(version, percent):
  inside = next(d for d in DEVICES if client.in_rollout('digits', version, d, percent))
  outside = next(d for d in DEVICES if not client.in_rollout('digits', version, d, percent))
  return inside, outside


def test_halt_sends_the_devices_that_took_it_back_and_leaves_the_others(repo, server, tmp_path):
  repo.publish('digits', b'model-one')
  inside, outside = _one_in_one_out(2, 50)
  for device in (inside, outside):
    assert fetch(repo, server, tmp_path / device, device_id=device).version == 1
  repo.publish('digits', b'model-two', rollout_percent=50)
  took_it = fetch(repo, server, tmp_path / inside, device_id=inside)
  stayed = fetch(repo, server, tmp_path / outside, device_id=outside)

  [halted] = repo.halt('digits', 2, by='oncall', note='crash reports')
  back = fetch(repo, server, tmp_path / inside, device_id=inside)
  still = fetch(repo, server, tmp_path / outside, device_id=outside)
  newcomer = fetch(repo, server, tmp_path / 'new', device_id=inside)

  assert (took_it.version, took_it.updated, stayed.version, stayed.updated) == (2, True, 1, False)
  assert (back.version, back.updated) == (1, True)
  assert installed(tmp_path / inside) == b'model-one'  # The previous release's bytes.
  assert (still.version, still.updated) == (1, False)
  assert installed(tmp_path / outside) == b'model-one'
  assert newcomer.version == 1
  assert halted.state == 'halted' and halted.audit[-1]['by'] == 'oncall'
  assert [s['halted'] for s in repo.channel_status()] == [[2]]


def test_a_device_keeps_the_id_it_generated(repo, server, tmp_path):
  repo.publish('digits', b'model-one')
  device = tmp_path / 'device'

  first = fetch(repo, server, device)
  again = fetch(repo, server, device)

  kept = (device / 'device_id').read_text().strip()
  assert first.device_id == again.device_id == kept
  assert len(kept) == 32 and int(kept, 16) >= 0  # A uuid4, as hex.


@pytest.mark.parametrize('content,message', [
    (b'\xff\xfe', 'cannot be read'),
    (b'two words\n', "holds 'two words', which is not a device id"),
    (b'\n', "holds '', which is not a device id"),
    (None, 'cannot be read'),  # A directory where the file should be.
])
def test_an_unreadable_device_id_file_is_a_clear_error(repo, tmp_path, content, message):
  device = tmp_path / 'device'
  device.mkdir()
  if content is None:
    (device / 'device_id').mkdir()
  else:
    (device / 'device_id').write_bytes(content)

  with pytest.raises(errors.ConfigError, match=message) as raised:
    fetch(repo, 'http://127.0.0.1:9', device)  # Refused before any request.

  assert f'the device id file {device}/device_id' in str(raised.value)
  assert 'pass --device-id' in str(raised.value)
  assert not os.path.exists(device / 'metadata')


def test_a_bad_device_id_is_refused(repo, tmp_path):
  with pytest.raises(errors.ConfigError, match=r"device_id='a b' is not accepted: use 1-128 "
                     'printable ASCII characters without spaces'):
    fetch(repo, 'http://127.0.0.1:9', tmp_path / 'device', device_id='a b')


def test_promote_to_a_channel_publishes_the_same_bytes_and_version_live(repo, server, tmp_path):
  repo.publish('digits', b'model-one')
  repo.publish('digits', b'model-two', channel='canary', rollout_percent=20, by='ci')

  promoted = repo.promote('digits', 2, to_channel='stable', by='alice', note='canary clean')
  result = fetch(repo, server, tmp_path / 'device')

  assert (result.version, installed(tmp_path / 'device')) == (2, b'model-two')
  assert promoted.path == 'digits/stable/model-v000002.tflite'
  assert (promoted.state, promoted.rollout_percent) == ('live', 100)
  assert promoted.custom['promoted_from'] == {'channel': 'canary',
                                              'path': 'digits/canary/model-v000002.tflite'}
  assert [(e['action'], e['by']) for e in promoted.audit] == [('publish', 'ci'),
                                                              ('promote', 'alice')]
  assert promoted.audit[-1]['from_channel'] == 'canary'
  # The canary release is unchanged, and the next version is still one above every channel's.
  assert [(r.channel, r.state, r.rollout_percent) for r in repo.releases('digits')] == [
      ('stable', 'live', 100), ('canary', 'live', 20), ('stable', 'live', 100)]
  assert repo.publish('digits', b'model-three').version == 3


def test_a_release_published_before_rollouts_existed_is_live_for_every_device(repo):
  custom = {'name': 'digits', 'version': 1, 'channel': 'stable'}  # No state, no rollout_percent.

  assert (repository.state_of(custom), repository.rollout_percent_of(custom)) == ('live', 100)
  assert all(client.in_rollout('digits', 1, d, 100) for d in DEVICES)


# --- refused before anything is written --------------------------------------------------------

_PERCENT = ('it must be a whole number from 1 to 100: the percentage of the channel\'s devices '
            'that install the release')


@pytest.mark.parametrize('percent', [0, 101, math.nan, True, 12.5, '50', -5],
                         ids=lambda p: repr(p))
def test_a_bad_rollout_percent_writes_nothing(repo, percent):
  repo.publish('digits', b'model-one', rollout_percent=10)
  before = files(repo)

  with pytest.raises(errors.ConfigError) as on_publish:
    repo.publish('digits', b'model-two', rollout_percent=percent)
  with pytest.raises(errors.ConfigError) as on_promote:
    repo.promote('digits', 1, percent=percent)

  assert str(on_publish.value) == f'rollout_percent={percent!r} is not accepted; {_PERCENT}.'
  assert str(on_promote.value) == f'percent={percent!r} is not accepted; {_PERCENT}.'
  assert files(repo) == before


@pytest.mark.parametrize('change,error,message', [
    (lambda r: r.promote('digits', 9, percent=50), errors.NotPublishedError,
     r"'digits' has no version 9; published versions: \[1, 2, 3\]"),
    (lambda r: r.promote('letters', 1, percent=50), errors.NotPublishedError,
     r"no model 'letters' is published in OTA repository .*; published models: \['digits'\]"),
    (lambda r: r.halt('digits', 9), errors.NotPublishedError, "'digits' has no version 9"),
    (lambda r: r.promote('digits', 2, to_channel='Stable'), errors.ConfigError,
     "channel='Stable' is not accepted"),
    (lambda r: r.promote('digits', 2, to_channel='beta'), errors.NotPublishedError,
     r"'digits' has no channel 'beta' \(its channels: \['canary', 'stable'\]\)"),
    (lambda r: r.promote('digits', 2, percent=50, to_channel='stable'), errors.ConfigError,
     'promote takes exactly one of percent .* or to_channel'),
    (lambda r: r.promote('digits', 2), errors.ConfigError, 'promote takes exactly one of'),
    (lambda r: r.promote('digits', 2, percent=5), errors.ReleaseStateError,
     r"cannot promote 'digits' version 2 on canary \(live at 10%\) to 5%: a rollout only "
     'grows, so the percent must be more than 10'),
    (lambda r: r.promote('digits', 2, percent=10), errors.ReleaseStateError,
     'a rollout only grows'),
    (lambda r: r.promote('digits', 1, to_channel='canary'), errors.ReleaseStateError,
     r"cannot promote 'digits' version 1 on stable .* to canary: 'digits' version 2 on canary "
     r'\(live at 10%\) is newer'),
    (lambda r: r.promote('digits', 3, percent=50), errors.ReleaseStateError,
     r"cannot promote 'digits' version 3 on stable \(pending\): approve it first"),
    (lambda r: r.halt('digits', 3), errors.ReleaseStateError,
     'it is pending and no device has it; reject it instead'),
    (lambda r: r.halt('digits', 2, channel='stable'), errors.NotPublishedError,
     r"'digits' version 2 is not on channel 'stable'; it is on \['canary'\]"),
    (lambda r: r.promote('digits', 2, to_channel='canary'), errors.ReleaseStateError,
     r"'digits' version 2 on canary \(live at 10%\) is already there"),
])
def test_refused_rollout_changes_write_nothing_and_say_why(repo, change, error, message):
  repo.publish('digits', b'model-one')
  repo.publish('digits', b'model-two', channel='canary', rollout_percent=10)
  repo.publish('digits', b'model-three', require_approval=True, gated_by=GATED)
  before = files(repo)

  with pytest.raises(error, match=message):
    change(repo)

  assert files(repo) == before


def test_a_halted_release_cannot_be_promoted_or_halted_again(repo):
  repo.publish('digits', b'model-one')
  repo.halt('digits', 1)
  before = files(repo)

  with pytest.raises(errors.ReleaseStateError, match='a halted release is not shipped again'):
    repo.promote('digits', 1, percent=50)
  with pytest.raises(errors.ReleaseStateError, match='it is already halted'):
    repo.halt('digits', 1)

  assert files(repo) == before
