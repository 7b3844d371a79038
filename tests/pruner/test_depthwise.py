"""DepthwiseConv2D kernels pruned (unstructured and 2:4) on a small MobileNet-style model."""
import json

import numpy as np
import pytest
from tfx.types import standard_artifacts
import tf_keras

from components import Pruner
from components import spec_keys
from components.common import model_io
from components.common import tflite
from components.pruner import pruning
from tests.helpers import INPUT_FN
from tests.helpers import TINY
from tests.helpers import channel
from tests.helpers import int8_of
from tests.helpers import keras_model_artifact
from tests.helpers import prune_briefly
from tests.helpers import run_optimizer
from tests.helpers import run_ptq

DEPTHWISE = ('dw_1', 'dw_2')


def mobilenet_style(classes=4, seed=0):
  """Conv+BN+ReLU6 -> [DepthwiseConv+BN+ReLU6 -> 1x1 Conv+BN] + residual Add, twice -> GAP.

  Input `pixels` (64 floats, an 8x8 image) as conv_model's and the digits'; untrained.
  """
  tf_keras.utils.set_random_seed(seed)
  layers = tf_keras.layers
  inputs = tf_keras.Input((64,), name='pixels')
  x = layers.Reshape((8, 8, 1))(inputs)
  x = layers.Conv2D(8, 3, padding='same', use_bias=False, name='stem')(x)
  x = layers.ReLU(6.0)(layers.BatchNormalization(name='stem_bn')(x))
  for i in (1, 2):
    y = layers.DepthwiseConv2D(3, padding='same', use_bias=False, name=f'dw_{i}')(x)
    y = layers.ReLU(6.0)(layers.BatchNormalization(name=f'dw_{i}_bn')(y))
    y = layers.Conv2D(8, 1, use_bias=False, name=f'pw_{i}')(y)
    y = layers.BatchNormalization(name=f'pw_{i}_bn')(y)
    x = layers.Add(name=f'add_{i}')([x, y])
  x = layers.GlobalAveragePooling2D()(x)
  return tf_keras.Model(inputs, layers.Dense(classes, activation='softmax', name='head')(x))


def test_depthwise_kernels_reach_the_target_sparsity_unless_skipped(tmp_path):
  config = pruning.PruningConfig(target_sparsity=0.75, end=0.5, frequency=2, skip_layers='^dw_2$')

  stripped, layers = prune_briefly(config, tmp_path, mobilenet_style())

  assert 'dw_1' in layers and 'dw_2' not in layers
  assert not {'stem_bn', 'dw_1_bn'} & set(layers)  # Nothing tfmot prunes in BatchNormalization.
  per_layer, _ = pruning.sparsity(stripped, layers)
  assert abs(per_layer['dw_1'] - 0.75) < 0.02, per_layer
  assert np.mean(stripped.get_layer('dw_2').get_weights()[0] == 0) == 0
  # Stripped back to the standard layer, so the saved model needs no custom objects.
  assert type(stripped.get_layer('dw_1')) is tf_keras.layers.DepthwiseConv2D


def test_two_four_reaches_depthwise_kernels_whose_channels_allow_it(tmp_path):
  config = pruning.PruningConfig(structure='2:4', schedule='constant', end=-1)

  stripped, layers = prune_briefly(config, tmp_path, mobilenet_style())

  # stem has one input channel: it cannot hold 2:4. The depthwise kernels have 8 channels.
  assert set(DEPTHWISE) <= set(layers) and 'stem' not in layers
  assert pruning.layers_violating_2by4(stripped, list(DEPTHWISE)) == []
  assert pruning.sparsity(stripped, list(DEPTHWISE))[1] == 0.5


def test_the_tflite_2by4_check_covers_depthwise_kernels_and_catches_a_dense_one(tmp_path):
  dense = int8_of(mobilenet_style())
  stripped, layers = prune_briefly(
      pruning.PruningConfig(structure='2:4', schedule='constant', end=-1), tmp_path,
      mobilenet_style())
  sparse = int8_of(stripped)

  assert sorted(layers) == sorted([*DEPTHWISE, 'pw_1', 'pw_2', 'head'])  # stem: 1 channel in.
  checked, broken = tflite.weights_violating_2by4(dense, list(DEPTHWISE))
  assert len(checked) == 2 and broken == checked  # Unpruned kernels break the pattern.
  checked, broken = tflite.weights_violating_2by4(sparse, layers)
  assert len(checked) == 5 and broken == []
  # Only the named layers are held to the pattern: the dense model passes for none of its own.
  assert tflite.weights_violating_2by4(dense, []) == ([], [])


def _depthwise_weights(tflite_model):
  interp = tflite.interpreter(tflite_model)
  interp.allocate_tensors()
  return [interp.get_tensor(op['inputs'][1])
          for op in interp._get_ops_details()  # pylint: disable=protected-access
          if op['op_name'] == 'DEPTHWISE_CONV_2D']


@pytest.mark.e2e  # Fine-tunes and converts: 30-50 s on 2 busy cores.
def test_pruner_records_depthwise_sparsity_and_the_int8_model_keeps_the_zeros(
    digits_examples, tmp_path):
  model = mobilenet_style(classes=10)
  model.compile('adam', 'sparse_categorical_crossentropy')
  source = keras_model_artifact(model, tmp_path / 'source')
  pruner = Pruner(model=channel(), examples=channel(standard_artifacts.Examples),
                  input_fn=INPUT_FN, fine_tuning=TINY,
                  pruning=pruning.PruningConfig(target_sparsity=0.75, end=0.5, frequency=2))

  pruned, _ = run_optimizer(pruner, source, digits_examples, tmp_path / 'pruned')
  tflite_artifact, _ = run_ptq(pruned, digits_examples, tmp_path / 'int8')

  per_layer = json.loads(pruned.get_string_custom_property(spec_keys.PROP_SPARSITY_PER_LAYER))
  assert all(abs(per_layer[name] - 0.75) < 0.02 for name in DEPTHWISE), per_layer
  reloaded = model_io.load_keras_model(pruned.uri)
  assert type(reloaded.get_layer('dw_1')) is tf_keras.layers.DepthwiseConv2D
  weights = _depthwise_weights(model_io.read_tflite(tflite_artifact.uri, 'test'))
  assert len(weights) == 2 and all(w.dtype == np.int8 for w in weights)
  assert all(np.mean(w == 0) >= 0.74 for w in weights)
  # BatchNorm statistics were re-estimated after pruning and the outcome recorded.
  reestimated = json.loads(pruned.get_string_custom_property(
      spec_keys.PROP_FINE_TUNING))['batchnorm_reestimation']
  assert reestimated['layers'] == 5 and reestimated['batches'] == TINY.batchnorm_batches
  assert reestimated['kept'] == (reestimated['after'] >= reestimated['before'])
