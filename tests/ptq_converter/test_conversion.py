"""Unit tests of the TFLite conversion logic: every mode yields the expected tensor dtypes."""
import numpy as np
import pytest
import tf_keras

from components import errors
from components.common import modes
from components.common import tflite
from components.clusterer import clustering
from components.ptq_converter import calibration
from components.ptq_converter import conversion
from tests.conftest import random_pixels


def _rep(n=32):
  return calibration.representative_dataset({'pixels': random_pixels(n)})


# mode, inference_io, expected input dtype, expected output dtype
IO_CASES = [
    ('float32', 'native', 'float32', 'float32'),
    ('dynamic_range', 'native', 'float32', 'float32'),
    ('float16', 'native', 'float32', 'float32'),
    ('int8', 'native', 'int8', 'int8'),
    ('int8', 'int8', 'int8', 'int8'),
    ('int8', 'float32', 'float32', 'float32'),
    ('int8_float_fallback', 'native', 'float32', 'float32'),
    ('int16x8', 'native', 'float32', 'float32'),
    ('int16x8', 'int16', 'int16', 'int16'),
]


@pytest.mark.parametrize('mode,inference_io,in_dtype,out_dtype', IO_CASES)
def test_every_mode_yields_the_expected_io_dtypes(tiny_model, mode, inference_io, in_dtype,
                                                  out_dtype):
  rep = _rep() if mode in modes.CALIBRATED_MODES else None

  tflite_model = conversion.convert(tiny_model, mode, rep, inference_io)

  details = tflite.io_details(tflite_model)
  assert [t.dtype for t in details['inputs']] == [in_dtype]
  assert [t.dtype for t in details['outputs']] == [out_dtype]
  assert details['inputs'][0].name == 'serving_default_pixels:0'


@pytest.mark.parametrize('mode,present,absent', [
    ('float32', {'float32'}, {'int8', 'float16', 'int16'}),
    ('dynamic_range', {'int8', 'float32'}, {'int16', 'float16'}),
    ('float16', {'float16', 'float32'}, {'int8', 'int16'}),
    ('int8_float_fallback', {'int8'}, {'int16', 'float16'}),
    ('int16x8', {'int16', 'int8'}, {'float16'}),
])
def test_every_mode_stores_weights_and_activations_in_its_types(tiny_model, mode, present,
                                                                absent):
  rep = _rep() if mode in modes.CALIBRATED_MODES else None

  dtypes = set(tflite.tensor_dtypes(conversion.convert(tiny_model, mode, rep)).values())

  assert present <= dtypes
  assert not absent & dtypes


def test_int8_native_io_model_has_no_float_tensor_at_all(tiny_model):
  tflite_model = conversion.convert(tiny_model, 'int8', _rep())

  dtypes = tflite.tensor_dtypes(tflite_model)

  # Weights and activations are int8, biases int32; nothing is left in float.
  assert set(dtypes.values()) <= {'int8', 'int32'}, dtypes
  assert 'int8' in dtypes.values()


def test_int8_float_io_keeps_float_only_at_the_model_boundary(tiny_model):
  tflite_model = conversion.convert(tiny_model, 'int8', _rep(), 'float32')

  dtypes = tflite.tensor_dtypes(tflite_model)

  floats = sorted(name for name, dtype in dtypes.items() if dtype == 'float32')
  io = tflite.io_details(tflite_model)
  assert floats == sorted([io['inputs'][0].name, io['outputs'][0].name])


def test_quantized_models_are_smaller_than_float32():
  tf_keras.utils.set_random_seed(0)
  inputs = tf_keras.Input((64,), name='pixels')
  outputs = tf_keras.layers.Dense(10)(tf_keras.layers.Dense(256, activation='relu')(inputs))
  model = tf_keras.Model(inputs, outputs)

  sizes = {m: len(conversion.convert(model, m,
                                     _rep() if m in modes.CALIBRATED_MODES else None))
           for m in ('float32', 'float16', 'dynamic_range', 'int8')}

  assert sizes['float16'] < 0.6 * sizes['float32']
  assert sizes['int8'] < 0.35 * sizes['float32']
  assert sizes['dynamic_range'] < 0.35 * sizes['float32']


def test_representative_data_is_fed_by_input_name_not_position():
  # Two inputs with ranges three orders of magnitude apart: if calibration fed them by
  # position after TFLite reordered the inputs, the scales would be swapped.
  small = tf_keras.Input((4,), name='small')
  large = tf_keras.Input((4,), name='large')
  # Separate branches: a Concatenate would force one shared scale on both inputs.
  merged = tf_keras.layers.Add()([tf_keras.layers.Dense(2)(small), tf_keras.layers.Dense(2)(large)])
  model = tf_keras.Model([small, large], merged)
  rng = np.random.default_rng(0)
  arrays = {
      'small': rng.random((64, 4), dtype=np.float32),
      'large': 1000.0 * rng.random((64, 4), dtype=np.float32),
  }

  tflite_model = conversion.convert(model, 'int8', calibration.representative_dataset(arrays))

  scales = {t.name: t.scale for t in tflite.io_details(tflite_model)['inputs']}
  assert scales['serving_default_small:0'] == pytest.approx(1 / 255, rel=0.05)
  assert scales['serving_default_large:0'] == pytest.approx(1000 / 255, rel=0.05)


@pytest.mark.parametrize('mode', sorted(modes.CALIBRATED_MODES - {modes.INT8_AUTO}))
def test_calibrated_mode_without_representative_data_is_rejected(tiny_model, mode):
  with pytest.raises(errors.ConfigError, match=f"mode='{mode}' needs representative_data "
                     r'\(calibration samples\)'):
    conversion.convert(tiny_model, mode, None)


def test_int8_auto_is_refused_by_convert_which_has_no_labelled_examples(tiny_model):
  with pytest.raises(errors.ConfigError, match="mode='int8_auto' chooses layers by measuring "
                     'accuracy on labelled examples: convert with .*convert_auto'):
    conversion.convert(tiny_model, modes.INT8_AUTO, lambda: [])


def test_per_tensor_weights_keep_a_clustered_kernel_at_k_int8_values():
  tf_keras.utils.set_random_seed(0)
  inputs = tf_keras.Input((8, 8, 1), name='pixels')
  x = tf_keras.layers.Conv2D(16, 3, name='conv')(inputs)
  x = tf_keras.layers.Flatten()(x)
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(10, name='head')(x))
  clustered = clustering.strip(clustering.cluster(
      model, clustering.ClusteringConfig(number_of_clusters=4), preserve_sparsity=False))
  pixels = random_pixels(32).reshape(-1, 8, 8, 1)

  def representative():
    return ({'pixels': pixels[i:i + 1]} for i in range(len(pixels)))

  per_channel = tflite.unique_int8_weights(
      conversion.convert(clustered, modes.INT8, representative))
  per_tensor = tflite.unique_int8_weights(
      conversion.convert(clustered, modes.INT8, representative, per_tensor_weights=True))

  conv = next(name for name in per_tensor if '/conv/' in name)
  assert 1 < per_tensor[conv] <= 4
  assert per_channel[conv] > 4  # one scale per channel maps the 4 values apart in each channel
