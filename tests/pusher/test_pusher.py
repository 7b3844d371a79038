"""TFLitePusher: the versioned directory publisher, construction checks and push decisions."""
import concurrent.futures
import json
import os
import threading

import pytest
import tensorflow_model_analysis as tfma
from tfx import types
from tfx.types import standard_artifacts

from components import TFLitePusher
from components import spec_keys
from components.gate import accuracy_gate_config
from components.pusher import executor as pusher_executor
from components.pusher import publisher as publisher_lib
from tensorflow_model_analysis.proto import validation_result_pb2


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
  os.makedirs(tmp_path / 'digits' / '.staging-dead' )
  (tmp_path / 'digits' / '.staging-dead' / 'model.tflite').write_bytes(b'half')

  result = pub.publish('digits', b'model-2', {})

  assert result.version == 2
  assert sorted(pub.versions('digits')) == [1, 2]


@pytest.mark.parametrize('name', ['../escape', 'a/b', '', '.hidden', 'x' * 129, '..'])
def test_model_names_that_could_escape_the_destination_are_rejected(tmp_path, name):
  with pytest.raises(ValueError, match='model_name=.* is not accepted'):
    publisher_lib.VersionedDirectoryPublisher(str(tmp_path)).publish(name, b'm', {})


def _channels():
  return dict(model=types.Channel(type=standard_artifacts.Model),
              model_blessing=types.Channel(type=standard_artifacts.ModelBlessing))


@pytest.mark.parametrize('kwargs,message', [
    (dict(model_name='../x'), "model_name='../x' is not accepted"),
    (dict(push_destination='gs://bucket/models'), 'writes to a local path'),
    (dict(push_destination=''), "push_destination='' must be a directory"),
    (dict(allowed_modes=['int9']), "allowed_modes contains 'int9', which is not a PTQ mode"),
    (dict(allowed_modes='int8'), "allowed_modes='int8' must be a non-empty list"),
])
def test_pusher_bad_parameters_fail_when_the_pipeline_is_built(tmp_path, kwargs, message):
  args = dict(_channels(), push_destination=str(tmp_path), model_name='digits')
  args.update(kwargs)

  with pytest.raises(ValueError, match=message.replace('(', r'\(')):
    TFLitePusher(**args)


@pytest.mark.parametrize('kwargs,message', [
    (dict(min_accuracy=1.5), r'min_accuracy=1.5 is not accepted: accuracy thresholds lie in '
     r'\[0.0, 1.0\]'),
    (dict(min_accuracy=-0.1), 'min_accuracy=-0.1 is not accepted'),
    (dict(max_accuracy_drop=1.0), r'max_accuracy_drop=1.0 is not accepted.*\[0.0, 1.0\)'),
    (dict(max_accuracy_drop=float('nan')), 'max_accuracy_drop=nan is not accepted'),
    (dict(label_key=''), "label_key='' must name the label feature"),
])
def test_gate_thresholds_that_could_never_decide_are_rejected(kwargs, message):
  args = dict(label_key='label')
  args.update(kwargs)

  with pytest.raises(ValueError, match=message):
    accuracy_gate_config(**args)


def test_gate_config_compares_two_tflite_models_with_both_thresholds():
  config = accuracy_gate_config('label', min_accuracy=0.9, max_accuracy_drop=0.02)

  assert [(m.name, m.model_type, m.is_baseline) for m in config.model_specs] == [
      ('candidate', 'tf_lite', False), ('baseline', 'tf_lite', True)]
  threshold = config.metrics_specs[0].metrics[1].threshold
  assert threshold.value_threshold.lower_bound.value == 0.9
  assert threshold.change_threshold.absolute.value == -0.02


def _model(tmp_path, mode='int8', payload=b'tflite-bytes'):
  model = standard_artifacts.Model()
  model.uri = str(tmp_path / f'model_{mode}')
  os.makedirs(model.uri, exist_ok=True)
  with open(os.path.join(model.uri, 'model.tflite'), 'wb') as f:
    f.write(payload)
  model.set_string_custom_property(spec_keys.PROP_MODE, mode)
  model.set_string_custom_property(spec_keys.PROP_INPUT_DTYPES, '{"in": "int8"}')
  model.set_string_custom_property(spec_keys.PROP_OUTPUT_DTYPES, '{"out": "int8"}')
  return model


def _blessing(tmp_path, model, blessed):
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = str(tmp_path / 'blessing')
  blessing.set_int_custom_property('blessed', int(blessed))
  blessing.set_string_custom_property('current_model', model.uri)
  return blessing


def _evaluation_with_failure(tmp_path):
  """A real TFMA validations file recording a failed value threshold."""
  evaluation = standard_artifacts.ModelEvaluation()
  evaluation.uri = str(tmp_path / 'evaluation')
  os.makedirs(evaluation.uri)
  result = validation_result_pb2.ValidationResult(validation_ok=False)
  failure = result.metric_validations_per_slice.add().failures.add()
  failure.metric_key.name = 'sparse_categorical_accuracy'
  failure.metric_key.model_name = 'candidate'
  failure.metric_threshold.value_threshold.lower_bound.value = 0.99
  failure.metric_value.double_value.value = 0.9
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.io.TFRecordWriter(os.path.join(evaluation.uri, 'validations.tfrecord')) as writer:
    writer.write(result.SerializeToString())
  assert not tfma.load_validation_result(evaluation.uri).validation_ok
  return evaluation


def _push(tmp_path, model, blessing, evaluation=None, allowed_modes=('int8',)):
  pushed = standard_artifacts.PushedModel()
  pushed.uri = str(tmp_path / 'pushed')
  inputs = {spec_keys.MODEL_KEY: [model], spec_keys.MODEL_BLESSING_KEY: [blessing]}
  if evaluation is not None:
    inputs[spec_keys.EVALUATION_KEY] = [evaluation]
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
  assert pushed.get_int_custom_property('pushed_version') == 1
  destination = pushed.get_string_custom_property('pushed_destination')
  with open(os.path.join(destination, 'model.tflite'), 'rb') as f:
    assert f.read() == b'tflite-bytes'


def test_not_blessed_model_is_not_pushed_and_the_failed_threshold_is_logged(tmp_path, caplog):
  model = _model(tmp_path)

  with caplog.at_level('WARNING'):
    pushed = _push(tmp_path, model, _blessing(tmp_path, model, False),
                   _evaluation_with_failure(tmp_path))

  assert pushed.get_int_custom_property('pushed') == 0
  reason = pushed.get_string_custom_property(spec_keys.PROP_PUSH_REASON)
  assert 'NOT_BLESSED' in reason
  assert 'sparse_categorical_accuracy value = +0.9000 fails the bound >= 0.9900' in reason
  assert reason in caplog.text
  assert not os.path.exists(tmp_path / 'dest' / 'digits')


def test_blessed_model_of_a_mode_not_allowed_is_not_pushed(tmp_path):
  model = _model(tmp_path, mode='float32')

  pushed = _push(tmp_path, model, _blessing(tmp_path, model, True))

  assert pushed.get_int_custom_property('pushed') == 0
  assert "mode 'float32' is not in allowed_modes ['int8']" in pushed.get_string_custom_property(
      spec_keys.PROP_PUSH_REASON)


def test_a_blessing_for_another_model_does_not_push(tmp_path):
  model = _model(tmp_path)
  other = _model(tmp_path, mode='dynamic_range')

  pushed = _push(tmp_path, model, _blessing(tmp_path, other, True))

  assert pushed.get_int_custom_property('pushed') == 0
  assert 'the blessing' in pushed.get_string_custom_property(spec_keys.PROP_PUSH_REASON)
