"""PTQConverter: construction-time validation and the executor on real artifacts."""
import hashlib
import json
import os

import pytest
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from components import PTQConverter
from components import errors
from components import spec_keys
from components.common import examples_io
from components.common import model_io
from components.common import tflite as tflite_lib
from components.ptq_converter import calibration
from tests.conftest import write_examples
from tests.helpers import channel
from tests.helpers import run_ptq


@pytest.mark.parametrize('kwargs,message', [
    (dict(mode='int4'), "mode='int4' is not a PTQ mode; accepted: float32, dynamic_range"),
    (dict(mode='float16', inference_io='int8'), "inference_io='int8' is not available for "
     "mode='float16'"),
    (dict(calibration_samples=0), 'calibration_samples=0 is not accepted; it must be a positive '
     'integer'),
    (dict(calibration_samples=-5), 'calibration_samples=-5 is not accepted'),
    (dict(calibration_samples=2.5), 'calibration_samples=2.5 is not accepted'),
    (dict(calibration_samples=True), 'calibration_samples=True is not accepted'),
    (dict(calibration_split=''), "calibration_split='' is not accepted; it must name a split of "
     'examples'),
    (dict(label_key=''), "label_key='' is not accepted; it must name a feature"),
    (dict(mode='int8', examples=None), "mode='int8' calibrates activation ranges and needs "
     'examples='),
])
def test_bad_parameters_fail_when_the_pipeline_is_built(kwargs, message):
  args = dict(model=channel(), examples=channel(standard_artifacts.Examples))
  args.update(kwargs)

  with pytest.raises(errors.ConfigError, match=message.replace('(', r'\(')):
    PTQConverter(**args)


def test_float32_needs_no_examples():
  component = PTQConverter(model=channel(), mode='float32')

  # The examples channel is optional in the spec, so no upstream step is wired for it; both
  # outputs are still declared (calibration stays empty, see the executor test below).
  assert set(component.inputs) == {spec_keys.MODEL_KEY}
  assert set(component.outputs) == {spec_keys.TFLITE_MODEL_KEY, spec_keys.CALIBRATION_KEY}
  assert component.exec_properties[spec_keys.MODE_KEY] == 'float32'


def test_int8_executor_writes_model_calibration_and_properties(trained_model_artifact,
                                                               digits_examples, tmp_path):
  tflite, calib = run_ptq(trained_model_artifact, digits_examples, tmp_path,
                          calibration_samples=300)

  with open(os.path.join(tflite.uri, 'Format-Serving', 'tflite'), 'rb') as f:
    served = f.read()
  with open(os.path.join(tflite.uri, 'model.tflite'), 'rb') as f:
    assert f.read() == served
  assert tflite.get_string_custom_property(spec_keys.PROP_MODE) == 'int8'
  assert tflite.get_string_custom_property(spec_keys.PROP_INFERENCE_IO) == 'native'
  assert tflite.get_int_custom_property(spec_keys.PROP_SIZE_BYTES) == len(served)
  assert tflite.get_int_custom_property(spec_keys.PROP_GZIP_SIZE_BYTES) == tflite_lib.gzip_size(
      served) < len(served)
  assert json.loads(tflite.get_string_custom_property(spec_keys.PROP_INPUT_DTYPES)) == {
      'serving_default_pixels:0': 'int8'}
  assert json.loads(tflite.get_string_custom_property(spec_keys.PROP_OUTPUT_DTYPES)) == {
      'StatefulPartitionedCall:0': 'int8'}
  # The calibration artifact is a readable Examples split whose fingerprint is recorded.
  assert artifact_utils.decode_split_names(calib.split_names) == ['calibration']
  records = examples_io.read_records(
      os.path.join(artifact_utils.get_split_uri([calib], 'calibration'), '*'))
  count, digest = calibration.fingerprint(records)
  assert count == 300
  assert tflite.get_int_custom_property(spec_keys.PROP_CALIBRATION_COUNT) == 300
  assert tflite.get_string_custom_property(spec_keys.PROP_CALIBRATION_SHA256) == digest
  assert calib.get_string_custom_property(spec_keys.PROP_CALIBRATION_SHA256) == digest
  assert set(tflite_lib.tensor_dtypes(served).values()) <= {'int8', 'int32'}


@pytest.mark.parametrize('mode', ['int8', 'float32'])
def test_the_model_sha256_is_that_of_the_written_model_tflite(trained_model_artifact,
                                                              digits_examples, tmp_path, mode):
  tflite, _ = run_ptq(trained_model_artifact, digits_examples if mode == 'int8' else None,
                      tmp_path, mode=mode)

  paths = model_io.tflite_paths(tflite.uri)
  with open(paths['plain'], 'rb') as f:
    written = f.read()
  with open(paths['serving'], 'rb') as f:
    evaluated = f.read()
  recorded = tflite.get_string_custom_property(spec_keys.PROP_MODEL_SHA256)
  assert recorded == hashlib.sha256(written).hexdigest()
  assert len(recorded) == 64 and written
  # The same bytes as those TFMA evaluates, so a device checks exactly what was gated.
  assert hashlib.sha256(evaluated).hexdigest() == recorded


def test_float32_executor_samples_nothing(trained_model_artifact, tmp_path):
  tflite, calib = run_ptq(trained_model_artifact, None, tmp_path, mode='float32')

  assert tflite.get_int_custom_property(spec_keys.PROP_CALIBRATION_COUNT) == 0
  assert tflite.get_string_custom_property(spec_keys.PROP_CALIBRATION_SHA256) == ''
  assert artifact_utils.decode_split_names(calib.split_names) == []
  assert json.loads(tflite.get_string_custom_property(spec_keys.PROP_INPUT_DTYPES)) == {
      'serving_default_pixels:0': 'float32'}


def test_fewer_examples_than_requested_warns_and_uses_them_all(trained_model_artifact,
                                                               digits_records, tmp_path, caplog):
  small = write_examples(str(tmp_path / 'small'), {'train': digits_records[:50]})

  with caplog.at_level('WARNING'):
    tflite, calib = run_ptq(trained_model_artifact, small, tmp_path / 'ptq',
                            calibration_samples=300)

  assert tflite.get_int_custom_property(spec_keys.PROP_CALIBRATION_COUNT) == 50
  records = examples_io.read_records(
      os.path.join(artifact_utils.get_split_uri([calib], 'calibration'), '*'))
  assert sorted(records) == sorted(digits_records[:50])
  warnings = [r.getMessage() for r in caplog.records
              if r.levelname == 'WARNING' and r.getMessage().startswith('PTQConverter')]
  assert warnings == [
      f"PTQConverter: split 'train' of {small.uri} holds only 50 examples, fewer than "
      'calibration_samples=300; calibrating on all of them.']


@pytest.mark.parametrize('n_records,message', [
    (0, r"split 'train' \(calibration_split\) is empty"),
    (3, "split 'train': 3 examples, fewer than the 10 that calibration needs at least"),
])
def test_too_few_calibration_examples_fail_with_the_artifact_named(trained_model_artifact,
                                                                   digits_records, tmp_path,
                                                                   n_records, message):
  tiny = write_examples(str(tmp_path / 'tiny'), {'train': digits_records[:n_records]})

  with pytest.raises(errors.DataError, match=f'Examples artifact {tiny.uri}.*{message}'):
    run_ptq(trained_model_artifact, tiny, tmp_path / 'ptq', calibration_samples=300)

  assert not os.path.exists(tmp_path / 'ptq' / 'tflite')


def test_unknown_calibration_split_is_named(trained_model_artifact, digits_examples, tmp_path):
  with pytest.raises(errors.DataError, match=r"has no split 'test' \(calibration_split\); its "
                     r"splits are \['train', 'eval'\]"):
    run_ptq(trained_model_artifact, digits_examples, tmp_path, calibration_split='test')


def test_missing_saved_model_is_named(digits_examples, tmp_path):
  empty = standard_artifacts.Model()
  empty.uri = str(tmp_path / 'empty_model')

  with pytest.raises(errors.ModelLoadError, match=f'Model artifact {empty.uri}: no SavedModel at '
                     r'.*Format-Serving \(expected saved_model.pb\)'):
    run_ptq(empty, digits_examples, tmp_path / 'ptq')

  assert not os.path.exists(tmp_path / 'ptq')
