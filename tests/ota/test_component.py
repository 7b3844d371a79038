"""OTAPusher: construction checks, and its executor publishing a blessed model into the repo."""
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


@pytest.fixture
def repo(tmp_path):
  ota = repository.OTARepository(str(tmp_path / 'repo'), str(tmp_path / 'keys'))
  ota.init()
  return ota


def _push(repo, tmp_path, model, blessed, name):
  pushed = standard_artifacts.PushedModel()
  pushed.uri = str(tmp_path / name)
  component = OTAPusher(**_channels(), repository_dir=repo.repo_dir,
                        keys_dir=repo._keys_dir, model_name='digits', channel='canary')  # pylint: disable=protected-access
  ota_executor.Executor().Do(
      {spec_keys.MODEL_KEY: [model],
       spec_keys.MODEL_BLESSING_KEY: [blessing_artifact(tmp_path / 'blessing', model, blessed)]},
      {spec_keys.PUSHED_MODEL_KEY: [pushed]}, dict(component.exec_properties))
  return pushed


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
