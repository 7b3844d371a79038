"""benchmarks/tflite_anatomy.py: distinct int8 values counted per quantization channel."""
import numpy as np
import tf_keras

from benchmarks import tflite_anatomy
from components.common import modes
from components.ptq_converter import calibration
from components.ptq_converter import conversion


def _two_values_per_channel_at_different_scales():
  """A 1x1 conv kernel whose output channel c holds two values, s_c * {-1, r_c}: s, r differ.

  A conv, not a dense layer: the converter gives conv kernels one scale per output channel and
  dense kernels one per tensor.
  """
  tf_keras.utils.set_random_seed(0)
  inputs = tf_keras.Input((4, 4, 16), name='x')
  model = tf_keras.Model(inputs, tf_keras.layers.Conv2D(8, 1, name='conv')(inputs))
  negative = np.random.default_rng(0).random((1, 1, 16, 8)) < 0.5
  scales, ratios = np.linspace(0.1, 0.8, 8), np.linspace(0.2, 0.9, 8)
  kernel = np.where(negative, -scales, ratios * scales).astype(np.float32)
  model.get_layer('conv').set_weights([kernel, np.zeros(8, np.float32)])
  return model


def test_per_channel_scales_count_the_values_of_each_channel_not_of_the_tensor():
  model = _two_values_per_channel_at_different_scales()
  representative = calibration.representative_dataset(
      {'x': np.random.default_rng(1).normal(size=(20, 4, 4, 16)).astype(np.float32)})

  per_channel = tflite_anatomy.anatomy(conversion.convert(model, modes.INT8, representative))
  per_tensor = tflite_anatomy.anatomy(conversion.convert(model, modes.INT8, representative,
                                                         per_tensor_weights=True))

  # Per channel, channel c's scale maps its pair to -127 and 127 * r_c: two values in each
  # channel, nine in the tensor. One scale for the whole tensor maps the pairs to sixteen.
  assert per_channel['per_channel_tensors'] >= 1
  assert per_channel['int8_weights']['distinct_per_channel_max'] == 2
  assert per_channel['int8_weights']['distinct_per_tensor_max'] == 9
  assert per_tensor['int8_weights']['distinct_per_channel_max'] == 16
  assert per_tensor['int8_weights']['distinct_per_tensor_max'] == 16


def test_entropy_counts_the_values_of_any_dtype():
  # Four equally used values take 2 bits; one value in eight of a float kernel's takes fewer.
  assert tflite_anatomy.entropy_bits(np.array([-3, -1, 1, 3] * 5, np.int8)) == 2.0
  kernel = np.array([0.25] * 7 + [-0.5], np.float32)
  p = np.array([7 / 8, 1 / 8])
  assert tflite_anatomy.entropy_bits(kernel) == float(-(p * np.log2(p)).sum())
