"""Unit tests of the pruning, clustering and QAT logic on tiny tf_keras models."""
import numpy as np
import pytest
import tf_keras

from components.clusterer import clustering
from components.common import tflite
from components.common.finetune import config as config_lib
from components.ptq_converter import calibration
from components.ptq_converter import conversion
from components.pruner import pruning
from components.qat_trainer import qat

STEPS = 20


def _model(seed=0):
  """Conv (1 input channel) -> Conv (8) -> Dense (8*4*4=128 -> 16) -> Dense: trained a little."""
  tf_keras.utils.set_random_seed(seed)
  inputs = tf_keras.Input((64,), name='pixels')
  x = tf_keras.layers.Reshape((8, 8, 1))(inputs)
  x = tf_keras.layers.Conv2D(8, 3, padding='same', activation='relu', name='conv_a')(x)
  x = tf_keras.layers.Conv2D(8, 3, padding='same', activation='relu', name='conv_b')(x)
  x = tf_keras.layers.MaxPooling2D()(x)
  x = tf_keras.layers.Flatten()(x)
  x = tf_keras.layers.Dense(16, activation='relu', name='dense_a')(x)
  outputs = tf_keras.layers.Dense(4, activation='softmax', name='head')(x)
  return tf_keras.Model(inputs, outputs)


def _data(n=256, seed=0):
  rng = np.random.default_rng(seed)
  return rng.random((n, 64), dtype=np.float32), rng.integers(0, 4, n)


def _fit(model, callbacks=()):
  x, y = _data()
  model.compile('adam', 'sparse_categorical_crossentropy')
  model.fit(x, y, batch_size=16, epochs=1, steps_per_epoch=STEPS, callbacks=list(callbacks),
            verbose=0)
  return model


def _prune(config, model=None, tmp_path='/tmp'):
  model = model or _model()
  wrapped = pruning.prune(model, config, STEPS)
  _fit(wrapped, pruning.callbacks(str(tmp_path)))
  return pruning.strip(wrapped), pruning.prunable_layers(model, config)


def _int8(model):
  return conversion.convert(model, 'int8',
                            calibration.representative_dataset({'pixels': _data(32)[0]}))


@pytest.mark.parametrize('schedule', ['polynomial', 'constant'])
def test_pruning_reaches_the_target_sparsity(tmp_path, schedule):
  config = pruning.PruningConfig(target_sparsity=0.75, schedule=schedule, begin=0, end=0.5,
                                 frequency=5)

  stripped, layers = _prune(config, tmp_path=tmp_path)

  per_layer, overall = pruning.sparsity(stripped, layers)
  assert layers == ['conv_a', 'conv_b', 'dense_a', 'head']
  assert overall == pytest.approx(0.75, abs=0.02)
  assert all(v == pytest.approx(0.75, abs=0.05) for v in per_layer.values()), per_layer
  assert not any('prune_low_magnitude' in layer.name for layer in stripped.layers)


def test_pruning_polynomial_end_not_on_a_mask_update_still_reaches_the_target(tmp_path):
  # end=13 is not begin + k*frequency: without aligning, the last update would stop short.
  config = pruning.PruningConfig(target_sparsity=0.8, begin=0, end=13, frequency=5)

  stripped, layers = _prune(config, tmp_path=tmp_path)

  assert pruning.sparsity(stripped, layers)[1] == pytest.approx(0.8, abs=0.02)


def test_pruning_skip_regex_leaves_matching_layers_dense(tmp_path):
  config = pruning.PruningConfig(target_sparsity=0.6, skip_layers='^head$')

  stripped, layers = _prune(config, tmp_path=tmp_path)

  assert 'head' not in layers
  assert np.mean(stripped.get_layer('head').get_weights()[0] == 0) < 0.05
  assert pruning.sparsity(stripped, layers)[1] == pytest.approx(0.6, abs=0.02)


def test_two_four_pattern_holds_in_keras_weights_and_in_the_int8_tflite(tmp_path):
  config = pruning.PruningConfig(structure='2:4', schedule='constant', begin=0, end=-1)

  stripped, layers = _prune(config, tmp_path=tmp_path)

  # conv_a has 1 input channel and cannot hold 2:4; it is left dense (and logged).
  assert layers == ['conv_b', 'dense_a', 'head']
  assert pruning.layers_violating_2by4(stripped, layers) == []
  checked, broken = pruning.tflite_weights_violating_2by4(_int8(stripped))
  assert len(checked) == 3 and broken == []


def test_two_four_checks_detect_an_unstructured_model(tmp_path):
  stripped, layers = _prune(pruning.PruningConfig(target_sparsity=0.5), tmp_path=tmp_path)

  assert pruning.layers_violating_2by4(stripped, layers)
  assert pruning.tflite_weights_violating_2by4(_int8(stripped))[1]


@pytest.mark.parametrize('kwargs,message', [
    (dict(target_sparsity=0.0), r'target_sparsity=0.0 is not accepted; it must lie in \(0, 1\)'),
    (dict(target_sparsity=1.0), 'target_sparsity=1.0 is not accepted'),
    (dict(schedule='cubic'), "schedule='cubic' is not accepted; accepted: constant, polynomial"),
    (dict(structure='1:4'), "structure='1:4' is not accepted; accepted: unstructured, 2:4"),
    (dict(begin=0.5, end=0.4), 'end=0.4 must come after begin=0.5'),
    (dict(end=1.5), 'end=1.5 is a fraction of fine-tuning and must lie in'),
    (dict(frequency=0), 'frequency=0 must be a positive integer'),
    (dict(skip_layers='(unclosed'), r"skip_layers='\(unclosed' is not a valid regular"),
    (dict(initial_sparsity=0.6, target_sparsity=0.5), r'initial_sparsity=0.6 must lie in \[0'),
])
def test_pruning_config_names_the_bad_value(kwargs, message):
  with pytest.raises(ValueError, match=message):
    pruning.PruningConfig(**kwargs)


def test_pruning_schedule_that_cannot_fit_the_fine_tuning_is_rejected():
  with pytest.raises(ValueError, match='pruning begins at step 30 but fine-tuning has only 20'):
    pruning.PruningConfig(begin=30, end=40).steps(20)


@pytest.mark.parametrize('init', sorted(clustering.CENTROID_INITS))
def test_clustering_leaves_at_most_n_unique_values_per_layer(init):
  config = clustering.ClusteringConfig(number_of_clusters=6, centroid_init=init)
  model = _fit(_model())

  wrapped = clustering.cluster(model, config, preserve_sparsity=False)
  _fit(wrapped)
  stripped = clustering.strip(wrapped)

  unique = clustering.unique_weights(stripped, clustering.clusterable_layers(model, config))
  assert set(unique) == {'conv_a', 'conv_b', 'dense_a', 'head'}
  assert all(1 < count <= 6 for count in unique.values()), unique


def test_per_channel_clustering_limits_each_conv_channel():
  config = clustering.ClusteringConfig(number_of_clusters=4, per_channel=True)
  wrapped = clustering.cluster(_fit(_model()), config, preserve_sparsity=False)
  _fit(wrapped)
  stripped = clustering.strip(wrapped)

  kernel = stripped.get_layer('conv_b').get_weights()[0]
  per_channel = [np.unique(kernel[..., c]).size for c in range(kernel.shape[-1])]
  assert max(per_channel) <= 4
  assert np.unique(kernel).size > 4  # Channels have their own centroids.


def test_clustering_after_pruning_preserves_the_zeros(tmp_path):
  pruned, layers = _prune(pruning.PruningConfig(target_sparsity=0.7, end=0.5), tmp_path=tmp_path)
  before = pruning.sparsity(pruned, layers)[1]
  config = clustering.ClusteringConfig(number_of_clusters=8, skip_layers='^conv_a$')

  wrapped = clustering.cluster(pruned, config, preserve_sparsity=True)
  _fit(wrapped)
  stripped = clustering.strip(wrapped)

  assert pruning.sparsity(stripped, ['conv_b', 'dense_a', 'head'])[1] >= before - 0.02
  assert 'conv_a' not in clustering.clusterable_layers(pruned, config)


@pytest.mark.parametrize('kwargs,message', [
    (dict(number_of_clusters=1),
     'number_of_clusters=1 is not accepted; it must be an integer >= 2'),
    (dict(centroid_init='kmeans'), "centroid_init='kmeans' is not accepted; accepted: kmeans"),
    (dict(skip_layers='['), "skip_layers='\\[' is not a valid regular expression"),
])
def test_clustering_config_names_the_bad_value(kwargs, message):
  with pytest.raises(ValueError, match=message):
    clustering.ClusteringConfig(**kwargs)


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
  model = _fit(_model())
  quantized, floats = qat.plan(model, qat.QATConfig())

  qat_model = _fit(qat.quantize(model, qat.QATConfig(), 'default', quantized))

  assert floats == []
  dtypes = set(tflite.tensor_dtypes(_int8(qat_model)).values())
  assert dtypes <= {'int8', 'int32'}


def _model_with_layer_norm():
  inputs = tf_keras.Input((64,), name='pixels')
  x = tf_keras.layers.Dense(16, name='dense_a')(inputs)
  x = tf_keras.layers.LayerNormalization(name='norm')(x)
  return tf_keras.Model(inputs, tf_keras.layers.Dense(4, name='head')(x))


def test_unsupported_layer_fails_before_training_with_its_name():
  with pytest.raises(ValueError, match="QAT: layer 'norm' of type LayerNormalization cannot be "
                     'quantized.*skip_layers.*allow_float_layers=True'):
    qat.plan(_model_with_layer_norm(), qat.QATConfig())


def test_unsupported_layer_is_left_float_when_allowed_or_skipped(caplog):
  with caplog.at_level('WARNING'):
    quantized, floats = qat.plan(_model_with_layer_norm(), qat.QATConfig(allow_float_layers=True))
  assert floats == ['norm'] and quantized == ['dense_a', 'head']
  assert "layer 'norm' (LayerNormalization) cannot be quantized" in caplog.text

  quantized, floats = qat.plan(_model_with_layer_norm(), qat.QATConfig(skip_layers='norm'))
  assert floats == ['norm']


def test_unknown_qat_scheme_is_rejected():
  with pytest.raises(ValueError, match="scheme='pqat' is not a QAT scheme; accepted: auto"):
    qat.QATConfig(scheme='pqat')


@pytest.mark.parametrize('kwargs,message', [
    (dict(epochs=0), 'epochs=0 is not accepted; it must be a positive integer'),
    (dict(steps_per_epoch=-1), 'steps_per_epoch=-1 is not accepted'),
    (dict(batch_size=0), 'batch_size=0'),
    (dict(learning_rate=0), 'learning_rate=0 is not accepted; it must be a positive finite'),
    (dict(optimizer='adamw'), "optimizer='adamw' is not accepted; accepted: adam, sgd, rmsprop"),
    (dict(loss='no_such_loss'), "loss='no_such_loss' is not a Keras loss name"),
])
def test_fine_tune_config_names_the_bad_value(kwargs, message):
  with pytest.raises(ValueError, match=message):
    config_lib.FineTuneConfig(**kwargs)
