"""A user's module with a Keras 3 regression model: scikit-learn's diabetes, ten inputs.

Keras 3 (`import keras`) cannot go through tensorflow-model-optimization, so the pipeline runs
with model_format='saved_model': PTQ only, converted from the exported serving signature, gated
by mean absolute error. One model input per CSV column, named after it.
"""
import os
from typing import List

import tensorflow as tf
from tfx import v1 as tfx

LABEL = 'progression'
FEATURES = ['age', 'sex', 'bmi', 'bp', 's1', 's2', 's3', 's4', 's5', 's6']
FEATURE_SPEC = {
    **{name: tf.io.FixedLenFeature([1], tf.float32) for name in FEATURES},
    LABEL: tf.io.FixedLenFeature([1], tf.float32),
}
SEED = 0
EPOCHS = 10


def write_csv(path: str) -> None:
  """The 442 rows, features standardized, the label (disease progression, 25-346) as is."""
  from sklearn.datasets import load_diabetes  # pylint: disable=g-import-not-at-top
  x, y = load_diabetes(return_X_y=True)
  x = (x - x.mean(0)) / x.std(0)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(','.join(FEATURES + [LABEL]) + '\n')
    for row, label in zip(x, y):
      f.write(','.join(f'{v:.6f}' for v in row) + f',{label:.1f}\n')


def input_fn(file_pattern: List[str], data_accessor: tfx.components.DataAccessor,
             batch_size: int = 32) -> tf.data.Dataset:
  """(features, label) batches, repeating."""
  del data_accessor
  files = sorted(f for pattern in file_pattern for f in tf.io.gfile.glob(pattern))
  dataset = tf.data.TFRecordDataset(files, compression_type='GZIP')
  return (dataset.shuffle(1024, seed=SEED).repeat().batch(batch_size)
          .map(lambda records: tf.io.parse_example(records, FEATURE_SPEC))
          .map(lambda features: (features, features.pop(LABEL))))


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  import keras  # pylint: disable=g-import-not-at-top  # Keras 3, even with TF_USE_LEGACY_KERAS=1.
  keras.utils.set_random_seed(SEED)
  inputs = [keras.Input((1,), name=name) for name in FEATURES]
  x = keras.layers.Concatenate()(inputs)
  x = keras.layers.Dense(32, activation='relu')(x)
  # Starts at the label mean (152), so a short training reaches a useful error.
  output = keras.layers.Dense(1, bias_initializer=keras.initializers.Constant(152.0))(x)
  model = keras.Model(inputs, output)
  model.compile(keras.optimizers.Adam(0.05), 'mse', metrics=['mae'])
  model.fit(input_fn(fn_args.train_files, fn_args.data_accessor), epochs=EPOCHS,
            steps_per_epoch=max(1, fn_args.train_steps // EPOCHS), verbose=0)
  model.export(fn_args.serving_model_dir)
