"""components.common.model_io: the files inside Model artifacts."""
import pytest
import tensorflow as tf
import tf_keras

from components import errors
from components.common import model_io
from tests.helpers import keras_model_artifact
from tests.helpers import small_model


def test_a_tflite_model_is_written_where_tfma_and_devices_read_it(tmp_path):
  uri = str(tmp_path / 'model')

  model_io.write_tflite(b'flatbuffer', uri)

  paths = model_io.tflite_paths(uri)
  assert paths == {'serving': f'{uri}/Format-Serving/tflite', 'plain': f'{uri}/model.tflite'}
  for path in paths.values():
    with open(path, 'rb') as f:
      assert f.read() == b'flatbuffer'
  assert model_io.read_tflite(uri, 'DeviceBenchmarker') == b'flatbuffer'


def test_reading_an_artifact_without_a_tflite_model_names_the_reader_and_the_fix(tmp_path):
  with pytest.raises(errors.ModelLoadError) as raised:
    model_io.read_tflite(str(tmp_path), 'OTAPusher')

  assert str(raised.value) == (f'OTAPusher: model artifact {tmp_path} has no model.tflite; give '
                               'it a PTQConverter output.')


def test_a_saved_model_reloads_as_the_same_keras_model_and_serves_tf_examples(tmp_path,
                                                                               digits_records):
  model = small_model()
  artifact = keras_model_artifact(model, tmp_path / 'model')

  reloaded = model_io.load_keras_model(artifact.uri)

  assert [layer.name for layer in reloaded.layers] == [layer.name for layer in model.layers]
  for ours, theirs in zip(model.get_weights(), reloaded.get_weights()):
    assert (ours == theirs).all()
  serve = tf.saved_model.load(model_io.serving_model_dir(artifact.uri)).signatures[
      'serving_default']
  outputs = serve(examples=tf.constant(digits_records[:3]))['outputs']
  assert outputs.shape == (3, 10)


def test_the_parsing_spec_follows_the_model_inputs():
  inputs = [tf_keras.Input((4,), name='floats'), tf_keras.Input((2,), name='ids', dtype='int32'),
            tf_keras.Input((1,), name='text', dtype='string')]
  model = tf_keras.Model(inputs, [tf_keras.layers.Dense(1)(inputs[0])])

  assert model_io.input_feature_spec(model) == {
      'floats': tf.io.FixedLenFeature([4], tf.float32),
      'ids': tf.io.FixedLenFeature([2], tf.int64),
      'text': tf.io.FixedLenFeature([1], tf.string)}


def test_an_input_of_unknown_size_cannot_be_calibrated():
  inputs = tf_keras.Input((None, 3), name='sequence')
  pooled = tf_keras.layers.GlobalAveragePooling1D()(inputs)
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(1)(pooled))

  with pytest.raises(errors.DataError, match=r"model input 'sequence' has shape \(None, None, 3\); "
                     'calibration needs every dimension but the batch dimension to be fixed'):
    model_io.input_feature_spec(model)


@pytest.mark.parametrize('units,expected', [(10, 10), (2, 2), (1, None)])
def test_num_classes_is_the_units_of_a_single_output_of_two_or_more(units, expected):
  inputs = tf_keras.Input((3,))
  assert model_io.num_classes(tf_keras.Model(inputs, tf_keras.layers.Dense(units)(inputs))) == (
      expected)
