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
