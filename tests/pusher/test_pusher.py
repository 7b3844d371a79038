"""TFLitePusher: the versioned directory publisher, construction checks and push decisions."""
import concurrent.futures
import json
import os
import threading

import pytest
from tfx.types import standard_artifacts

from components import TFLitePusher
from components import errors
from components import spec_keys
from components.pusher import executor as pusher_executor
from components.pusher import publisher as publisher_lib
from tests.helpers import blessing_artifact
from tests.helpers import channel
from tests.helpers import evaluation_with_failure
from tests.helpers import read_json
from tests.helpers import tflite_model_artifact


def test_versions_go_up_and_each_holds_model_and_metadata(tmp_path):
  pub = publisher_lib.VersionedDirectoryPublisher(str(tmp_path))

  first = pub.publish('digits', b'model-1', {'mode': 'int8'})
  second = pub.publish('digits', b'model-2', {'mode': 'int8'})

  assert (first.version, second.version) == (1, 2)
  assert first.created and second.created
  with open(os.path.join(second.uri, 'model.tflite'), 'rb') as f:
    assert f.read() == b'model-2'
  with open(os.path.join(second.uri, 'metadata.json')) as f:
    meta = json.load(f)
  assert meta['version'] == 2 and meta['mode'] == 'int8' and meta['size_bytes'] == 7
  assert oct(os.stat(second.uri).st_mode & 0o777) == '0o755'


def test_publishing_the_latest_bytes_again_creates_no_version(tmp_path):
  pub = publisher_lib.VersionedDirectoryPublisher(str(tmp_path))
  pub.publish('digits', b'model-1', {})

  again = pub.publish('digits', b'model-1', {})

  assert (again.version, again.created) == (1, False)
  assert sorted(pub.versions('digits')) == [1]


def test_concurrent_publishes_never_share_or_lose_a_version(tmp_path):
  pub = publisher_lib.VersionedDirectoryPublisher(str(tmp_path))
  barrier = threading.Barrier(8)

  def publish(i):
    barrier.wait()
    return pub.publish('digits', f'model-{i}'.encode(), {})

  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    results = list(pool.map(publish, range(8)))

  assert sorted(r.version for r in results) == list(range(1, 9))
  contents = set()
  for version, path in pub.versions('digits').items():
    with open(os.path.join(path, 'model.tflite'), 'rb') as f:
      contents.add(f.read())
  assert contents == {f'model-{i}'.encode() for i in range(8)}


def test_a_crashed_publish_leaves_only_a_staging_dir_that_is_ignored(tmp_path):
  pub = publisher_lib.VersionedDirectoryPublisher(str(tmp_path))
  pub.publish('digits', b'model-1', {})
  # What a publish killed before its rename leaves behind.
  os.makedirs(tmp_path / 'digits' / '.staging-dead')
  (tmp_path / 'digits' / '.staging-dead' / 'model.tflite').write_bytes(b'half')

  result = pub.publish('digits', b'model-2', {})

  assert (result.version, result.created) == (2, True)
  assert sorted(pub.versions('digits')) == [1, 2]
  assert (tmp_path / 'digits' / '00000002' / 'model.tflite').read_bytes() == b'model-2'


@pytest.mark.parametrize('name', ['../escape', 'a/b', '', '.hidden', 'x' * 129, '..'])
def test_model_names_that_could_escape_the_destination_are_rejected(tmp_path, name):
  with pytest.raises(errors.ConfigError, match='model_name=.* is not accepted'):
    publisher_lib.VersionedDirectoryPublisher(str(tmp_path)).publish(name, b'm', {})

  assert os.listdir(tmp_path) == []


def _channels():
  return dict(model=channel(), model_blessing=channel(standard_artifacts.ModelBlessing))


@pytest.mark.parametrize('kwargs,message', [
    (dict(model_name='../x'), "model_name='../x' is not accepted"),
    (dict(push_destination='gs://bucket/models'), "push_destination='gs://bucket/models': the "
     'versioned directory publisher writes to a local path'),
    (dict(push_destination=''), "push_destination='' is not accepted; it must name a directory"),
    (dict(allowed_modes=['int9']), "allowed_modes contains 'int9', which is not a PTQ mode"),
    (dict(allowed_modes='int8'), "allowed_modes='int8' must be a non-empty list"),
])
def test_pusher_bad_parameters_fail_when_the_pipeline_is_built(tmp_path, kwargs, message):
  args = dict(_channels(), push_destination=str(tmp_path), model_name='digits')
  args.update(kwargs)

  with pytest.raises(errors.ConfigError, match=message.replace('(', r'\(')):
    TFLitePusher(**args)


def _model(tmp_path, mode='int8', payload=b'tflite-bytes'):
  return tflite_model_artifact(tmp_path / f'model_{mode}', payload, mode)


def _blessing(tmp_path, model, blessed):
  return blessing_artifact(tmp_path / 'blessing', model, blessed)


def _push(tmp_path, model, blessing, evaluation=None, allowed_modes=('int8',), regression=None):
  pushed = standard_artifacts.PushedModel()
  pushed.uri = str(tmp_path / 'pushed')
  inputs = {spec_keys.MODEL_KEY: [model], spec_keys.MODEL_BLESSING_KEY: [blessing]}
  if evaluation is not None:
    inputs[spec_keys.EVALUATION_KEY] = [evaluation]
  if regression is not None:
    inputs[spec_keys.REGRESSION_BLESSING_KEY] = [regression]
  pusher_executor.Executor().Do(
      inputs, {spec_keys.PUSHED_MODEL_KEY: [pushed]}, {
          spec_keys.PUSH_DESTINATION_KEY: str(tmp_path / 'dest'),
          spec_keys.MODEL_NAME_KEY: 'digits',
          spec_keys.ALLOWED_MODES_KEY: json.dumps(list(allowed_modes)),
      })
  return pushed


def test_blessed_int8_model_is_pushed_with_version_and_destination(tmp_path):
  model = _model(tmp_path)

  pushed = _push(tmp_path, model, _blessing(tmp_path, model, True))

  assert pushed.get_int_custom_property('pushed') == 1
  # A string, as the standard TFX Pusher writes it.
  assert pushed.get_string_custom_property('pushed_version') == '1'
  assert pushed.get_string_custom_property(spec_keys.PROP_PUSH_REASON) == 'pushed'
  destination = pushed.get_string_custom_property('pushed_destination')
  assert destination == str(tmp_path / 'dest' / 'digits' / '00000001')
  with open(os.path.join(destination, 'model.tflite'), 'rb') as f:
    assert f.read() == b'tflite-bytes'
  metadata = read_json(os.path.join(destination, 'metadata.json'))
  assert (metadata['mode'], metadata['source_model_uri'], metadata['version']) == (
      'int8', model.uri, 1)
  assert metadata['input_dtypes'] == {'pixels': 'int8'}


def test_pushing_the_same_model_again_records_the_existing_version(tmp_path):
  model = _model(tmp_path)
  _push(tmp_path, model, _blessing(tmp_path, model, True))

  again = _push(tmp_path, model, _blessing(tmp_path, model, True))

  assert again.get_int_custom_property('pushed') == 1
  assert again.get_string_custom_property('pushed_version') == '1'
  assert again.get_string_custom_property(spec_keys.PROP_PUSH_REASON) == (
      'same model already latest')
  assert os.listdir(tmp_path / 'dest' / 'digits') == ['00000001']


def test_not_blessed_model_is_not_pushed_and_the_failed_threshold_is_logged(tmp_path, caplog):
  model = _model(tmp_path)

  with caplog.at_level('WARNING'):
    pushed = _push(tmp_path, model, _blessing(tmp_path, model, False),
                   evaluation_with_failure(tmp_path / 'evaluation'))

  assert pushed.get_int_custom_property('pushed') == 0
  reason = pushed.get_string_custom_property(spec_keys.PROP_PUSH_REASON)
  assert reason == ('model is NOT_BLESSED by the Evaluator: sparse_categorical_accuracy value = '
                    '+0.9000 fails the bound >= 0.9900 (model candidate)')
  assert f'TFLitePusher: NOT pushing {model.uri}: {reason}' in caplog.text
  assert not os.path.exists(tmp_path / 'dest' / 'digits')


def test_blessed_model_of_a_mode_not_allowed_is_not_pushed(tmp_path):
  model = _model(tmp_path, mode='float32')

  pushed = _push(tmp_path, model, _blessing(tmp_path, model, True))

  assert pushed.get_int_custom_property('pushed') == 0
  assert pushed.get_string_custom_property(spec_keys.PROP_PUSH_REASON) == (
      "model mode 'float32' is not in allowed_modes ['int8']")
  assert not os.path.exists(tmp_path / 'dest' / 'digits')


def test_a_blessing_for_another_model_does_not_push(tmp_path):
  model = _model(tmp_path)
  other = _model(tmp_path, mode='dynamic_range')
  blessing = _blessing(tmp_path, other, True)

  pushed = _push(tmp_path, model, blessing)

  assert pushed.get_int_custom_property('pushed') == 0
  assert pushed.get_string_custom_property(spec_keys.PROP_PUSH_REASON) == (
      f'the blessing {blessing.uri} is for model {other.uri}, not for {model.uri}; wire the '
      'Evaluator that evaluated this model.')
  assert not os.path.exists(tmp_path / 'dest' / 'digits')


def _regression_blessing(tmp_path, blessed, reason):
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = str(tmp_path / 'regression_blessing')
  blessing.set_int_custom_property(spec_keys.PROP_BLESSED, int(blessed))
  blessing.set_string_custom_property(spec_keys.PROP_REASON, reason)
  return blessing


def test_a_model_the_regression_gate_did_not_bless_is_not_pushed(tmp_path):
  model = _model(tmp_path)
  reason = 'sparse_categorical_accuracy dropped from 0.9600 (released) to 0.9100'

  refused = _push(tmp_path, model, _blessing(tmp_path, model, True),
                  regression=_regression_blessing(tmp_path, False, reason))

  assert refused.get_int_custom_property('pushed') == 0
  assert refused.get_string_custom_property(spec_keys.PROP_PUSH_REASON) == reason
  assert not os.path.exists(tmp_path / 'dest' / 'digits')


def test_a_regression_blessing_of_another_model_is_refused(tmp_path):
  model, other = _model(tmp_path), _model(tmp_path / 'other')
  regression = _regression_blessing(tmp_path, True, 'passed')
  regression.set_string_custom_property('current_model', other.uri)

  refused = _push(tmp_path, model, _blessing(tmp_path, model, True), regression=regression)

  assert refused.get_int_custom_property('pushed') == 0
  assert refused.get_string_custom_property(spec_keys.PROP_PUSH_REASON) == (
      f'the regression blessing {regression.uri} is for model {other.uri}, not for {model.uri}; '
      'wire the RegressionGate that compared this model.')


def test_a_model_the_regression_gate_blessed_is_pushed_with_its_reason(tmp_path):
  model = _model(tmp_path)

  pushed = _push(tmp_path, model, _blessing(tmp_path, model, True),
                 regression=_regression_blessing(tmp_path, True, 'nothing released yet'))

  assert pushed.get_int_custom_property('pushed') == 1
  metadata = read_json(os.path.join(pushed.get_string_custom_property('pushed_destination'),
                                    'metadata.json'))
  assert metadata['regression_gate'] == {'blessed': 1, 'reason': 'nothing released yet'}


def test_the_pusher_takes_an_optional_regression_blessing_channel(tmp_path):
  wired = TFLitePusher(**_channels(), push_destination=str(tmp_path), model_name='digits',
                       regression_blessing=channel(standard_artifacts.ModelBlessing))
  unwired = TFLitePusher(**_channels(), push_destination=str(tmp_path), model_name='digits')

  assert spec_keys.REGRESSION_BLESSING_KEY in wired.inputs
  assert spec_keys.REGRESSION_BLESSING_KEY not in unwired.inputs
