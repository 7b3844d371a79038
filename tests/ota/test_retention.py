"""Retention (the newest K versions per name and channel, plus those in use) and `ota gc`."""
import datetime
import os

import pytest

from components import errors
from components.ota import repository
from components.ota import storage as storage_lib
from tests.ota.support import fetch
from tests.ota.support import installed
from tests.ota.support import serve_storage
from tests.ota.support import GATED


def _repo(repo, **kwargs):
  """The same repository with other settings; no patches, so each push writes one file."""
  kwargs.setdefault('delta_policy', repository.DeltaPolicy(last_k=0))
  return repository.OTARepository(repo.repo_dir, repo._keys_dir, **kwargs)  # pylint: disable=protected-access


def _model_files(repo):
  """{version: storage path} of the model files of `digits` on stable in storage."""
  directory = os.path.join(repo.targets_dir, 'digits', 'stable')
  return {int(name.split('-v')[1].split('.')[0]): f'targets/digits/stable/{name}'
          for name in os.listdir(directory) if name.endswith('.tflite')}


def _listed(repo, name='digits'):
  return [(r.version, r.channel) for r in repo.releases(name)]


def test_metadata_lists_the_last_k_files_stay_until_gc_and_gc_removes_exactly_the_unnamed(
    repo, tmp_path):
  ota = _repo(repo, keep_versions=10)
  for i in range(1, 16):
    ota.publish('digits', f'model-{i}'.encode())
  ota.publish('faces', b'faces-1')  # Another model: untouched by digits' retention.
  stored = _model_files(ota)

  dry = ota.gc(dry_run=True, min_age='0s')
  assert _model_files(ota) == stored  # A dry run deletes nothing.
  result = ota.gc(min_age='0s')
  again = ota.gc(min_age='0s')

  assert _listed(ota) == [(v, 'stable') for v in range(6, 16)]
  assert sorted(stored) == list(range(1, 16))
  assert result['deleted'] == dry['deleted'] == sorted(stored[v] for v in range(1, 6))
  assert sorted(_model_files(ota)) == list(range(6, 16))
  assert again['deleted'] == [] and _listed(ota, 'faces') == [(1, 'stable')]
  with serve_storage(ota) as url:
    assert fetch(ota, url, tmp_path / 'device').version == 15
  assert installed(tmp_path / 'device') == b'model-15'


def test_versions_in_use_stay_listed_beyond_k(repo):
  ota = _repo(repo, keep_versions=2)
  ota.publish('digits', b'model-1')  # At 100%: where devices outside the rollouts stay.
  for i in range(2, 6):
    ota.publish('digits', f'model-{i}'.encode(), rollout_percent=10)
  ota.publish('digits', b'model-6', require_approval=True, gated_by=GATED)
  ota.publish('digits', b'model-7', require_approval=True, gated_by=GATED)
  ota.publish('digits', b'canary-8', channel='canary')  # Its own channel, its own K.
  ota.publish('digits', b'canary-9', channel='canary')
  ota.publish('digits', b'canary-10', channel='canary')

  # Pending 6 and 7 (the newest two), the rollouts 2-5, and version 1 they fall back to.
  assert _listed(ota) == [(v, 'stable') for v in range(1, 8)] + [(9, 'canary'),
                                                                  (10, 'canary')]
  ota.reject('digits', 6)
  ota.promote('digits', 5, percent=100)  # Now 5 is where devices outside rollouts stay.
  ota.publish('digits', b'model-11')
  assert _listed(ota) == [(5, 'stable'), (7, 'stable'), (9, 'canary'), (10, 'canary'),
                          (11, 'stable')]
  ota.halt('digits', 11)  # Devices go back to 5, which stays listed.
  assert [r.version for r in ota.releases('digits') if r.channel == 'stable'] == [5, 7, 11]
  ota.rollback('digits', 5)  # 5 stays: where a halt of 12 would send devices.
  assert [(r.version, r.state) for r in ota.releases('digits') if r.channel == 'stable'] == [
      (5, 'live'), (7, 'pending'), (11, 'halted'), (12, 'live')]


def test_dropped_releases_take_their_patches_and_golden_records_with_them(repo):
  ota = repository.OTARepository(repo.repo_dir, repo._keys_dir, keep_versions=2,  # pylint: disable=protected-access
                                 delta_policy=repository.DeltaPolicy(last_k=1, max_ratio=0.9))
  base = bytes(range(256)) * 8
  for i in range(1, 5):
    ota.publish('digits', base + bytes([i]) * 16, golden=f'golden-{i}'.encode())
  targets = ota._published_roles(ota._published()[1])['digits']  # pylint: disable=protected-access

  assert sorted(targets.signed.targets) == [
      'digits/stable/model-v000003.golden.json', 'digits/stable/model-v000003.tflite',
      'digits/stable/model-v000004.golden.json', 'digits/stable/model-v000004.tflite',
      'digits/stable/patches/v000002-v000003.bsdiff4',
      'digits/stable/patches/v000003-v000004.bsdiff4']


def test_gc_keeps_an_unnamed_file_younger_than_min_age(repo):
  ota = _repo(repo, keep_versions=1)
  ota.publish('digits', b'model-1')
  ota.publish('digits', b'model-2')
  ota.publish('digits', b'model-3')
  # A publish in progress has written its file but not yet its metadata.
  ota._write_target('digits/stable/model-v000004.tflite', b'model-4')  # pylint: disable=protected-access

  fresh = ota.gc()  # Default grace period: a day.
  later = _repo(repo, keep_versions=1, clock=lambda: datetime.datetime.now(
      datetime.timezone.utc) + datetime.timedelta(days=2)).gc()

  # Version 1 is still named by snapshots of the last day; the new file is younger than a day.
  assert fresh['deleted'] == [] and [p.rsplit('-v', 1)[1] for p in fresh['young']] == [
      '000004.tflite']
  assert sorted(p.rsplit('-v', 1)[1] for p in later['deleted']) == [
      '000001.tflite', '000004.tflite']
  assert sorted(_model_files(ota)) == [2, 3]


def test_a_gc_killed_midway_leaves_a_valid_repository_and_a_rerun_finishes(repo, tmp_path,
                                                                           monkeypatch):
  ota = _repo(repo, keep_versions=2)
  for i in range(1, 8):
    ota.publish('digits', f'model-{i}'.encode())
  delete = storage_lib.LocalStorage.delete
  deleted = []

  def dies_after_two(self, path):
    if len(deleted) == 2:
      raise KeyboardInterrupt  # The process is stopped between two deletions.
    delete(self, path)
    deleted.append(path)

  monkeypatch.setattr(storage_lib.LocalStorage, 'delete', dies_after_two)
  with pytest.raises(KeyboardInterrupt):
    ota.gc(min_age='0s')
  monkeypatch.undo()

  with serve_storage(ota) as url:
    assert fetch(ota, url, tmp_path / 'device').version == 7
    rest = ota.gc(min_age='0s')
    ota.publish('digits', b'model-8')
    assert fetch(ota, url, tmp_path / 'device').version == 8

  assert len(deleted) == 2 and len(rest['deleted']) == 3  # Versions 1-5 in all.
  assert sorted(_model_files(ota)) == [6, 7, 8]


def test_gc_with_keys_trims_metadata_written_with_a_larger_k(repo, tmp_path):
  everything = _repo(repo, keep_versions=None)
  for i in range(1, 7):
    everything.publish('digits', f'model-{i}'.encode())
  ota = _repo(repo, keep_versions=3)

  first = ota.gc(min_age='0s')
  second = ota.gc(min_age='0s')
  without_keys = repository.OTARepository(repo.repo_dir, keep_versions=1).gc(min_age='0s')

  assert first['trimmed'] == ['digits'] and len(first['deleted']) == 3
  assert _listed(ota) == [(4, 'stable'), (5, 'stable'), (6, 'stable')]
  assert second['deleted'] == [] and second['trimmed'] == []
  assert sorted(_model_files(ota)) == [4, 5, 6]
  assert without_keys['trimmed'] == [] and without_keys['deleted'] == []
  with serve_storage(ota) as url:
    assert fetch(ota, url, tmp_path / 'device').version == 6


@pytest.mark.parametrize('keep', [0, -1, True, 2.5, '3'])
def test_a_bad_keep_versions_is_refused(repo, keep):
  with pytest.raises(errors.ConfigError, match=f'keep_versions={keep!r} is not accepted'):
    repository.OTARepository(repo.repo_dir, keep_versions=keep)


@pytest.mark.parametrize('min_age', ['soon', '-1d', 5])
def test_a_bad_min_age_is_refused_and_nothing_is_deleted(repo, min_age):
  ota = _repo(repo, keep_versions=1)
  ota.publish('digits', b'model-1')
  ota.publish('digits', b'model-2')
  ota.publish('digits', b'model-3')
  with pytest.raises(errors.ConfigError, match='min_age='):
    ota.gc(min_age=min_age)
  assert sorted(_model_files(ota)) == [1, 2, 3]


def test_gc_and_keep_versions_on_the_command_line(repo, cli_run):
  ota = _repo(repo, keep_versions=None)
  for i in range(1, 5):
    ota.publish('digits', f'model-{i}'.encode(), require_approval=True, gated_by=GATED)
  # An approval with --keep-versions 1 signs metadata that keeps only what is in use.
  code, out, err = cli_run('approve', '--name', 'digits', '--version', '4', '--by', 'alice',
                           '--keep-versions', '1')
  assert code == 0, err
  assert _listed(ota) == [(1, 'stable'), (2, 'stable'), (3, 'stable'), (4, 'stable')]
  ota.reject('digits', 1)
  ota.reject('digits', 2)
  ota.reject('digits', 3)
  code, out, err = cli_run('reject', '--name', 'digits', '--version', '3', '--keep-versions', '1')
  assert code == 2 and 'already rejected' in err
  code, out, err = cli_run('gc', '--dry-run', '--min-age', '0s', keys=False)
  assert code == 0, err
  assert out.splitlines() == ['would delete 0 target files; kept 4 that metadata names and 0 '
                              'unnamed ones younger than --min-age 0s']
  code, out, err = cli_run('gc', '--keep-versions', '1', '--min-age', '0s')
  assert code == 0, err
  lines = out.splitlines()
  assert lines[0] == ('trimmed the metadata of digits to the newest 1 versions per channel '
                      '(plus those in use)')
  assert sorted(line.rsplit('-v', 1)[1] for line in lines[1:4]) == [
      '000001.tflite', '000002.tflite', '000003.tflite']
  assert lines[4].startswith('deleted 3 target files; kept 1 that metadata names')
  assert _listed(ota) == [(4, 'stable')] and sorted(_model_files(ota)) == [4]
  code, out, err = cli_run('gc', '--keep-versions', '-2')
  assert code == 2 and "--keep-versions=-2 is not accepted" in err


def test_otapusher_takes_keep_versions_and_refuses_a_clashing_name_when_built():
  from components import OTAPusher  # pylint: disable=g-import-not-at-top
  from components import spec_keys  # pylint: disable=g-import-not-at-top
  from tests.ota.test_component import _args  # pylint: disable=g-import-not-at-top

  def kept(**kwargs):
    return OTAPusher(**_args(**kwargs)).exec_properties[spec_keys.OTA_KEEP_VERSIONS_KEY]

  assert (kept(), kept(keep_versions=3), kept(keep_versions=None)) == (10, 3, 0)
  with pytest.raises(errors.ConfigError, match='keep_versions=0 is not accepted'):
    OTAPusher(**_args(keep_versions=0))
  with pytest.raises(errors.ConfigError, match="'Snapshot' is the top-level role 'snapshot'"):
    OTAPusher(**_args(model_name='Snapshot'))
