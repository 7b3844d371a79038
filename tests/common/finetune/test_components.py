"""Pruner, Clusterer, QATTrainer share one component and one executor (components.common.finetune):
construction checks, and the three executors chained on real artifacts.
"""
import json
import os

import pytest
import tensorflow as tf
from tfx.types import standard_artifacts
import tf_keras

from components import Clusterer
from components import FineTuneConfig
from components import Pruner
from components import QATTrainer
from components import errors
from components import spec_keys
from components.clusterer.clustering import ClusteringConfig
from components.common import model_io
from components.common import tflite as tflite_lib
from components.pruner.pruning import PruningConfig
from components.qat_trainer.qat import QATConfig
from tests.helpers import INPUT_FN
from tests.helpers import TINY
from tests.helpers import channel
from tests.helpers import run_optimizer
from tests.helpers import run_ptq


def _channels():
  return dict(model=channel(), examples=channel(standard_artifacts.Examples))


@pytest.mark.parametrize('factory,kwargs,message', [
    (Pruner, dict(input_fn=None), 'give exactly one of input_fn=None'),
    (Pruner, dict(module_file='m.py'), "give exactly one of input_fn='pipelines.digits_module"),
    (Pruner, dict(input_fn='input_fn'), "input_fn='input_fn' is not an import path"),
    # Checked against the Pruner's own 10 epochs of 50 steps when fine_tuning sets none.
    (Pruner, dict(pruning=PruningConfig(begin=600, end=700)),
     'pruning begins at step 600 but fine-tuning has only 500 steps'),
    (Pruner, dict(pruning=PruningConfig(begin=200, end=300), fine_tuning=FineTuneConfig(epochs=3)),
     'pruning begins at step 200 but fine-tuning has only 150 steps'),
    (Pruner, dict(fine_tuning={'epochs': 1}),
     r"fine_tuning=\{'epochs': 1\} is not accepted; it must be a FineTuneConfig\."),
    (Pruner, dict(pruning=ClusteringConfig()),
     r'pruning=ClusteringConfig\(.*\) is not accepted; it must be a PruningConfig\.'),
    (Clusterer, dict(input_fn=None, module_file=None), 'give exactly one of'),
    (Clusterer, dict(clustering=QATConfig()), 'it must be a ClusteringConfig'),
    (QATTrainer, dict(input_fn='a b.c'), "input_fn='a b.c' is not an import path"),
    (QATTrainer, dict(qat={'scheme': 'default'}), 'it must be a QATConfig'),
])
def test_bad_optimizer_arguments_fail_when_the_pipeline_is_built(factory, kwargs, message):
  args = dict(_channels(), input_fn=INPUT_FN)
  args.update(kwargs)

  with pytest.raises(errors.ConfigError, match=message):
    factory(**args)


@pytest.mark.parametrize('factory,argument,config', [
    (Pruner, 'pruning', PruningConfig(target_sparsity=0.8)),
    (Clusterer, 'clustering', ClusteringConfig(number_of_clusters=4)),
    (QATTrainer, 'qat', QATConfig(scheme='default')),
])
def test_each_optimizer_passes_its_config_and_the_fine_tuning_to_its_executor(factory, argument,
                                                                              config):
  component = factory(**_channels(), input_fn=INPUT_FN, fine_tuning=TINY, **{argument: config})

  executor_class = component.EXECUTOR_SPEC.executor_class
  props = component.exec_properties
  assert executor_class.CONFIG_CLASS.from_json(props[spec_keys.OPTIMIZATION_KEY]) == config
  assert type(TINY).from_json(props[spec_keys.FINE_TUNING_KEY]) == TINY
  assert set(component.outputs) == {spec_keys.OPTIMIZED_MODEL_KEY, spec_keys.MODEL_RUN_KEY}
  # The default config when none is given.
  default = factory(**_channels(), input_fn=INPUT_FN)
  assert default.exec_properties[spec_keys.OPTIMIZATION_KEY] == type(config)().to_json()


def test_prune_cluster_qat_chain_records_history_and_converts_to_int8_only(
    trained_model_artifact, digits_examples, tmp_path):
  ch = _channels()
  pruner = Pruner(**ch, input_fn=INPUT_FN, fine_tuning=TINY,
                  pruning=PruningConfig(target_sparsity=0.7, end=0.5, frequency=2))
  clusterer = Clusterer(**ch, input_fn=INPUT_FN, fine_tuning=TINY,
                        clustering=ClusteringConfig(number_of_clusters=8))
  qat_trainer = QATTrainer(**ch, input_fn=INPUT_FN, fine_tuning=TINY)

  pruned, run = run_optimizer(pruner, trained_model_artifact, digits_examples,
                              tmp_path / 'pruned')
  clustered, _ = run_optimizer(clusterer, pruned, digits_examples, tmp_path / 'clustered')
  trained, _ = run_optimizer(qat_trainer, clustered, digits_examples, tmp_path / 'qat')
  tflite, _ = run_ptq(trained, digits_examples, tmp_path / 'int8')
  tflite_model = model_io.read_tflite(tflite.uri, 'test')

  assert pruned.get_float_custom_property(spec_keys.PROP_SPARSITY) == pytest.approx(0.7, abs=0.02)
  assert set(json.loads(pruned.get_string_custom_property(spec_keys.PROP_SPARSITY_PER_LAYER))) == {
      'conv_1', 'conv_2', 'dense', 'classifier'}
  assert 0 < pruned.get_float_custom_property(spec_keys.PROP_FINETUNE_VAL_ACCURACY) <= 1
  assert json.loads(pruned.get_string_custom_property(spec_keys.PROP_FINE_TUNING)) == {
      'epochs': 1, 'epochs_run': 1, 'kept_epoch': 0, 'learning_rate': 1e-3,
      'batchnorm_reestimation': None}  # No BatchNorm.
  # TINY sets no learning rate: QATTrainer takes its own, smaller one.
  assert json.loads(trained.get_string_custom_property(spec_keys.PROP_FINE_TUNING))[
      'learning_rate'] == 1e-4
  assert tf.io.gfile.glob(os.path.join(run.uri, '**', '*tfevents*')) or tf.io.gfile.glob(
      os.path.join(run.uri, '*', '*tfevents*'))
  unique = json.loads(clustered.get_string_custom_property(spec_keys.PROP_UNIQUE_WEIGHTS))
  assert set(unique) == {'conv_1', 'conv_2', 'dense', 'classifier'}
  assert all(count <= 8 for count in unique.values()), unique
  # Sparsity is preserved automatically after a Pruner.
  assert clustered.get_int_custom_property(spec_keys.PROP_CLUSTER_PRESERVE_SPARSITY) == 1
  assert trained.get_string_custom_property(spec_keys.PROP_QAT_SCHEME) == 'prune_cluster_preserve'
  assert json.loads(trained.get_string_custom_property(spec_keys.PROP_FLOAT_LAYERS)) == []
  history = ['prune', 'cluster', 'qat']
  assert json.loads(trained.get_string_custom_property(spec_keys.PROP_HISTORY)) == history
  # What earlier steps recorded travels to the TFLite model.
  assert json.loads(tflite.get_string_custom_property(spec_keys.PROP_HISTORY)) == history
  assert tflite.get_float_custom_property(spec_keys.PROP_SPARSITY) == pytest.approx(0.7, abs=0.02)
  assert tflite.get_int_custom_property(spec_keys.PROP_CLUSTERS) == 8
  assert set(tflite_lib.tensor_dtypes(tflite_model).values()) <= {'int8', 'int32'}
  # The optimized model reloads as Keras and serves tf.Examples.
  reloaded = model_io.load_keras_model(trained.uri)
  assert reloaded.input_names == ['pixels']
  serve = tf.saved_model.load(model_io.serving_model_dir(trained.uri)).signatures[
      'serving_default']
  assert serve.structured_input_signature[1]['examples'].dtype == tf.string


def _keras3_model(path):
  import keras  # pylint: disable=g-import-not-at-top  # Keras 3, installed beside tf_keras.
  inputs = keras.Input((64,), name='pixels')
  keras.Model(inputs, keras.layers.Dense(10)(inputs)).export(path)


class _Subclassed(tf_keras.Model):

  def __init__(self):
    super().__init__()
    self.dense = tf_keras.layers.Dense(10)

  def call(self, inputs):
    return self.dense(inputs)


def _subclassed_model(path):
  model = _Subclassed()
  model(tf.zeros((1, 64)))
  model.save(path, save_format='tf')


@pytest.mark.parametrize('save,message', [
    (_keras3_model, 'no Keras 2 metadata .*Keras 3 .*supports tf_keras Functional and Sequential'),
    (_subclassed_model, 'reloaded a _Subclassed, a subclassed model.*functional API'),
])
def test_models_tfmot_cannot_handle_fail_before_training(digits_examples, tmp_path, save,
                                                         message):
  source = standard_artifacts.Model()
  source.uri = str(tmp_path / 'source')
  save(os.path.join(source.uri, 'Format-Serving'))
  pruner = Pruner(**_channels(), input_fn=INPUT_FN, fine_tuning=TINY)

  with pytest.raises(errors.ModelLoadError, match=f'Model artifact {source.uri}: .*{message}'):
    run_optimizer(pruner, source, digits_examples, tmp_path / 'bad')

  assert not os.path.exists(tmp_path / 'bad')  # No training started, nothing written.
