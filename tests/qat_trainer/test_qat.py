"""Quantization-aware training logic (components/qat_trainer/qat.py): schemes, layer plan."""
import pytest
import tf_keras

from components import errors
from components.common import tflite
from components.qat_trainer import qat
from tests.helpers import conv_model
from tests.helpers import fit_briefly
from tests.helpers import int8_of


@pytest.mark.parametrize('history,expected', [
    ([], 'default'),
    (['prune'], 'prune_preserve'),
    (['cluster'], 'cluster_preserve'),
    (['prune', 'cluster'], 'prune_cluster_preserve'),
])
def test_auto_scheme_follows_the_model_history(history, expected):
  assert qat.choose_scheme('auto', history) == expected
  assert qat.choose_scheme('default', history) == 'default'


def test_qat_model_converts_to_an_int8_only_model():
  model = fit_briefly(conv_model())
  quantized, floats = qat.plan(model, qat.QATConfig())

  qat_model = fit_briefly(qat.quantize(model, qat.QATConfig(), 'default', quantized))

  assert floats == []
  assert quantized == [layer.name for layer in model.layers[1:]]  # All but the InputLayer.
  dtypes = set(tflite.tensor_dtypes(int8_of(qat_model)).values())
  assert dtypes <= {'int8', 'int32'}


def _model_with_layer_norm():
  inputs = tf_keras.Input((64,), name='pixels')
  x = tf_keras.layers.Dense(16, name='dense_a')(inputs)
  x = tf_keras.layers.LayerNormalization(name='norm')(x)
  return tf_keras.Model(inputs, tf_keras.layers.Dense(4, name='head')(x))


def test_unsupported_layer_fails_before_training_with_its_name():
  with pytest.raises(errors.ConfigError, match="QAT: layer 'norm' of type LayerNormalization "
                     'cannot be quantized.*skip_layers.*allow_float_layers=True'):
    qat.plan(_model_with_layer_norm(), qat.QATConfig())


def test_unsupported_layer_is_left_float_when_allowed_or_skipped(caplog):
  with caplog.at_level('WARNING'):
    quantized, floats = qat.plan(_model_with_layer_norm(), qat.QATConfig(allow_float_layers=True))
  assert floats == ['norm'] and quantized == ['dense_a', 'head']
  assert "layer 'norm' (LayerNormalization) cannot be quantized" in caplog.text

  quantized, floats = qat.plan(_model_with_layer_norm(), qat.QATConfig(skip_layers='norm'))
  assert floats == ['norm'] and quantized == ['dense_a', 'head']


def test_unknown_qat_scheme_is_rejected():
  with pytest.raises(errors.ConfigError, match="scheme='pqat' is not a QAT scheme; accepted: auto"):
    qat.QATConfig(scheme='pqat')


def _mobilenet_block():
  """Conv-BN-ReLU6, DepthwiseConv-BN-ReLU6, Conv-BN, residual Add, global pooling, Dense."""
  tf_keras.utils.set_random_seed(0)
  inputs = tf_keras.Input((64,), name='pixels')
  x = tf_keras.layers.Reshape((8, 8, 1))(inputs)
  x = tf_keras.layers.Conv2D(8, 3, padding='same', use_bias=False, name='expand')(x)
  x = tf_keras.layers.BatchNormalization(name='expand_bn')(x)
  x = tf_keras.layers.ReLU(6., name='expand_relu')(x)
  y = tf_keras.layers.DepthwiseConv2D(3, padding='same', use_bias=False, name='depthwise')(x)
  y = tf_keras.layers.BatchNormalization(name='depthwise_bn')(y)
  y = tf_keras.layers.ReLU(6., name='depthwise_relu')(y)
  y = tf_keras.layers.Conv2D(8, 1, use_bias=False, name='project')(y)
  y = tf_keras.layers.BatchNormalization(name='project_bn')(y)
  x = tf_keras.layers.Add(name='residual')([x, y])
  x = tf_keras.layers.GlobalAveragePooling2D(name='pool')(x)
  return tf_keras.Model(inputs, tf_keras.layers.Dense(4, activation='softmax', name='head')(x))


@pytest.mark.e2e  # trains a MobileNetV2-style block with QAT: about 24 s.
def test_qat_folds_batchnorm_after_conv_and_depthwise_into_an_int8_only_model():
  model = fit_briefly(_mobilenet_block())
  quantized, floats = qat.plan(model, qat.QATConfig())

  qat_model = fit_briefly(qat.quantize(model, qat.QATConfig(), 'default', quantized))

  assert floats == []
  assert qat.folded_batchnorm(model, quantized) == [
      ['expand', 'expand_bn'], ['depthwise', 'depthwise_bn'], ['project', 'project_bn']]
  int8_model = int8_of(qat_model)
  assert tflite.float_ops(int8_model) == []
  assert set(tflite.tensor_dtypes(int8_model).values()) <= {'int8', 'int32'}
  op_names = [op['op_name'] for op in tflite.ops(int8_model)]
  # BatchNorm folded into the convs' weights: no MUL/ADD of its own, no requantization pairs.
  # (SHAPE, STRIDED_SLICE and PACK before it compute the Reshape's batch size, in int32.)
  assert op_names[op_names.index('RESHAPE'):] == [
      'RESHAPE', 'CONV_2D', 'DEPTHWISE_CONV_2D', 'CONV_2D', 'ADD', 'MEAN', 'FULLY_CONNECTED',
      'SOFTMAX'], op_names


def test_batchnorm_after_a_skipped_conv_stays_float_and_is_not_folded():
  model = _mobilenet_block()
  config = qat.QATConfig(skip_layers='^depthwise$', allow_float_layers=True)

  quantized, floats = qat.plan(model, config)

  assert floats == ['depthwise', 'depthwise_bn']
  assert ['depthwise', 'depthwise_bn'] not in qat.folded_batchnorm(model, quantized)


def test_batchnorm_of_a_model_that_reuses_layers_of_another_still_folds():
  # strip_pruning and strip_clustering clone a model keeping its unchanged layers, so each
  # BatchNormalization is called by both models (two inbound nodes); PCQAT after the Pruner in
  # one process saw that and refused 'bn_Conv1' of MobileNetV2.
  original = _mobilenet_block()
  model = tf_keras.models.clone_model(original, clone_function=lambda layer: layer)
  assert len(model.get_layer('expand_bn').inbound_nodes) == 2

  quantized, floats = qat.plan(model, qat.QATConfig())

  assert floats == []
  assert qat.folded_batchnorm(model, quantized) == [
      ['expand', 'expand_bn'], ['depthwise', 'depthwise_bn'], ['project', 'project_bn']]
