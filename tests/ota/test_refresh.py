"""Metadata that stays fresh: refresh, configurable expiry, renew-root, and what status warns of.

Time passes by signing in the past (support.days_ago, the repository's clock): devices check
expiry against the real clock, so metadata signed 8 days ago with a 7-day timestamp is expired for
the real device client (tuf.ngclient over loopback HTTP).
"""
import concurrent.futures
import datetime
import json
import os
import re
import shutil
import threading

import pytest
from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import Metadata

from components import errors
from components.common import tflite
from components.ota import cli
from components.ota import client
from components.ota import repository
from components.ota import signing_keys
from components.ota import storage as storage_lib
from tests.helpers import http_server
from tests.ota.support import days_ago
from tests.ota.support import fetch
from tests.ota.support import files
from tests.ota.support import installed
from tests.ota.support import serve_storage
from tests.ota.support import status_lines

DAY = datetime.timedelta(days=1)


def _online_keys(repo, tmp_path, roles=('timestamp', 'snapshot')):
  """A key directory with only these roles' keys, as the refresh CronJob mounts them."""
  online = tmp_path / 'online-keys'
  online.mkdir()
  for role in roles:
    shutil.copy(os.path.join(repo._keys_dir, f'{role}.pem'), online)  # pylint: disable=protected-access
  return str(online)


def _expires_in(repo, role):
  return next(s for s in repo.expiry_status() if s['role'] == role)['expires_in_s']


# --- refresh -------------------------------------------------------------------------------------


def test_devices_fail_on_expired_metadata_until_a_refresh_then_install(repo, server, tmp_path):
  days_ago(repo, 8).publish('digits', b'model-one')  # The last push, 8 days ago.

  with pytest.raises(tuf_exceptions.ExpiredMetadataError, match='timestamp.json is expired'):
    fetch(repo, server, tmp_path / 'device')
  refreshed = repo.refresh()
  again = repo.refresh()
  device = fetch(repo, server, tmp_path / 'device')  # The same device, at the same time.
  new_device = fetch(repo, server, tmp_path / 'new-device')

  assert refreshed['resigned'] == ['timestamp'] and refreshed['warnings'] == []
  assert again['resigned'] == []  # Idempotent: nothing is within its window any more.
  assert (device.version, new_device.version) == (1, 1)
  assert installed(tmp_path / 'new-device') == b'model-one'
  assert 7 * DAY - datetime.timedelta(minutes=1) < datetime.timedelta(
      seconds=_expires_in(repo, 'timestamp')) <= 7 * DAY
  assert [r.version for r in repo.releases()] == [1]  # Nothing new was published.


def test_refresh_needs_only_the_online_keys_until_targets_is_due(repo, server, tmp_path):
  online = _online_keys(repo, tmp_path)
  days_ago(repo, 20).publish('digits', b'model-one')  # Snapshot within 15 days of expiry.
  job = repository.OTARepository(repo.repo_dir, online)

  first = job.refresh()
  assert first['resigned'] == ['snapshot', 'timestamp']
  assert fetch(repo, server, tmp_path / 'device').version == 1
  # digits' targets role signed 50 days ago is within its 45-day window: the targets key is
  # needed (targets.json itself, which only delegates, was signed 20 days ago).
  days_ago(repo, 50).publish('digits', b'model-two')
  before = files(repo)
  with pytest.raises(errors.SigningKeyError) as raised:
    job.refresh()
  assert files(repo) == before
  online_only = job.refresh(online_only=True)
  with_targets_key = repo.refresh()

  assert re.fullmatch(
      r'the delegated targets role digits version 2 expires in (39d 23h|40d) \(\S+Z\), within its '
      r'refresh window of 45d, and '
      rf'must be re-signed with the targets key, which is not in {re.escape(online)}\. It is an '
      r'offline key: run the refresh where it is available, or pass --online-only '
      r'\(online_only=True\) to re-sign only snapshot and timestamp\. Nothing was written\.',
      str(raised.value)), str(raised.value)
  assert online_only['resigned'] == ['snapshot', 'timestamp']
  [warning] = online_only['warnings']
  assert re.match(r'the delegated targets role digits version 2 expires in (39d 23h|40d) ',
                  warning) and warning.endswith(
      'within its refresh window of 45d: run `tfx-edge ota refresh` with the targets key.')
  assert with_targets_key['resigned'] == ['snapshot', 'timestamp']
  assert with_targets_key['resigned_delegated'] == ['digits']
  assert with_targets_key['warnings'] == []
  assert sorted(os.listdir(online)) == ['snapshot.pem', 'timestamp.pem']
  assert fetch(repo, server, tmp_path / 'device').version == 2


def test_a_push_reads_no_root_key(repo, server, tmp_path):
  keys = _online_keys(repo, tmp_path, roles=('targets', 'snapshot', 'timestamp'))

  release = repository.OTARepository(repo.repo_dir, keys).publish('digits', b'model-one')

  assert release.version == 1 and fetch(repo, server, tmp_path / 'device').version == 1


def _key_of_another_repository(repo, tmp_path, role):
  signing_keys.create_or_load(str(tmp_path / 'other-keys'))
  return str(tmp_path / 'other-keys' / f'{role}.pem')


def _key_a_rotation_replaced(repo, tmp_path, role):
  root_version = repo.rotate_keys(role)
  return os.path.join(repo._keys_dir, f'{role}.pem.old-{root_version}')  # pylint: disable=protected-access


@pytest.mark.parametrize('role,window', [('timestamp', '8d'), ('snapshot', '31d')])
@pytest.mark.parametrize('wrong_key', [_key_of_another_repository, _key_a_rotation_replaced],
                         ids=['another-repository', 'rotated-away'])
def test_a_key_root_does_not_trust_is_refused_and_nothing_is_written(repo, server, tmp_path,
                                                                      role, window, wrong_key):
  repo.publish('digits', b'model-one')
  keys = _online_keys(repo, tmp_path)
  shutil.copy(wrong_key(repo, tmp_path, role), os.path.join(keys, f'{role}.pem'))
  root_version = repo.expiry_status()[0]['version']
  before = files(repo)

  with pytest.raises(errors.SigningKeyError) as raised:
    # The window makes every role up to `role` due, so its key is needed.
    repository.OTARepository(repo.repo_dir, keys).refresh(window)

  assert str(raised.value).startswith(
      f'the {role} key in {keys} is not one that root version {root_version} trusts for {role}: '
      'it belongs to another repository, or a key rotation replaced it')
  assert str(raised.value).endswith('Nothing was written.')
  assert files(repo) == before
  assert fetch(repo, server, tmp_path / 'device').version == 1


def test_refreshes_racing_publishes_lose_no_release(mem_uri, tmp_path, monkeypatch):
  keys_dir = str(tmp_path / 'keys')
  repository.OTARepository(mem_uri, keys_dir).init()
  publishers = refreshers = 3
  n = publishers + refreshers
  # Hold every writer's first targets write until all n have built one on the same targets
  # version, so that refreshes and publishes really race for it.
  barrier = threading.Barrier(n, timeout=30)
  first_rounds = iter(range(n))
  lost = []
  create = storage_lib.FsspecStorage.create

  def racing_create(self, path, data):
    # A refresh's first write is targets.json; a publish's, its model's delegated role.
    if path.endswith(('.targets.json', '.digits.json')) and next(first_rounds, None) is not None:
      barrier.wait()
    try:
      create(self, path, data)
    except FileExistsError:
      lost.append(path)
      raise

  monkeypatch.setattr(storage_lib.FsspecStorage, 'create', racing_create)

  def write(i):  # Each thread its own writer, with its own repository object.
    repo = repository.OTARepository(mem_uri, keys_dir)
    if i < publishers:
      model = f'model-{i}'.encode()
      return 'publish', (repo.publish('digits', model).version, model)
    # A window longer than every period: each refresh re-signs targets, snapshot and timestamp.
    return 'refresh', repo.refresh('100d')['resigned']

  with concurrent.futures.ThreadPoolExecutor(n) as pool:
    results = list(pool.map(write, range(n)))
  monkeypatch.undo()

  repo = repository.OTARepository(mem_uri, keys_dir)
  pushed = dict(r for kind, r in results if kind == 'publish')
  refreshed = [r for kind, r in results if kind == 'refresh']
  assert sorted(pushed) == [1, 2, 3]
  # One refresher got targets version 2 and one publisher digits version 1 (a publish's own
  # delegation may also have lost targets version 2).
  assert lost.count('metadata/2.targets.json') >= refreshers - 1
  assert lost.count('metadata/1.digits.json') == publishers - 1
  assert refreshed == [['targets', 'snapshot', 'timestamp']] * refreshers
  assert {r.version: repo.read_target(r) for r in repo.releases('digits')} == pushed
  newest_targets = max(int(f.split('.')[0]) for f in repo.storage.list('metadata')
                       if f.endswith('.targets.json'))
  assert next(s for s in repo.expiry_status() if s['role'] == 'targets')['version'] == (
      newest_targets)
  root = tmp_path / 'root.json'
  root.write_bytes(repo.storage.read('metadata/1.root.json'))
  with serve_storage(repo) as url:
    result = client.fetch(url, str(root), 'digits', str(tmp_path / 'device'))
  assert result.version == 3 and installed(tmp_path / 'device') == pushed[3]


# --- expiry periods and windows ------------------------------------------------------------------


@pytest.mark.parametrize('text,expected', [
    ('7d', 7 * DAY), ('12h', datetime.timedelta(hours=12)),
    ('30m', datetime.timedelta(minutes=30)), ('1d12h', datetime.timedelta(hours=36)),
    ('1d2h3m4s', datetime.timedelta(days=1, hours=2, minutes=3, seconds=4)),
    ('3650d', 3650 * DAY), (datetime.timedelta(hours=5), datetime.timedelta(hours=5)),
])
def test_durations_parse_and_print_back(text, expected):
  assert repository.parse_duration(text) == expected
  assert repository.parse_duration(repository.format_duration(expected)) == expected


@pytest.mark.parametrize('value', ['soon', '', '0d', '0s', '-1d', '1.5d', '7 d', ' 7d', '7D',
                                   '1h1d', '3651d', '9' * 30 + 'd', 7, True, None,
                                   datetime.timedelta(0), -DAY])
def test_a_duration_that_does_not_parse_names_the_accepted_format(value):
  with pytest.raises(errors.ConfigError) as raised:
    repository.parse_duration(value, '--if-expiring-within')

  assert str(raised.value) == (
      f'--if-expiring-within={value!r} is not accepted; give a duration from 1s to 3650d: whole '
      'numbers with the units d, h, m and s, largest first, for example 7d, 12h, 30m or 1d12h.')


@pytest.mark.parametrize('kwargs,message', [
    (dict(expiry={'timestamp': '0d'}), r"expiry\['timestamp'\]='0d' is not accepted; give a "
     'duration'),
    (dict(expiry={'tiemstamp': '1d'}), r"expiry names \['tiemstamp'\], which are not TUF roles; "
     'the roles are root, targets, snapshot, timestamp'),
    (dict(expiry='7d'), "expiry='7d' is not accepted; give a mapping from role"),
    (dict(clock='now'), "clock='now' is not accepted; give a function"),
])
def test_bad_expiry_or_clock_is_refused_before_anything_is_written(tmp_path, kwargs, message):
  with pytest.raises(errors.ConfigError, match=message):
    repository.OTARepository(str(tmp_path / 'repo'), str(tmp_path / 'keys'), **kwargs).init()

  assert os.listdir(tmp_path) == []


def test_expiry_periods_are_per_role_and_the_windows_follow_them(tmp_path):
  repo = repository.OTARepository(str(tmp_path / 'repo'), str(tmp_path / 'keys'), expiry={
      'root': '30d', 'targets': '3d', 'snapshot': datetime.timedelta(days=2), 'timestamp': '12h'})
  repo.init()
  repo.publish('digits', b'model-one')

  status = {s['role']: s for s in repo.expiry_status()}
  for role, period in [('root', 30 * DAY), ('targets', 3 * DAY), ('snapshot', 2 * DAY),
                       ('timestamp', DAY / 2)]:
    assert period - datetime.timedelta(minutes=1) < datetime.timedelta(
        seconds=status[role]['expires_in_s']) <= period, role
  # Half of each period; root's window is at most 30 days.
  assert [status[r]['refresh_window_s'] for r in ('root', 'targets', 'snapshot', 'timestamp')] == [
      15 * 86400, 36 * 3600, 86400, 6 * 3600]
  # Opened again without expiry=, the repository signs with the periods init stored.
  assert repository.OTARepository(repo.repo_dir).refresh_window('root') == 15 * DAY
  assert repository.OTARepository(repo.repo_dir).refresh_window('timestamp') == DAY / 4
  # With the default 365 days, root's window is at most MAX_ROOT_WINDOW.
  default = repository.OTARepository(str(tmp_path / 'default'), str(tmp_path / 'keys'))
  assert default.refresh_window('root') == repository.MAX_ROOT_WINDOW
  assert default.refresh_window('timestamp') == 3.5 * DAY


def _cli(*argv):
  return cli.main(['ota', *argv])


def test_stored_expiry_periods_reach_every_later_command(tmp_path, capsys):
  repo_dir, keys = str(tmp_path / 'repo'), str(tmp_path / 'keys')
  assert _cli('init', '--repo', repo_dir, '--keys', keys, '--timestamp-expiry', '1d') == 0
  # init stores the periods in effect: its flag and the defaults for the other roles.
  with open(os.path.join(repo_dir, repository.CONFIG), encoding='utf-8') as f:
    assert json.load(f) == {'expiry': {'root': '365d', 'targets': '90d', 'snapshot': '30d',
                                       'timestamp': '1d'}}
  # A push with no expiry of its own (OTAPusher's default) signs timestamp for 1 day.
  pusher = repository.OTARepository(repo_dir, keys)
  pusher.publish('digits', b'model-one')
  assert DAY - datetime.timedelta(minutes=1) < datetime.timedelta(
      seconds=_expires_in(pusher, 'timestamp')) <= DAY
  capsys.readouterr()

  # config rewrites one role and keeps the others; status then computes its windows from them.
  assert _cli('config', '--repo', repo_dir, '--snapshot-expiry', '2d') == 0
  printed = capsys.readouterr().out
  assert _cli('status', '--repo', repo_dir) == 0
  roles = {r['role']: r for r in status_lines(capsys.readouterr().out)[1]}
  # A flag still overrides the stored period for its one command.
  assert _cli('status', '--repo', repo_dir, '--timestamp-expiry', '4h') == 0
  overridden = {r['role']: r for r in status_lines(capsys.readouterr().out)[1]}
  before = files(repository.OTARepository(repo_dir))
  assert _cli('config', '--repo', repo_dir) == 0  # No flags: prints, writes nothing.

  assert printed.strip() == (
      '{"expiry": {"root": "365d", "targets": "90d", "snapshot": "2d", "timestamp": "1d"}}')
  assert capsys.readouterr().out == printed
  assert files(repository.OTARepository(repo_dir)) == before
  assert roles['timestamp']['refresh_window_s'] == 12 * 3600
  assert roles['snapshot']['refresh_window_s'] == 86400
  assert overridden['timestamp']['refresh_window_s'] == 2 * 3600
  # The refresh CronJob passes no period: it re-signs snapshot (2d) within its 1-day window.
  assert _cli('refresh', '--repo', repo_dir, '--keys', keys, '--if-expiring-within', '30d') == 0
  refreshed = repository.OTARepository(repo_dir)
  assert 2 * DAY - datetime.timedelta(minutes=1) < datetime.timedelta(
      seconds=_expires_in(refreshed, 'snapshot')) <= 2 * DAY


def test_a_bad_config_json_or_config_without_a_repository_is_a_clear_error(tmp_path, repo, capsys):
  with open(os.path.join(repo.repo_dir, repository.CONFIG), 'w', encoding='utf-8') as f:
    f.write('{"expiry": {"timestamp": "soon"}}')
  with pytest.raises(errors.OTARepositoryError,
                     match=r"config.json cannot be read as the repository's settings: .*'soon' "
                     r'is not accepted.*`tfx-edge ota config`'):
    repository.OTARepository(repo.repo_dir).expiry_status()

  empty = tmp_path / 'not-a-repo'
  code = _cli('config', '--repo', str(empty), '--timestamp-expiry', '1d')
  assert code == 2 and 'is not an OTA repository' in capsys.readouterr().err
  assert not empty.exists() or not os.listdir(empty)


# --- renewing root -------------------------------------------------------------------------------


def test_a_device_that_trusted_root_1_accepts_the_renewed_root_2(repo, server, tmp_path):
  repo.publish('digits', b'model-one')
  assert fetch(repo, server, tmp_path / 'device').version == 1

  version = repository.OTARepository(repo.repo_dir, repo._keys_dir, expiry={  # pylint: disable=protected-access
      'root': '400d'}).renew_root()
  repo.publish('digits', b'model-two')
  device = fetch(repo, server, tmp_path / 'device')
  new_device = fetch(repo, server, tmp_path / 'new-device')  # Only root 1, out of band.

  assert version == 2 and (device.version, new_device.version) == (2, 2)
  trusted = Metadata.from_file(str(tmp_path / 'device' / 'metadata' / 'root.json'))
  assert trusted.signed.version == 2
  assert 399 * DAY < trusted.signed.expires - datetime.datetime.now(
      datetime.timezone.utc) <= 400 * DAY
  root_1 = Metadata.from_file(os.path.join(repo.metadata_dir, '1.root.json'))
  assert trusted.signed.roles == root_1.signed.roles and trusted.signed.keys == root_1.signed.keys


def test_an_expired_root_is_renewed_and_devices_holding_it_walk_to_the_new_one(tmp_path):
  then = repository.OTARepository(str(tmp_path / 'repo'), str(tmp_path / 'keys'),
                                  clock=lambda: datetime.datetime.now(datetime.timezone.utc) -
                                  366 * DAY)
  then.init()
  then.publish('digits', b'model-one')
  repo = repository.OTARepository(then.repo_dir, str(tmp_path / 'keys'))

  with http_server(repo.repo_dir) as url:
    with pytest.raises(tuf_exceptions.ExpiredMetadataError, match='root.json is expired'):
      fetch(repo, url, tmp_path / 'device')
    root_version = repo.renew_root()
    refreshed = repo.refresh()
    device = fetch(repo, url, tmp_path / 'device')

  assert root_version == 2 and device.version == 1
  assert refreshed['resigned'] == ['targets', 'snapshot', 'timestamp']
  assert refreshed['warnings'] == []
  assert Metadata.from_file(str(tmp_path / 'device' / 'metadata' / 'root.json')).signed.version == 2


@pytest.mark.parametrize('keys,message', [
    ('online', "signing key for role 'root' not found at"),
    ('other', 'the root key in .* is not one that root version 1 trusts; nothing was written.'),
])
def test_renew_root_without_the_trusted_root_key_writes_nothing(repo, tmp_path, keys, message):
  keys_dir = _online_keys(repo, tmp_path)
  if keys == 'other':
    shutil.copy(_key_of_another_repository(repo, tmp_path, 'root'), keys_dir)
  before = files(repo)

  with pytest.raises(errors.SigningKeyError, match=message):
    repository.OTARepository(repo.repo_dir, keys_dir).renew_root()

  assert files(repo) == before


# --- the CLI -------------------------------------------------------------------------------------


def test_cli_status_warns_then_refresh_re_signs_and_a_second_refresh_says_nothing_to_do(
    cli_run, repo):
  days_ago(repo, 8).publish('digits', b'model-one')

  status = cli_run('status', keys=False)
  refresh = cli_run('refresh')
  again = cli_run('refresh')
  after = cli_run('status', keys=False)

  for code, _, err in (status, refresh, again, after):
    assert code == 0, err
  releases, roles = status_lines(status[1])
  assert [r['version'] for r in releases] == [1]
  assert [(r['role'], r['version']) for r in roles] == [
      ('root', 1), ('targets', 2), ('snapshot', 2), ('timestamp', 2), ('digits', 1)]
  timestamp = roles[3]
  assert set(timestamp) == {'role', 'version', 'expires', 'expires_in_s', 'refresh_window_s',
                            'warning'}
  assert -86400 - 60 < timestamp['expires_in_s'] <= -86400
  assert timestamp['refresh_window_s'] == 3.5 * 86400
  assert timestamp['warning'] == (
      f'timestamp version 2 expired 1d ago ({timestamp["expires"]}), within its refresh window '
      'of 3d 12h: run `tfx-edge ota refresh` (the online keys suffice).')
  assert [r['warning'] for r in roles[:3]] == [None, None, None]
  assert status[2] == f'warning: {timestamp["warning"]}\n'
  assert re.fullmatch(r're-signed timestamp: version 3, expires \S+Z \(in (6d 23h|7d)\)\n',
                      refresh[1]), refresh[1]
  assert re.fullmatch(r'nothing to refresh: timestamp expires in (6d 23h|7d) \(window 3d 12h\), '
                      r'snapshot expires in (21d 23h|22d) \(window 15d\), targets expires in '
                      r'(81d 23h|82d) \(window 45d\)\n', again[1]), again[1]
  assert (refresh[2], again[2], after[2]) == ('', '', '')
  assert status_lines(after[1])[1][3]['warning'] is None


def test_cli_refresh_online_only_and_renew_root(cli_run, repo, tmp_path, capsys):
  days_ago(repo, 50).publish('digits', b'model-one')
  online = _online_keys(repo, tmp_path)

  refused = cli.main(['ota', 'refresh', '--repo', repo.repo_dir, '--keys', online])
  refused_err = capsys.readouterr().err
  online_only = cli.main(['ota', 'refresh', '--repo', repo.repo_dir, '--keys', online,
                          '--online-only'])
  online_out, online_err = capsys.readouterr()
  renewed = cli_run('renew-root', '--root-expiry', '400d')

  assert refused == 2
  assert re.match(r'error: targets version 2 expires in (39d 23h|40d) ', refused_err)
  assert online_only == 0
  assert online_out.splitlines()[0].startswith('re-signed snapshot: version 3, expires ')
  assert online_out.splitlines()[1].startswith('re-signed timestamp: version 3, expires ')
  assert re.match(r'warning: targets version 2 expires in (39d 23h|40d) ', online_err)
  assert renewed[0] == 0 and re.fullmatch(
      r'renewed root: version 2 expires \S+Z \(in (399d 23h|400d)\); devices walk the root '
      r'chain to it on their next fetch\n', renewed[1]), renewed[1]


def test_cli_expiry_flags_set_what_a_command_signs(cli_run, repo, tmp_path, monkeypatch):
  model = tmp_path / 'model.tflite'
  model.write_bytes(b'model bytes')
  # Tensor specs need a real TFLite model; test_cli.py's publish tests cover them.
  monkeypatch.setattr(tflite, 'io_specs', lambda data: {'inputs': [], 'outputs': []})

  periods = ('--timestamp-expiry', '1d12h', '--snapshot-expiry', '2d', '--targets-expiry', '3d')
  published = cli_run('publish', '--model', str(model), '--name', 'digits', *periods)
  # status computes the windows from the periods: give it the same flags.
  status = cli_run('status', *periods, keys=False)
  window = cli_run('status', '--if-expiring-within', '2d12h', keys=False)

  assert published[0] == 0, published[2]
  roles = {r['role']: r for r in status_lines(status[1])[1]}
  for role, hours in [('timestamp', 36), ('snapshot', 48), ('targets', 72)]:
    assert hours * 3600 - 60 < roles[role]['expires_in_s'] <= hours * 3600, role
  assert roles['timestamp']['refresh_window_s'] == 18 * 3600 and status[2] == ''
  # A 2.5-day window holds timestamp and snapshot, not targets.
  assert [r['role'] for r in status_lines(window[1])[1] if r['warning']] == [
      'snapshot', 'timestamp']
  assert window[2].count('warning: ') == 2


@pytest.mark.parametrize('args,message', [
    (('refresh', '--if-expiring-within', 'soon'), "error: --if-expiring-within='soon' is not "
     'accepted; give a duration from 1s to 3650d: whole numbers with the units d, h, m and s, '
     'largest first, for example 7d, 12h, 30m or 1d12h.'),
    (('refresh', '--if-expiring-within', '0d'), "error: --if-expiring-within='0d' is not "
     'accepted'),
    (('refresh', '--if-expiring-within=-1d'), "error: --if-expiring-within='-1d' is not "
     'accepted'),
    (('refresh', '--timestamp-expiry', '1w'), "error: --timestamp-expiry='1w' is not accepted"),
    (('publish', '--model', 'MODEL', '--name', 'digits', '--snapshot-expiry', '0s'),
     "error: --snapshot-expiry='0s' is not accepted"),
    (('approve', '--name', 'digits', '--version', '1', '--by', 'a', '--targets-expiry', '90'),
     "error: --targets-expiry='90' is not accepted"),
    (('renew-root', '--root-expiry', 'forever'), "error: --root-expiry='forever' is not "
     'accepted'),
    (('rotate-keys', '--role', 'timestamp', '--root-expiry', '3651d'), "error: "
     "--root-expiry='3651d' is not accepted"),
])
def test_cli_bad_durations_exit_2_with_one_error_line_and_write_nothing(cli_run, repo, tmp_path,
                                                                       args, message):
  model = tmp_path / 'model.tflite'
  model.write_bytes(b'not read before the checks')
  days_ago(repo, 8).publish('digits', b'model-one')  # A refresh would write.
  before = files(repo)
  keys_before = sorted(os.listdir(repo._keys_dir))  # pylint: disable=protected-access

  code, out, err = cli_run(*[str(model) if a == 'MODEL' else a for a in args])

  assert (code, out) == (2, '')
  assert err.startswith(message) and err.count('\n') == 1, err
  assert files(repo) == before
  assert sorted(os.listdir(repo._keys_dir)) == keys_before  # pylint: disable=protected-access
