"""PTQConverter: construction-time validation and the executor on real artifacts."""
import json
import os

import pytest
from tfx import types
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from components import PTQConverter
from components import spec_keys
from components.common import tflite as tflite_lib
from components.ptq_converter import calibration
from components.ptq_converter import executor as ptq_executor


def _channel(artifact_type):
  return types.Channel(type=artifact_type)


@pytest.mark.parametrize('kwargs,message', [
    (dict(mode='int4'), "mode='int4' is not a PTQ mode"),
    (dict(mode='float16', inference_io='int8'), "inference_io='int8' is not available"),
    (dict(calibration_samples=0), 'calibration_samples=0 is not accepted; it must be a positive'),
    (dict(calibration_samples=-5), 'calibration_samples=-5'),
    (dict(calibration_samples=2.5), 'calibration_samples=2.5'),
    (dict(calibration_split=''), "calibration_split='' must name a split"),
    (dict(label_key=''), "label_key='' must be a feature name"),
    (dict(mode='int8', examples=None), "mode='int8' calibrates activation ranges and needs "
     'examples='),
])
def test_bad_parameters_fail_when_the_pipeline_is_built(kwargs, message):
  args = dict(model=_channel(standard_artifacts.Model),
              examples=_channel(standard_artifacts.Examples))
  args.update(kwargs)

  with pytest.raises(ValueError, match=message.replace('(', r'\(')):
    PTQConverter(**args)


def test_float32_needs_no_examples():
  component = PTQConverter(model=_channel(standard_artifacts.Model), mode='float32')

  assert component.exec_properties[spec_keys.MODE_KEY] == 'float32'


def _run(model_artifact, examples, tmp_path, **exec_properties):
  tflite = standard_artifacts.Model()
  tflite.uri = str(tmp_path / 'tflite')
  calib = standard_artifacts.Examples()
  calib.uri = str(tmp_path / 'calibration')
  props = {
      spec_keys.MODE_KEY: 'int8',
      spec_keys.INFERENCE_IO_KEY: 'native',
      spec_keys.CALIBRATION_SPLIT_KEY: 'train',
      spec_keys.CALIBRATION_SAMPLES_KEY: 300,
      spec_keys.LABEL_KEY: 'label',
      spec_keys.SEED_KEY: 0,
  }
  props.update(exec_properties)
  inputs = {spec_keys.MODEL_KEY: [model_artifact]}
  if examples is not None:
    inputs[spec_keys.EXAMPLES_KEY] = [examples]
  ptq_executor.Executor().Do(inputs, {spec_keys.TFLITE_MODEL_KEY: [tflite],
                                      spec_keys.CALIBRATION_KEY: [calib]}, props)
  return tflite, calib


def test_int8_executor_writes_model_calibration_and_properties(trained_model_artifact,
                                                               digits_examples, tmp_path):
  tflite, calib = _run(trained_model_artifact, digits_examples, tmp_path)

  with open(os.path.join(tflite.uri, 'Format-Serving', 'tflite'), 'rb') as f:
    served = f.read()
  with open(os.path.join(tflite.uri, 'model.tflite'), 'rb') as f:
    assert f.read() == served
  assert tflite.get_string_custom_property(spec_keys.PROP_MODE) == 'int8'
  assert tflite.get_int_custom_property(spec_keys.PROP_SIZE_BYTES) == len(served)
  assert json.loads(tflite.get_string_custom_property(spec_keys.PROP_INPUT_DTYPES)) == {
      'serving_default_pixels:0': 'int8'}
  assert json.loads(tflite.get_string_custom_property(spec_keys.PROP_OUTPUT_DTYPES)) == {
      'StatefulPartitionedCall:0': 'int8'}
  # The calibration artifact is a readable Examples split whose fingerprint is recorded.
  assert artifact_utils.decode_split_names(calib.split_names) == ['calibration']
  records = calibration.read_records(
      os.path.join(artifact_utils.get_split_uri([calib], 'calibration'), '*'))
  count, digest = calibration.fingerprint(records)
  assert count == 300
  assert tflite.get_int_custom_property(spec_keys.PROP_CALIBRATION_COUNT) == 300
  assert tflite.get_string_custom_property(spec_keys.PROP_CALIBRATION_SHA256) == digest
  assert calib.get_string_custom_property(spec_keys.PROP_CALIBRATION_SHA256) == digest
  assert set(tflite_lib.tensor_dtypes(served).values()) <= {'int8', 'int32'}


def test_float32_executor_samples_nothing(trained_model_artifact, tmp_path):
  tflite, calib = _run(trained_model_artifact, None, tmp_path, **{spec_keys.MODE_KEY: 'float32'})

  assert tflite.get_int_custom_property(spec_keys.PROP_CALIBRATION_COUNT) == 0
  assert artifact_utils.decode_split_names(calib.split_names) == []
  assert json.loads(tflite.get_string_custom_property(spec_keys.PROP_INPUT_DTYPES)) == {
      'serving_default_pixels:0': 'float32'}


def test_fewer_examples_than_requested_warns_and_uses_them_all(trained_model_artifact,
                                                               digits_records, tmp_path):
  from tests.conftest import write_examples  # pylint: disable=g-import-not-at-top
  small = write_examples(str(tmp_path / 'small'), {'train': digits_records[:50]})

  tflite, _ = _run(trained_model_artifact, small, tmp_path)

  assert tflite.get_int_custom_property(spec_keys.PROP_CALIBRATION_COUNT) == 50


@pytest.mark.parametrize('n_records,message', [
    (0, r"split 'train' \(calibration_split\) is empty"),
    (3, "split 'train': 3 examples, fewer than the 10"),
])
def test_too_few_calibration_examples_fail_with_the_artifact_named(trained_model_artifact,
                                                                   digits_records, tmp_path,
                                                                   n_records, message):
  from tests.conftest import write_examples  # pylint: disable=g-import-not-at-top
  tiny = write_examples(str(tmp_path / 'tiny'), {'train': digits_records[:n_records]})

  with pytest.raises(ValueError, match=message):
    _run(trained_model_artifact, tiny, tmp_path)


def test_unknown_calibration_split_is_named(trained_model_artifact, digits_examples, tmp_path):
  with pytest.raises(ValueError, match=r"has no split 'test' \(calibration_split\); its splits "
                     r"are \['train', 'eval'\]"):
    _run(trained_model_artifact, digits_examples, tmp_path,
         **{spec_keys.CALIBRATION_SPLIT_KEY: 'test'})


def test_missing_saved_model_is_named(digits_examples, tmp_path):
  empty = standard_artifacts.Model()
  empty.uri = str(tmp_path / 'empty_model')

  with pytest.raises(ValueError, match='no SavedModel at .*expected saved_model.pb'):
    _run(empty, digits_examples, tmp_path)
