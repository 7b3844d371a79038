"""A user's module with two inputs of different dtypes and shapes: digits pixels and an int64 count.

`pixels` (64 floats) and `ink` (int64: how many pixels are not blank), cast to float inside the
model and concatenated with the pixels' features: the int8 model keeps `ink` int64 at its input
(a CAST, then QUANTIZE) and is int8 everywhere else.
"""
import os
from typing import List

import numpy as np
import tensorflow as tf
import tf_keras
from tfx import v1 as tfx

from components.common import model_io
from pipelines import data

INK = 'ink'
FEATURE_SPEC = {
    data.PIXELS_KEY: tf.io.FixedLenFeature([data.NUM_PIXELS], tf.float32),
    INK: tf.io.FixedLenFeature([1], tf.int64),
    data.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
}
SEED = 0
EPOCHS = 5


def write_tfrecords(data_root: str) -> None:
  """The 1,797 digits with their ink count, as gzip tf.Example TFRecords."""
  os.makedirs(data_root, exist_ok=True)
  options = tf.io.TFRecordOptions(compression_type='GZIP')
  with tf.io.TFRecordWriter(os.path.join(data_root, 'digits_ink.tfrecord.gz'), options) as w:
    for example in data.digits_examples():
      pixels = np.asarray(example.features.feature[data.PIXELS_KEY].float_list.value)
      example.features.feature[INK].int64_list.value.append(int(np.sum(pixels > 0)))
      w.write(example.SerializeToString())


def input_fn(file_pattern: List[str], data_accessor: tfx.components.DataAccessor,
             batch_size: int = 32) -> tf.data.Dataset:
  """(features, label) batches, repeating."""
  del data_accessor
  files = sorted(f for pattern in file_pattern for f in tf.io.gfile.glob(pattern))
  dataset = tf.data.TFRecordDataset(files, compression_type='GZIP')
  return (dataset.shuffle(2048, seed=SEED).repeat().batch(batch_size)
          .map(lambda records: tf.io.parse_example(records, FEATURE_SPEC))
          .map(lambda features: (features, features.pop(data.LABEL_KEY))))


def build_model() -> tf_keras.Model:
  pixels = tf_keras.Input((data.NUM_PIXELS,), name=data.PIXELS_KEY)
  ink = tf_keras.Input((1,), dtype=tf.int64, name=INK)
  hidden = tf_keras.layers.Dense(32, activation='relu', name='pixels_dense')(pixels)
  # A plain cast: QAT cannot quantize TF op layers such as a division (it says so and names
  # the way out, --qat-allow-float-layers), so the scaling is left to the next Dense layer.
  x = tf_keras.layers.Concatenate(name='features')([hidden, tf.cast(ink, tf.float32)])
  x = tf_keras.layers.Dense(32, activation='relu', name='dense')(x)
  output = tf_keras.layers.Dense(data.NUM_CLASSES, activation='softmax', name='classifier')(x)
  model = tf_keras.Model([pixels, ink], output)
  model.compile(tf_keras.optimizers.Adam(3e-3), 'sparse_categorical_crossentropy',
                metrics=['sparse_categorical_accuracy'])
  return model


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  tf_keras.utils.set_random_seed(SEED)
  model = build_model()
  model.fit(input_fn(fn_args.train_files, fn_args.data_accessor), epochs=EPOCHS,
            steps_per_epoch=max(1, fn_args.train_steps // EPOCHS), verbose=0)
  model_io.save_keras_model(model, fn_args.serving_model_dir)
