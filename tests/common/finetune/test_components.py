"""Pruner, Clusterer, QATTrainer: construction checks and executors chained on real artifacts."""
import json
import os

import pytest
import tensorflow as tf
from tfx import types
from tfx.types import standard_artifacts
import tf_keras

from components import Clusterer
from components import PTQConverter
from components import Pruner
from components import QATTrainer
from components import spec_keys
from components.common import model_io
from components.clusterer import executor as clusterer_executor
from components.clusterer.clustering import ClusteringConfig
from components.common import tflite as tflite_lib
from components.common.finetune.config import FineTuneConfig
from components.ptq_converter import executor as ptq_executor
from components.pruner import executor as pruner_executor
from components.pruner.pruning import PruningConfig
from components.qat_trainer import executor as qat_executor
from components.qat_trainer.qat import QATConfig

INPUT_FN = 'pipelines.digits_module.input_fn'
TINY = FineTuneConfig(epochs=1, steps_per_epoch=12, eval_steps=2)


def _channels():
  return dict(model=types.Channel(type=standard_artifacts.Model),
              examples=types.Channel(type=standard_artifacts.Examples))


@pytest.mark.parametrize('factory,kwargs,message', [
    (Pruner, dict(input_fn=None), 'give exactly one of input_fn=None'),
    (Pruner, dict(module_file='m.py'), 'give exactly one of input_fn='),
    (Pruner, dict(input_fn='input_fn'), "input_fn='input_fn' is not an import path"),
    (Pruner, dict(pruning=PruningConfig(begin=200, end=300)),
     'pruning begins at step 200 but fine-tuning has only 150 steps'),
    (Pruner, dict(fine_tuning={'epochs': 1}), 'must be a FineTuneConfig'),
    (Clusterer, dict(input_fn=None, module_file=None), 'give exactly one of'),
    (QATTrainer, dict(input_fn='a b.c'), "input_fn='a b.c' is not an import path"),
])
def test_bad_optimizer_arguments_fail_when_the_pipeline_is_built(factory, kwargs, message):
  args = dict(_channels(), input_fn=INPUT_FN)
  args.update(kwargs)

  with pytest.raises(ValueError, match=message):
    factory(**args)


def _run(executor_cls, component, source, examples, tmp_path, name):
  out = standard_artifacts.Model()
  out.uri = str(tmp_path / name / 'model')
  run = standard_artifacts.ModelRun()
  run.uri = str(tmp_path / name / 'run')
  executor_cls().Do({spec_keys.MODEL_KEY: [source], spec_keys.EXAMPLES_KEY: [examples]},
                    {spec_keys.OPTIMIZED_MODEL_KEY: [out], spec_keys.MODEL_RUN_KEY: [run]},
                    dict(component.exec_properties))
  return out, run


def _int8(source, examples, tmp_path, name='int8'):
  component = PTQConverter(model=types.Channel(type=standard_artifacts.Model),
                           examples=types.Channel(type=standard_artifacts.Examples),
                           mode='int8', label_key='label', calibration_samples=100)
  tflite = standard_artifacts.Model()
  tflite.uri = str(tmp_path / name / 'tflite')
  calib = standard_artifacts.Examples()
  calib.uri = str(tmp_path / name / 'calibration')
  ptq_executor.Executor().Do(
      {spec_keys.MODEL_KEY: [source], spec_keys.EXAMPLES_KEY: [examples]},
      {spec_keys.TFLITE_MODEL_KEY: [tflite], spec_keys.CALIBRATION_KEY: [calib]},
      dict(component.exec_properties))
  with open(os.path.join(tflite.uri, 'model.tflite'), 'rb') as f:
    return tflite, f.read()


def test_prune_cluster_qat_chain_records_history_and_converts_to_int8_only(
    trained_model_artifact, digits_examples, tmp_path):
  ch = _channels()
  pruner = Pruner(**ch, input_fn=INPUT_FN, fine_tuning=TINY,
                  pruning=PruningConfig(target_sparsity=0.7, end=0.5, frequency=2))
  clusterer = Clusterer(**ch, input_fn=INPUT_FN, fine_tuning=TINY,
                        clustering=ClusteringConfig(number_of_clusters=8))
  qat_trainer = QATTrainer(**ch, input_fn=INPUT_FN, fine_tuning=TINY)

  pruned, run = _run(pruner_executor.Executor, pruner, trained_model_artifact, digits_examples,
                     tmp_path, 'pruned')
  clustered, _ = _run(clusterer_executor.Executor, clusterer, pruned, digits_examples, tmp_path,
                      'clustered')
  trained, _ = _run(qat_executor.Executor, qat_trainer, clustered, digits_examples, tmp_path,
                    'qat')
  tflite, tflite_model = _int8(trained, digits_examples, tmp_path)

  assert pruned.get_float_custom_property(spec_keys.PROP_SPARSITY) == pytest.approx(0.7, abs=0.02)
  assert set(json.loads(pruned.get_string_custom_property(spec_keys.PROP_SPARSITY_PER_LAYER))) == {
      'conv_1', 'conv_2', 'dense', 'classifier'}
  assert tf.io.gfile.glob(os.path.join(run.uri, '**', '*tfevents*')) or tf.io.gfile.glob(
      os.path.join(run.uri, '*', '*tfevents*'))
  unique = json.loads(clustered.get_string_custom_property(spec_keys.PROP_UNIQUE_WEIGHTS))
  assert all(count <= 8 for count in unique.values()), unique
  # Sparsity is preserved automatically after a Pruner.
  assert clustered.get_int_custom_property(spec_keys.PROP_CLUSTER_PRESERVE_SPARSITY) == 1
  assert trained.get_string_custom_property(spec_keys.PROP_QAT_SCHEME) == 'prune_cluster_preserve'
  history = ['prune', 'cluster', 'qat']
  assert json.loads(trained.get_string_custom_property(spec_keys.PROP_HISTORY)) == history
  # What earlier steps recorded travels to the TFLite model.
  assert json.loads(tflite.get_string_custom_property(spec_keys.PROP_HISTORY)) == history
  assert tflite.get_float_custom_property(spec_keys.PROP_SPARSITY) == pytest.approx(0.7, abs=0.02)
  assert set(tflite_lib.tensor_dtypes(tflite_model).values()) <= {'int8', 'int32'}
  # The optimized model reloads as Keras and serves tf.Examples.
  reloaded = model_io.load_keras_model(trained.uri)
  assert reloaded.input_names == ['pixels']
  serve = tf.saved_model.load(model_io.serving_model_dir(trained.uri)).signatures[
      'serving_default']
  assert serve.structured_input_signature[1]['examples'].dtype == tf.string


def test_two_four_pruner_output_is_verified_again_in_the_tflite(trained_model_artifact,
                                                                digits_examples, tmp_path):
  pruner = Pruner(**_channels(), input_fn=INPUT_FN, fine_tuning=TINY,
                  pruning=PruningConfig(structure='2:4', schedule='constant', end=-1))

  pruned, _ = _run(pruner_executor.Executor, pruner, trained_model_artifact, digits_examples,
                   tmp_path, 'pruned24')
  tflite, _ = _int8(pruned, digits_examples, tmp_path, 'int8_24')

  assert pruned.get_string_custom_property(spec_keys.PROP_SPARSITY_STRUCTURE) == '2:4'
  verified = json.loads(tflite.get_string_custom_property(spec_keys.PROP_2BY4_VERIFIED))
  assert len(verified) == 3  # conv_2, dense, classifier; conv_1 has one input channel.


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

  with pytest.raises(model_io.ModelLoadError, match=message):
    _run(pruner_executor.Executor, pruner, source, digits_examples, tmp_path, 'bad')

  assert not os.path.exists(tmp_path / 'bad' / 'run')  # No training started.


def test_unsupported_layer_names_the_layer_before_training(digits_examples, tmp_path):
  inputs = tf_keras.Input((64,), name='pixels')
  x = tf_keras.layers.LayerNormalization(name='norm')(tf_keras.layers.Dense(16)(inputs))
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(10, activation='softmax')(x))
  source = standard_artifacts.Model()
  source.uri = str(tmp_path / 'source')
  model_io.save_keras_model(model, os.path.join(source.uri, 'Format-Serving'))
  qat_trainer = QATTrainer(**_channels(), input_fn=INPUT_FN, fine_tuning=TINY,
                           qat=QATConfig(scheme='default'))

  with pytest.raises(ValueError, match="layer 'norm' of type LayerNormalization cannot be"):
    _run(qat_executor.Executor, qat_trainer, source, digits_examples, tmp_path, 'qat')

  assert not os.path.exists(tmp_path / 'qat' / 'run')
