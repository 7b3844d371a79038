"""Trainer module for the digits demo, and the reference for the module-file contract.

The contract (what tfx-edge calls in a user's module):

* ``run_fn(fn_args)``: the standard TFX Trainer entry point. It must save a **tf_keras**
  (Keras 2) Functional or Sequential model with ``model.save(fn_args.serving_model_dir)``
  (SavedModel format) and a ``serving_default`` signature that parses serialized tf.Examples.
  The optimization components reload that Keras model from the SavedModel.
* Model inputs are named after the features they read (``tf_keras.Input(name='pixels')``):
  TFMA feeds TFLite inputs by feature name, and PTQConverter parses calibration examples with a
  spec derived from the input names, shapes and dtypes.
* ``input_fn(file_pattern, data_accessor, batch_size)``: returns a ``tf.data.Dataset`` of
  ``(features, label)`` batches, features keyed by model input name, repeating indefinitely.
  The Trainer uses it here; the fine-tuning components (Pruner, Clusterer, QATTrainer) call the
  same function on the pipeline's Examples, so the input code exists once.
"""
from typing import List

from absl import logging
import tensorflow as tf
import tf_keras
from tfx import v1 as tfx
from tfx_bsl.public import tfxio
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import schema_utils

from components.common import model_io
from pipelines import data

FEATURE_SPEC = {
    data.PIXELS_KEY: tf.io.FixedLenFeature([data.NUM_PIXELS], tf.float32),
    data.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
}
EPOCHS = 10
SEED = 0


def _schema() -> schema_pb2.Schema:
  return schema_utils.schema_from_feature_spec(FEATURE_SPEC)


def input_fn(file_pattern: List[str], data_accessor: tfx.components.DataAccessor,
             batch_size: int = 32) -> tf.data.Dataset:
  """(features, label) batches from Examples files; see the module docstring for the contract."""
  return data_accessor.tf_dataset_factory(
      file_pattern,
      tfxio.TensorFlowDatasetOptions(
          batch_size=batch_size, label_key=data.LABEL_KEY, shuffle_seed=SEED),
      _schema())


def build_model() -> tf_keras.Model:
  """A small CNN over the 8x8 image, with its input named after the `pixels` feature."""
  pixels = tf_keras.Input(shape=(data.NUM_PIXELS,), name=data.PIXELS_KEY)
  # Explicit layer names: skip_layers regexes and per-layer reports refer to them.
  x = tf_keras.layers.Reshape((8, 8, 1), name='image')(pixels)
  x = tf_keras.layers.Conv2D(16, 3, padding='same', activation='relu', name='conv_1')(x)
  x = tf_keras.layers.Conv2D(32, 3, padding='same', activation='relu', name='conv_2')(x)
  x = tf_keras.layers.MaxPooling2D(name='pool')(x)
  x = tf_keras.layers.Flatten(name='flatten')(x)
  x = tf_keras.layers.Dense(64, activation='relu', name='dense')(x)
  outputs = tf_keras.layers.Dense(data.NUM_CLASSES, activation='softmax', name='classifier')(x)
  model = tf_keras.Model(pixels, outputs, name='digits_cnn')
  model.compile(
      optimizer=tf_keras.optimizers.Adam(1e-3),
      loss=tf_keras.losses.SparseCategoricalCrossentropy(),
      metrics=[tf_keras.metrics.SparseCategoricalAccuracy()])
  return model


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  """Trains the CNN and saves it as a SavedModel with a tf.Example serving signature."""
  tf_keras.utils.set_random_seed(SEED)
  batch_size = int(fn_args.custom_config.get('batch_size', 32)) if fn_args.custom_config else 32
  train = input_fn(fn_args.train_files, fn_args.data_accessor, batch_size)
  evaluation = input_fn(fn_args.eval_files, fn_args.data_accessor, batch_size)
  model = build_model()
  history = model.fit(
      train,
      epochs=EPOCHS,
      steps_per_epoch=max(1, fn_args.train_steps // EPOCHS),
      validation_data=evaluation,
      validation_steps=fn_args.eval_steps,
      callbacks=[tf_keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)],
      verbose=0)  # Per-epoch figures go to TensorBoard (model_run); the log gets the last ones.
  logging.info('digits_module: trained %d epochs; %s', EPOCHS,
               ', '.join(f'{k} {v[-1]:.4f}' for k, v in history.history.items()))
  # Adds the tf.Example serving signature the contract asks for.
  model_io.save_keras_model(model, fn_args.serving_model_dir)
