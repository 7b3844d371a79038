"""Human approval: pending releases, approve and reject, the audit record, and the CLI commands."""
import json

import pytest

from components import errors
from components.ota import cli
from tests.ota.support import GATED
from tests.ota.support import fetch
from tests.ota.support import files
from tests.ota.support import installed
from tests.ota.support import status_lines
from tests.ota.support import verified_targets


def test_a_pending_release_is_invisible_until_approved(repo, server, tmp_path):
  device = tmp_path / 'device'
  repo.publish('digits', b'model-one')
  pending = repo.publish('digits', b'model-two', require_approval=True, gated_by=GATED,
                         rollout_percent=100, by='ci', info={'tfma_metrics': {'accuracy': 0.97}})

  before = fetch(repo, server, device)
  status = repo.channel_status()
  approved = repo.approve('digits', 2, by='alice', note='accuracy 0.97 against 0.96 released')
  after = fetch(repo, server, device)

  assert pending.state == 'pending'
  assert (before.version, after.version) == (1, 2)
  assert installed(device) == b'model-two'
  assert status == [{'name': 'digits', 'channel': 'stable', 'released_version': 1,
                     'rollout_percent': 100, 'approval': None, 'previous_version': None,
                     'halted': [], 'pending': [2], 'rejected': []}]
  assert approved.approval['by'] == 'alice'
  assert approved.approval['note'] == 'accuracy 0.97 against 0.96 released'
  assert [(e['action'], e['by']) for e in approved.audit] == [('publish', 'ci'),
                                                              ('approve', 'alice')]
  # The approval is in the signed metadata the device verified, next to the evidence.
  custom = verified_targets(device).signed.targets[approved.path].unrecognized_fields[
      'custom']['tfx_edge']
  assert custom['approval'] == approved.approval
  assert custom['tfma_metrics'] == {'accuracy': '0.97'}
  assert repo.channel_status()[0]['approval']['by'] == 'alice'


def test_a_first_release_that_is_pending_is_not_installed(repo, server, tmp_path):
  repo.publish('digits', b'model-one', require_approval=True, gated_by=GATED)

  with pytest.raises(errors.NotPublishedError, match=r"no release of 'digits' on channel "
                     r"'stable' at .* is live for device '.+' \(version 1 pending\)"):
    fetch(repo, server, tmp_path / 'device')


def test_a_rejected_release_never_ships_and_is_not_published_again(repo, server, tmp_path):
  repo.publish('digits', b'model-one')
  repo.publish('digits', b'model-two', require_approval=True, gated_by=GATED)

  rejected = repo.reject('digits', 2, by='bob', note='slice 3 regressed')
  again = repo.publish('digits', b'model-two', require_approval=True, gated_by=GATED)
  result = fetch(repo, server, tmp_path / 'device')

  assert rejected.state == 'rejected' and rejected.audit[-1]['note'] == 'slice 3 regressed'
  assert again == rejected  # A pipeline re-run does not bring back what was rejected.
  assert result.version == 1
  assert repo.channel_status()[0]['rejected'] == [2]


@pytest.mark.parametrize('change,error,message', [
    (lambda r: r.approve('digits', 9, by='alice'), errors.NotPublishedError,
     r"'digits' has no version 9; published versions: \[1, 2, 3, 4\]"),
    (lambda r: r.approve('letters', 1, by='alice'), errors.NotPublishedError,
     "no model 'letters' is published"),
    (lambda r: r.approve('digits', 2, by='carol'), errors.ReleaseStateError,
     r"cannot approve 'digits' version 2 on stable \(live at 100%, approved by alice at .*\): it "
     'is already approved and live. Only a pending release can be approved; nothing was '
     'changed.'),
    (lambda r: r.reject('digits', 2), errors.ReleaseStateError,
     r"cannot reject 'digits' version 2 .*: it is live; devices may have installed it. To stop "
     'its rollout, halt it'),
    (lambda r: r.approve('digits', 3, by='alice'), errors.ReleaseStateError,
     r"cannot approve 'digits' version 3 on stable \(rejected by bob at .*\): it was rejected, "
     'and a rejection is final'),
    (lambda r: r.reject('digits', 3), errors.ReleaseStateError, 'it is already rejected'),
    (lambda r: r.approve('digits', 1, by='alice'), errors.ReleaseStateError,
     'it was published live, without --require-approval: there is nothing to approve'),
    (lambda r: r.approve('digits', 4, by=''), errors.ConfigError,
     "by='' is not accepted; it must name who does this"),
    (lambda r: r.approve('digits', 4, by=None), errors.ConfigError, 'by=None is not accepted'),
    (lambda r: r.approve('digits', 0, by='alice'), errors.ConfigError,
     'version=0 is not accepted'),
])
def test_refused_approvals_write_nothing_and_say_why(repo, change, error, message):
  repo.publish('digits', b'model-one')
  repo.publish('digits', b'model-two', require_approval=True, gated_by=GATED)
  repo.approve('digits', 2, by='alice')
  repo.publish('digits', b'model-three', require_approval=True, gated_by=GATED)
  repo.reject('digits', 3, by='bob')
  repo.publish('digits', b'model-four', require_approval=True, gated_by=GATED)
  before = files(repo)

  with pytest.raises(error, match=message):
    change(repo)

  assert files(repo) == before


# --- the CLI -----------------------------------------------------------------------------------


def test_cli_approval_and_rollout_flow(cli_run, repo, server, tmp_path, tflite_models, capsys):
  model = tmp_path / 'model.tflite'
  model.write_bytes(tflite_models['int8'])
  retrained = tmp_path / 'retrained.tflite'
  retrained.write_bytes(tflite_models['fp32'])
  name = ['--name', 'digits']

  published = cli_run('publish', '--model', str(model), *name, '--by', 'ci')
  # Only the pipeline proposes a release for approval (OTAPusher, with the gates' blessings);
  # publishing the same bytes again from the CLI shows the pending release.
  repo.publish('digits', tflite_models['fp32'], rollout_percent=20, require_approval=True,
               by='OTAPusher', gated_by=GATED)
  pending = cli_run('publish', '--model', str(retrained), *name, '--by', 'ci')
  waiting = cli_run('status', '--channels', keys=False)
  approved = cli_run('approve', *name, '--version', '2', '--by', 'alice', '--note', 'TFMA ok')
  twice = cli_run('approve', *name, '--version', '2', '--by', 'alice')
  shrink = cli_run('promote', *name, '--version', '2', '--percent', '10')
  grown = cli_run('promote', *name, '--version', '2', '--percent', '50', '--by', 'alice')
  device = cli.main(['ota', 'fetch', '--url', server, '--trusted-root',
                     f'{repo.metadata_dir}/1.root.json', '--name', 'digits', '--dest',
                     str(tmp_path / 'device'), '--device-id', 'sensor-0001'])
  fetched = capsys.readouterr().out
  halted = cli_run('halt', *name, '--version', '2', '--by', 'oncall')
  reject = cli_run('reject', *name, '--version', '2')
  releases, roles = status_lines(cli_run('status', keys=False)[1])
  channels = [json.loads(line) for line in cli_run('status', '--channels', keys=False)[1]
              .splitlines()]

  for code, _, err in (published, pending, waiting, approved, grown, halted):
    assert code == 0, err
  assert device == 0 and fetched.startswith('installed digits version ')
  assert not (tmp_path / 'device' / 'device_id').exists()  # An id given is not stored.
  assert pending[1] == ('published digits version 2 on stable: digits/stable/model-v000002.tflite'
                        ' (pending: no device installs it until `tfx-edge ota approve --name '
                        'digits --version 2 --by WHO`)\n')
  assert json.loads(waiting[1])['pending'] == [2]
  assert approved[1].startswith('approved digits version 2 on stable: live for 20% of devices '
                                '(approved by alice at ')
  assert twice[0] == 2 and twice[2].startswith(
      "error: cannot approve 'digits' version 2 on stable (live at 20%, approved by alice at ")
  assert shrink[0] == 2 and 'a rollout only grows, so the percent must be more than 20' in (
      shrink[2])
  assert grown[1] == 'digits version 2 rolling out: live for 50% of devices on stable\n'
  assert halted[1].startswith('halted digits version 2 on stable: devices that took it go back')
  assert reject[0] == 2 and "cannot reject 'digits' version 2 on stable (halted by oncall" in (
      reject[2])
  # The existing keys of `status` stay; the new ones tell the state and who approved.
  assert {'name', 'version', 'channel', 'path', 'sha256', 'bytes'} <= set(releases[1])
  assert [(r['version'], r['state'], r['rollout_percent'], r['released']) for r in releases] == [
      (1, 'live', 100, True), (2, 'halted', 50, False)]
  assert releases[1]['approval']['by'] == 'alice'
  # The top-level roles, then digits' delegated targets role.
  assert [r['role'] for r in roles] == ['root', 'targets', 'snapshot', 'timestamp', 'digits']
  assert [e['action'] for e in releases[1]['audit']] == ['publish', 'approve', 'promote', 'halt']
  assert releases[1]['evidence']['gated_by'] == GATED
  assert channels == [{'name': 'digits', 'channel': 'stable', 'released_version': 1,
                       'rollout_percent': 100, 'approval': None, 'previous_version': None,
                       'halted': [2], 'pending': [], 'rejected': []}]


@pytest.mark.parametrize('args,message', [
    (('publish', '--model', 'MODEL', '--name', 'digits', '--rollout-percent', '0'),
     "error: --rollout-percent=0 is not accepted; it must be a whole number from 1 to 100"),
    (('publish', '--model', 'MODEL', '--name', 'digits', '--rollout-percent', '101'),
     "error: --rollout-percent=101 is not accepted"),
    (('promote', '--name', 'digits', '--version', '1', '--to-channel', 'Stable'),
     "error: channel='Stable' is not accepted"),
    (('promote', '--name', 'digits', '--version', '1', '--to-channel', 'beta'),
     "error: 'digits' has no channel 'beta' (its channels: ['stable'])"),
    (('halt', '--name', 'digits', '--version', '7'),
     "error: 'digits' has no version 7; published versions: [1]"),
    (('approve', '--name', 'digits', '--version', '1', '--by', 'alice'),
     "error: cannot approve 'digits' version 1 on stable (live at 100%): it was published live"),
])
def test_cli_refusals_exit_2_with_one_error_line_and_write_nothing(cli_run, repo, tmp_path,
                                                                  args, message):
  model = tmp_path / 'model.tflite'
  model.write_bytes(b'not read before the checks')
  repo.publish('digits', b'model-one')
  before = files(repo)

  code, out, err = cli_run(*[str(model) if a == 'MODEL' else a for a in args])

  assert (code, out) == (2, '')
  assert err.startswith(message) and err.count('\n') == 1, err
  assert files(repo) == before


@pytest.mark.parametrize('args,message', [
    (('publish', '--model', 'M', '--name', 'digits', '--rollout-percent', '12.5'),
     "argument --rollout-percent: invalid int value: '12.5'"),
    (('promote', '--name', 'digits', '--version', '1', '--percent', 'nan'),
     "argument --percent: invalid int value: 'nan'"),
    (('promote', '--name', 'digits', '--version', '1', '--percent', '50', '--to-channel', 'x'),
     'argument --to-channel: not allowed with argument --percent'),
    (('promote', '--name', 'digits', '--version', '1'),
     'one of the arguments --percent --to-channel is required'),
    (('approve', '--name', 'digits', '--version', '1'), 'the following arguments are required: '
     '--by'),
])
def test_cli_usage_errors_of_the_new_commands_exit_2(cli_run, args, message, capsys):
  with pytest.raises(SystemExit) as raised:
    cli_run(*args)

  assert raised.value.code == 2
  assert message in capsys.readouterr().err


def test_only_a_gated_model_can_be_proposed_for_approval(cli_run, repo, tmp_path, tflite_models):
  model = tmp_path / 'model.tflite'
  model.write_bytes(tflite_models['int8'])
  repo.publish('digits', b'model-one')
  before = files(repo)

  code, out, err = cli_run('publish', '--model', str(model), '--name', 'digits',
                           '--require-approval')
  with pytest.raises(errors.ConfigError) as unproven:
    repo.publish('digits', tflite_models['int8'], require_approval=True)
  with pytest.raises(errors.ConfigError) as empty:
    repo.publish('digits', tflite_models['int8'], require_approval=True, gated_by={})

  assert (code, out) == (2, '')
  assert err.startswith('error: --require-approval is refused: a pending release exists only '
                        'for a model the pipeline\'s gates blessed')
  assert 'a pending release exists only for a blessed model' in str(unproven.value)
  assert 'give a non-empty mapping of the gates that blessed the model' in str(empty.value)
  assert files(repo) == before
  # A rollback republishes an earlier version's bytes with the gates that blessed them.
  repo.publish('digits', b'model-two', require_approval=True, gated_by=GATED)
  repo.approve('digits', 2, by='alice')
  repo.publish('digits', b'model-three')
  rolled = repo.rollback('digits', 2)
  assert (rolled.version, rolled.state, rolled.custom['gated_by']) == (4, 'live', GATED)
