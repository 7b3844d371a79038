"""int8_auto on a model with one quantization-hostile layer: exactly that layer stays float."""
import json

import numpy as np
import pytest
from sklearn import datasets
import tensorflow as tf
from tfx.types import standard_artifacts
import tf_keras

from components import PTQConverter
from components import spec_keys
from components.common import model_io
from components.common import tflite
from components.errors import ConfigError
from components.errors import ConversionError
from components.ptq_converter import auto
from components.ptq_converter import conversion
from tests.helpers import channel
from tests.helpers import keras_model_artifact
from tests.helpers import run_ptq


@tf_keras.saving.register_keras_serializable('tfx_edge_tests')
class Hostile(tf_keras.layers.Layer):
  """A Dense layer whose 0th unit is scaled by 1000 before tanh: in float the unit saturates
  harmlessly, but the per-tensor int8 scale of the Dense output, set by that unit, rounds the
  other units to zero, so plain int8 loses what the layer computes."""

  def build(self, input_shape):
    self.dense = tf_keras.layers.Dense(32)
    self.scale = tf.constant([1000.0] + [1.0] * 31)

  def call(self, x):
    return tf.tanh(self.dense(x) * self.scale)


@pytest.fixture(scope='module')
def digits_model():
  tf_keras.utils.set_random_seed(0)
  x, y = datasets.load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32)
  inputs = tf_keras.Input((64,), name='pixels')
  h = inputs
  for i in range(5):
    h = tf_keras.layers.Dense(32, activation='relu', name=f'before_{i}')(h)
  h = Hostile(name='hostile')(h)
  for i in range(5):
    h = tf_keras.layers.Dense(32, activation='relu', name=f'after_{i}')(h)
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(10, activation='softmax', name='head')(h))
  model.compile('adam', 'sparse_categorical_crossentropy')
  model.fit(x[:1400], y[:1400], epochs=80, batch_size=64, verbose=0)
  return model, x, y


def _accuracy(x, y):
  return lambda model: float(np.mean(np.argmax(auto.predictions(model, {'pixels': x}), -1) == y))


def _calibration(x):
  return lambda: ({'pixels': x[i:i + 1]} for i in range(0, 200, 2))


def test_int8_auto_keeps_exactly_the_hostile_layer_in_float(digits_model):
  model, x, y = digits_model
  evaluate = _accuracy(x[1400:], y[1400:])
  float_model = conversion.convert(model, 'float32')
  int8_model = conversion.convert(model, 'int8', _calibration(x))
  assert evaluate(float_model) > 0.85
  assert evaluate(int8_model) < evaluate(float_model) - 0.05  # plain int8 fails a 1-point gate

  result = auto.convert_auto(tf.lite.TFLiteConverter.from_keras_model(model), _calibration(x),
                             int8_model, float_model, evaluate, max_drop=0.01,
                             fallback_budget=0.1,
                             layer_names=[layer.name for layer in model.layers])

  assert result.float_layers == ['hostile']
  assert result.layers >= 12 and len(result.float_layers) / result.layers < 0.1
  assert 'hostile' in list(result.layer_errors)[:3]  # the worst, or next to what it breaks
  assert result.accuracy['int8_auto'] >= result.accuracy['float32'] - 0.01
  assert evaluate(result.model) == result.accuracy['int8_auto']
  # The other layers are still int8: their weights are int8 tensors in the file.
  interpreter = tf.lite.Interpreter(model_content=result.model)
  int8_weights = [d['name'] for d in interpreter.get_tensor_details()
                  if d['dtype'] == np.int8 and 'after_3' in d['name']]
  assert int8_weights
  assert result.summary()['size_bytes']['int8_auto'] > result.summary()['size_bytes']['int8']


def test_a_budget_too_small_for_the_model_fails_with_the_figures(digits_model):
  model, x, y = digits_model
  evaluate = _accuracy(x[1400:], y[1400:])
  float_model = conversion.convert(model, 'float32')
  int8_model = conversion.convert(model, 'int8', _calibration(x))
  with pytest.raises(ConversionError, match=r'no choice of at most 1 of \d+ layers in float'):
    # A drop no model can meet: even the hostile layer in float is not enough.
    auto.convert_auto(tf.lite.TFLiteConverter.from_keras_model(model), _calibration(x),
                      int8_model, float_model, lambda m: evaluate(m) - 0.5 * (m != float_model),
                      max_drop=0.01, fallback_budget=0.05)


@pytest.mark.parametrize('max_drop,budget,message', [
    (0.01, 0, 'fallback_budget=0 is not accepted'),
    (0.01, 1.5, 'fallback_budget=1.5 is not accepted'),
    (0.01, -0.1, 'fallback_budget=-0.1 is not accepted'),
    (-1, 0.1, 'max_drop=-1 is not accepted'),
    (1, 0.1, 'max_drop=1 is not accepted'),
])
def test_bad_options_are_refused(max_drop, budget, message):
  with pytest.raises(ConfigError, match=message):
    auto.validate_options(max_drop, budget)


def test_the_ptq_converter_records_the_layers_int8_auto_kept_in_float(digits_model,
                                                                     digits_examples, tmp_path):
  model, _, _ = digits_model
  source = keras_model_artifact(model, tmp_path / 'model')

  tflite_artifact, _ = run_ptq(source, digits_examples, tmp_path / 'out', mode='int8_auto',
                               calibration_samples=100, label_key='label',
                               int8_auto=auto.AutoConfig(max_drop=0.01, fallback_budget=0.1))

  assert json.loads(tflite_artifact.get_string_custom_property(
      spec_keys.PROP_FLOAT_LAYERS)) == ['hostile']
  summary = json.loads(tflite_artifact.get_string_custom_property(spec_keys.PROP_INT8_AUTO))
  assert summary['metric'] == 'sparse_categorical_accuracy' and summary['eval_examples'] == 360
  assert summary['accuracy']['int8'] < summary['accuracy']['float32'] - 0.05
  assert summary['accuracy']['int8_auto'] >= summary['accuracy']['float32'] - 0.01
  assert summary['float_layer_errors']['hostile'] > 0
  written = model_io.read_tflite(tflite_artifact.uri, 'test')
  # Exactly the hostile layer's ops run in float: its Dense (with the scaling fused) and tanh.
  left_in_float = tflite.float_ops(written)
  assert [op.split()[0] for op in left_in_float] == ['FULLY_CONNECTED', 'TANH']
  assert all('/hostile/' in op for op in left_in_float), left_in_float
  assert tflite_artifact.get_string_custom_property(spec_keys.PROP_MODE) == 'int8_auto'


@pytest.mark.parametrize('kwargs,message', [
    (dict(mode='int8_auto', label_key=None), "needs label_key"),
    (dict(mode='int8_auto', examples=None), 'needs examples='),
    (dict(mode='int8', int8_auto=auto.AutoConfig()), "apply to mode='int8_auto' only"),
    (dict(mode='int8_auto', int8_auto={'max_drop': 0.01}), 'give an'),
    (dict(mode='int8_auto', inference_io='int8'), 'is not available for mode'),
])
def test_bad_int8_auto_options_fail_when_the_pipeline_is_built(kwargs, message):
  args = dict(model=channel(), examples=channel(standard_artifacts.Examples), label_key='label')
  args.update(kwargs)
  with pytest.raises(ConfigError, match=message):
    PTQConverter(**args)


def test_int8_auto_config_refuses_a_budget_outside_0_1():
  with pytest.raises(ConfigError, match='fallback_budget=1.2 is not accepted'):
    auto.AutoConfig(fallback_budget=1.2)
  with pytest.raises(ConfigError, match='eval_examples=0 is not accepted'):
    auto.AutoConfig(eval_examples=0)
