"""OTAPusher: construction checks, and its executor publishing a blessed model into the repo."""
import datetime
import hashlib

import pytest
from tfx.types import standard_artifacts

from components import OTAPusher
from components import errors
from components import spec_keys
from components.ota import executor as ota_executor
from components.ota import repository
from tests.helpers import blessing_artifact
from tests.helpers import channel
from tests.helpers import tflite_model_artifact


def _channels():
  return dict(model=channel(), model_blessing=channel(standard_artifacts.ModelBlessing))


def _args(**kwargs):
  args = dict(_channels(), repository_dir='/srv/ota', keys_dir='/var/run/keys',
              model_name='digits')
  args.update(kwargs)
  return args


@pytest.mark.parametrize('kwargs,message', [
    (dict(channel='Beta'), "channel='Beta' is not accepted"),
    (dict(model_name='a/b'), "model_name='a/b' is not accepted"),
    (dict(repository_dir='ftp://host/ota'), "location 'ftp://host/ota' is not accepted"),
    (dict(repository_dir='simplecache::gs://b/ota'), 'is not accepted; use a local path'),
    (dict(keys_dir='gs://bucket/keys'), "keys_dir='gs://bucket/keys' must be a local"),
    (dict(keys_dir='/srv/ota/keys'), 'lies inside repository_dir, which is served to devices'),
    (dict(allowed_modes=['int7']), "allowed_modes contains 'int7'"),
    (dict(delta_policy={'last_k': 2}), "delta_policy={'last_k': 2} is not accepted; it must be a "
     'DeltaPolicy'),
    *[(dict(rollout_percent=p), f'rollout_percent={p!r} is not accepted; it must be a whole '
       'number from 1 to 100') for p in (0, 101, float('nan'), True, 12.5)],
    (dict(require_approval='yes'), "require_approval='yes' is not accepted; it must be True or "
     'False'),
    (dict(metadata_expiry={'timestamp': '0d'}), r"metadata_expiry\['timestamp'\]='0d' is not "
     'accepted; give a duration from 1s to 3650d'),
    (dict(metadata_expiry={'timestmp': '1d'}), r"metadata_expiry names \['timestmp'\], which are "
     'not TUF roles'),
    (dict(metadata_expiry='7d'), "metadata_expiry='7d' is not accepted; give a mapping"),
    (dict(metadata_expiry={'root': '2y'}), r"metadata_expiry\['root'\]='2y' is not accepted"),
    (dict(metadata_expiry={'root': '400d'}), 'metadata_expiry names root, which a push does not '
     'sign; renew root with `tfx-edge ota renew-root'),
])
def test_ota_pusher_checks_its_parameters_when_the_pipeline_is_built(kwargs, message):
  with pytest.raises(errors.ConfigError, match=message):
    OTAPusher(**_args(**kwargs))


@pytest.mark.parametrize('kwargs,message', [
    (dict(last_k=-1), 'last_k=-1 is not accepted; it must be an integer >= 0'),
    (dict(max_ratio=0), r'max_ratio=0 is not accepted; it must lie in \(0, 1\]'),
])
def test_a_delta_policy_that_could_never_apply_is_rejected(kwargs, message):
  with pytest.raises(errors.ConfigError, match=message):
    repository.DeltaPolicy(**kwargs)


def test_ota_pusher_gives_its_executor_the_delta_policy_and_accepts_object_stores():
  policy = repository.DeltaPolicy(last_k=2, max_ratio=0.3)

  local = OTAPusher(**_args(delta_policy=policy))
  remote = OTAPusher(**_args(repository_dir='gs://bucket/ota'))

  props = local.exec_properties
  # The executor rebuilds the same policy from the scalar exec properties TFX stores.
  assert repository.DeltaPolicy(props[spec_keys.OTA_DELTA_LAST_K_KEY],
                                props[spec_keys.OTA_DELTA_MAX_RATIO_KEY]) == policy
  assert props[spec_keys.ALLOWED_MODES_KEY] == '["int8"]'  # int8 only unless told otherwise.
  assert props[spec_keys.OTA_MIN_RUNTIME_KEY].startswith('ai-edge-litert>=')
  # Object stores are accepted here; whether the backend can compare-and-swap is checked when
  # the push runs (see test_remote.py).
  assert remote.exec_properties[spec_keys.OTA_REPOSITORY_KEY] == 'gs://bucket/ota'
  assert repository.DeltaPolicy(
      remote.exec_properties[spec_keys.OTA_DELTA_LAST_K_KEY],
      remote.exec_properties[spec_keys.OTA_DELTA_MAX_RATIO_KEY]) == repository.DeltaPolicy()


def _push(repo, tmp_path, model, blessed, name, regression=None, **kwargs):
  pushed = standard_artifacts.PushedModel()
  pushed.uri = str(tmp_path / name)
  component = OTAPusher(**_channels(), repository_dir=repo.repo_dir,
                        keys_dir=repo._keys_dir, model_name='digits', channel='canary', **kwargs)  # pylint: disable=protected-access
  inputs = {spec_keys.MODEL_KEY: [model],
            spec_keys.MODEL_BLESSING_KEY: [blessing_artifact(tmp_path / 'blessing', model,
                                                             blessed)]}
  if regression is not None:
    inputs[spec_keys.REGRESSION_BLESSING_KEY] = [regression]
  ota_executor.Executor().Do(inputs, {spec_keys.PUSHED_MODEL_KEY: [pushed]},
                             dict(component.exec_properties))
  return pushed


def _regression_blessing(tmp_path, blessed, reason):
  """A ModelBlessing as the regression gate writes it: `blessed` and, in words, why."""
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = str(tmp_path / 'regression_blessing')
  blessing.set_int_custom_property(spec_keys.PROP_BLESSED, int(blessed))
  if reason:
    blessing.set_string_custom_property(spec_keys.PROP_REASON, reason)
  return blessing


def test_ota_pusher_publishes_a_blessed_model_with_its_custom_info(repo, tmp_path, tflite_models):
  model = tflite_model_artifact(tmp_path / 'model', tflite_models['int8'])

  pushed = _push(repo, tmp_path, model, True, 'pushed')
  again = _push(repo, tmp_path, model, True, 'pushed_again')

  [release] = repo.releases('digits')
  assert pushed.get_int_custom_property('pushed') == 1
  # A string, as the standard TFX Pusher writes it.
  assert pushed.get_string_custom_property('pushed_version') == '1'
  assert pushed.get_string_custom_property('pushed_destination') == release.path
  assert pushed.get_string_custom_property(spec_keys.PROP_PUSH_REASON) == 'pushed'
  assert release.path == 'digits/canary/model-v000001.tflite'
  assert release.sha256 == hashlib.sha256(tflite_models['int8']).hexdigest()
  assert release.custom['mode'] == 'int8'
  assert release.custom['source_model_uri'] == model.uri
  assert release.custom['tensors']['inputs'][0]['dtype'] == 'int8'
  assert release.custom['min_runtime_version'].startswith('ai-edge-litert')
  assert repo.read_target(release) == tflite_models['int8']
  # Pushing the same bytes again publishes nothing new.
  assert again.get_string_custom_property('pushed_version') == '1'
  assert again.get_string_custom_property(spec_keys.PROP_PUSH_REASON) == (
      'same model already latest')


def test_ota_pusher_signs_with_the_expiry_periods_it_is_given(repo, tmp_path, tflite_models):
  model = tflite_model_artifact(tmp_path / 'model', tflite_models['int8'])
  expiry = {'timestamp': '1d12h', 'targets': datetime.timedelta(days=10)}

  props = OTAPusher(**_args(metadata_expiry=expiry)).exec_properties
  _push(repo, tmp_path, model, True, 'pushed', metadata_expiry=expiry)

  # Only the periods given travel: the others stay repository.EXPIRY's when the push runs.
  assert props[spec_keys.OTA_METADATA_EXPIRY_KEY] == '{"targets": "10d", "timestamp": "1d12h"}'
  assert OTAPusher(**_args()).exec_properties[spec_keys.OTA_METADATA_EXPIRY_KEY] == '{}'
  left = {s['role']: s['expires_in_s'] for s in repo.expiry_status()}
  for role, period in [('timestamp', 36 * 3600), ('snapshot', 30 * 86400),
                       ('targets', 10 * 86400)]:
    assert period - 60 < left[role] <= period, role


def test_ota_pusher_publishes_nothing_for_a_model_not_blessed(repo, tmp_path, tflite_models,
                                                              caplog):
  model = tflite_model_artifact(tmp_path / 'model', tflite_models['int8'])

  with caplog.at_level('WARNING'):
    pushed = _push(repo, tmp_path, model, False, 'pushed')

  assert pushed.get_int_custom_property('pushed') == 0
  reason = pushed.get_string_custom_property(spec_keys.PROP_PUSH_REASON)
  assert reason == ('model is NOT_BLESSED by the Evaluator: see the Evaluator output for the '
                    'thresholds')
  assert f'OTAPusher: NOT pushing {model.uri}: {reason}' in caplog.text
  assert repo.releases() == []


def test_ota_pusher_with_approval_publishes_a_pending_release_at_its_rollout(repo, tmp_path,
                                                                             tflite_models):
  model = tflite_model_artifact(tmp_path / 'model', tflite_models['int8'])

  pushed = _push(repo, tmp_path, model, True, 'pushed', require_approval=True,
                 rollout_percent=20)
  again = _push(repo, tmp_path, model, True, 'again', require_approval=True, rollout_percent=20)

  [release] = repo.releases('digits')
  assert (release.state, release.rollout_percent) == ('pending', 20)
  assert release.audit[0]['by'] == 'OTAPusher'
  # The blessing that let it through is signed with it, for the approver and the audit.
  assert release.custom['gated_by'] == {'model_blessing': str(tmp_path / 'blessing')}
  assert pushed.get_int_custom_property('pushed') == 1
  assert pushed.get_string_custom_property(spec_keys.PROP_RELEASE_STATE) == 'pending'
  assert pushed.get_int_custom_property(spec_keys.PROP_ROLLOUT_PERCENT) == 20
  assert pushed.get_string_custom_property(spec_keys.PROP_PUSH_REASON) == (
      'pushed as a pending release: no device installs it until `tfx-edge ota approve --repo '
      f'{repo.repo_dir} --keys DIR --name digits --version 1 --by WHO`')
  assert again.get_string_custom_property(spec_keys.PROP_PUSH_REASON).startswith(
      'already published as a pending release')
  repo.approve('digits', 1, by='alice')
  assert repo.releases('digits')[0].state == 'live'


def test_ota_pusher_defaults_to_a_live_release_for_every_device(repo, tmp_path, tflite_models):
  model = tflite_model_artifact(tmp_path / 'model', tflite_models['int8'])

  pushed = _push(repo, tmp_path, model, True, 'pushed')

  assert pushed.get_string_custom_property(spec_keys.PROP_RELEASE_STATE) == 'live'
  assert pushed.get_int_custom_property(spec_keys.PROP_ROLLOUT_PERCENT) == 100


def test_ota_pusher_refuses_what_the_regression_gate_did_not_bless(repo, tmp_path, tflite_models,
                                                                   caplog):
  model = tflite_model_artifact(tmp_path / 'model', tflite_models['int8'])
  reason = ('accuracy on slice label=3 dropped from 0.9500 (released version 1) to 0.8200, more '
            'than max_slice_regression 0.02')

  with caplog.at_level('WARNING'):
    refused = _push(repo, tmp_path, model, True, 'refused',
                    regression=_regression_blessing(tmp_path, False, reason))
  unexplained = _push(repo, tmp_path, model, True, 'unexplained',
                      regression=_regression_blessing(tmp_path, False, ''))

  assert refused.get_int_custom_property('pushed') == 0
  assert refused.get_string_custom_property(spec_keys.PROP_PUSH_REASON) == reason
  assert f'OTAPusher: NOT pushing {model.uri}: {reason}' in caplog.text
  assert unexplained.get_string_custom_property(spec_keys.PROP_PUSH_REASON).startswith(
      'the regression gate did not bless this model against the released one')
  assert repo.releases() == []


def test_ota_pusher_checks_the_models_own_gate_before_the_regression_gate(repo, tmp_path,
                                                                          tflite_models):
  model = tflite_model_artifact(tmp_path / 'model', tflite_models['int8'])

  pushed = _push(repo, tmp_path, model, False, 'pushed',
                 regression=_regression_blessing(tmp_path, False, 'regressed'))

  assert pushed.get_string_custom_property(spec_keys.PROP_PUSH_REASON).startswith(
      'model is NOT_BLESSED by the Evaluator')


def test_ota_pusher_keeps_the_regression_gates_reason_with_the_release(repo, tmp_path,
                                                                       tflite_models):
  model = tflite_model_artifact(tmp_path / 'model', tflite_models['int8'])
  reason = 'nothing released yet on canary: the regression gate is skipped'

  pushed = _push(repo, tmp_path, model, True, 'pushed',
                 regression=_regression_blessing(tmp_path, True, reason))

  assert pushed.get_int_custom_property('pushed') == 1
  assert repo.releases('digits')[0].custom['regression_gate'] == {'blessed': 1, 'reason': reason}
  assert repo.releases('digits')[0].custom['gated_by'] == {
      'model_blessing': str(tmp_path / 'blessing'),
      'regression_blessing': str(tmp_path / 'regression_blessing'), 'regression_status': ''}


def test_ota_pusher_does_not_publish_again_a_model_that_was_halted(repo, tmp_path, tflite_models):
  model = tflite_model_artifact(tmp_path / 'model', tflite_models['int8'])
  _push(repo, tmp_path, model, True, 'pushed')
  repo.halt('digits', 1, by='oncall')

  rerun = _push(repo, tmp_path, model, True, 'rerun')

  assert rerun.get_int_custom_property('pushed') == 0
  assert rerun.get_string_custom_property(spec_keys.PROP_PUSH_REASON) == (
      'this model is already the latest release on canary, version 1, and it was halted: it is '
      'not published again')
  assert rerun.get_string_custom_property(spec_keys.PROP_RELEASE_STATE) == 'halted'
  assert [r.state for r in repo.releases('digits')] == ['halted']
