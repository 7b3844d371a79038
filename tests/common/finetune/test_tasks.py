"""Fine-tuning a binary classifier (one sigmoid unit) on real tabular data, and clustering layers
too small for the clusters: the executors pick the loss from the output and skip what k-means
cannot cluster, with the reason recorded.
"""
import json

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import standard_artifacts
import tf_keras

from components import Clusterer
from components import ClusteringConfig
from components import FineTuneConfig
from components import Pruner
from components import PruningConfig
from components import errors
from components import spec_keys
from components.clusterer import clustering
from components.common.finetune import config as config_lib
from tests.conftest import write_examples
from tests.helpers import breast_cancer_data
from tests.helpers import channel
from tests.helpers import keras_model_artifact
from tests.helpers import run_optimizer

# A module file of the user's kind: its own feature spec and input_fn.
_MODULE = '''
import tensorflow as tf
from tfx_bsl.public import tfxio
from tensorflow_transform.tf_metadata import schema_utils

SPEC = {'features': tf.io.FixedLenFeature([30], tf.float32),
        'label': tf.io.FixedLenFeature([], tf.int64)}


def input_fn(file_pattern, data_accessor, batch_size=32):
  return data_accessor.tf_dataset_factory(
      file_pattern, tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key='label',
                                                   shuffle_seed=0),
      schema_utils.schema_from_feature_spec(SPEC))
'''
FINE_TUNING = FineTuneConfig(epochs=2, steps_per_epoch=10, eval_steps=3)


def _records(x, y):
  return [tf.train.Example(features=tf.train.Features(feature={
      'features': tf.train.Feature(float_list=tf.train.FloatList(value=row)),
      'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
  })).SerializeToString() for row, label in zip(x, y)]


@pytest.fixture(scope='module')
def breast_cancer(tmp_path_factory):
  """Standardized breast-cancer data (binary), a module file, and a trained sigmoid model."""
  x, y = breast_cancer_data()
  root = tmp_path_factory.mktemp('breast_cancer')
  module = root / 'module.py'
  module.write_text(_MODULE)
  tf_keras.utils.set_random_seed(0)
  inputs = tf_keras.Input((30,), name='features')
  narrow = tf_keras.layers.Dense(3, activation='relu', name='narrow')(inputs)
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(1, activation='sigmoid', name='out')(
      narrow))
  model.compile('adam', 'binary_crossentropy')
  model.fit(x[:400], y[:400], epochs=20, verbose=0)
  return dict(root=root, x=x, y=y, module=str(module), model=model,
              artifact=keras_model_artifact(model, root / 'trained'))


def _examples(case, path, train_labels=None):
  train_y = case['y'][:400] if train_labels is None else train_labels
  return write_examples(str(path), {'train': _records(case['x'][:400], train_y),
                                    'eval': _records(case['x'][400:], case['y'][400:])})


def test_the_loss_follows_the_output():
  def model(units, activation):
    inputs = tf_keras.Input((4,))
    return tf_keras.Model(inputs, tf_keras.layers.Dense(units, activation=activation)(inputs))

  auto = FineTuneConfig()
  assert auto.loss_for(model(1, 'sigmoid')) == 'binary_crossentropy'
  assert auto.loss_for(model(3, 'softmax')) == 'sparse_categorical_crossentropy'
  assert auto.loss_for(model(1, None)) == 'mean_squared_error'
  logits = auto.loss_for(model(3, None))
  assert isinstance(logits, tf_keras.losses.SparseCategoricalCrossentropy)
  assert logits.get_config()['from_logits'] is True
  assert FineTuneConfig(loss='hinge').loss_for(model(1, 'sigmoid')) == 'hinge'


def test_a_one_sigmoid_unit_classifier_fine_tunes_with_binary_crossentropy(breast_cancer,
                                                                          tmp_path):
  examples = _examples(breast_cancer, tmp_path / 'examples')
  pruner = Pruner(model=channel(), examples=channel(standard_artifacts.Examples),
                  module_file=breast_cancer['module'],
                  pruning=PruningConfig(target_sparsity=0.5, end=0.5), fine_tuning=FINE_TUNING)

  out, _ = run_optimizer(pruner, breast_cancer['artifact'], examples, tmp_path / 'pruned')

  # Binary accuracy on the eval split, as Keras reports it for binary cross-entropy: a
  # sparse-categorical loss would have stopped at the first label 1 of a one-unit output.
  accuracy = out.get_float_custom_property(spec_keys.PROP_FINETUNE_VAL_ACCURACY)
  assert accuracy > 0.85
  assert out.get_float_custom_property(spec_keys.PROP_SPARSITY) == pytest.approx(0.5, abs=0.05)


def test_binary_labels_other_than_0_and_1_are_named_before_training_goes_on(breast_cancer,
                                                                           tmp_path):
  labels = breast_cancer['y'][:400] * 2  # 0/2 instead of 0/1.
  examples = _examples(breast_cancer, tmp_path / 'examples', labels)
  pruner = Pruner(model=channel(), examples=channel(standard_artifacts.Examples),
                  module_file=breast_cancer['module'],
                  pruning=PruningConfig(target_sparsity=0.5, end=0.5), fine_tuning=FINE_TUNING)

  with pytest.raises(errors.DataError, match=f"Examples artifact {examples.uri}, split 'train': "
                     r'label values 2 are outside \[0, 1\], which binary_crossentropy on '
                     r'sigmoid outputs \(or logits\) needs'):
    run_optimizer(pruner, breast_cancer['artifact'], examples, tmp_path / 'pruned')


def test_a_layer_with_fewer_weights_than_clusters_is_left_unclustered_and_recorded(
    breast_cancer, tmp_path, caplog):
  examples = _examples(breast_cancer, tmp_path / 'examples')
  clusterer = Clusterer(model=channel(), examples=channel(standard_artifacts.Examples),
                        module_file=breast_cancer['module'],
                        clustering=ClusteringConfig(number_of_clusters=16),
                        fine_tuning=FINE_TUNING)

  out, _ = run_optimizer(clusterer, breast_cancer['artifact'], examples, tmp_path / 'clustered')

  # `out` (3 weights) cannot take 16 centroids; `narrow` (90 weights) is clustered.
  assert json.loads(out.get_string_custom_property(spec_keys.PROP_UNCLUSTERED_LAYERS)) == {
      'out': '3 weights, fewer than number_of_clusters=16'}
  unique = json.loads(out.get_string_custom_property(spec_keys.PROP_UNIQUE_WEIGHTS))
  assert list(unique) == ['narrow'] and unique['narrow'] <= 16
  assert "layer 'out' left unclustered: 3 weights, fewer than number_of_clusters=16" in (
      caplog.text)


def test_sparsity_preserving_clustering_counts_only_the_non_zero_weights():
  inputs = tf_keras.Input((8,))
  layer = tf_keras.layers.Dense(4, name='sparse')
  model = tf_keras.Model(inputs, layer(inputs))
  kernel = np.zeros((8, 4), np.float32)
  kernel[:2] = 1.0 + np.arange(8).reshape(2, 4)  # 8 non-zero weights of 32.
  layer.set_weights([kernel, np.zeros(4, np.float32)])
  config = ClusteringConfig(number_of_clusters=16)

  assert clustering.too_small(layer, config, preserve_sparsity=False) == ''
  assert clustering.too_small(layer, config, preserve_sparsity=True) == (
      '8 non-zero weights, fewer than number_of_clusters=16')
  with pytest.raises(errors.ConfigError, match='no layer left to cluster'):
    clustering.cluster(model, config, preserve_sparsity=True)


def test_a_model_with_several_outputs_needs_an_explicit_loss():
  inputs = tf_keras.Input((4,))
  model = tf_keras.Model(inputs, [tf_keras.layers.Dense(1)(inputs), tf_keras.layers.Dense(2)(
      inputs)])
  with pytest.raises(errors.ConfigError, match=r'the model has 2 outputs .* set '
                     r'FineTuneConfig\(loss=...\)'):
    config_lib.FineTuneConfig().loss_for(model)
