"""A user's module for tabular data with missing values: breast cancer, one sigmoid unit.

What a user brings, unlike the digits demo: 30 scalar features, one model input per CSV column
(TFMA feeds TFLite inputs by feature name), cells missing at random, and an input_fn that fills
them from its feature spec's default values. FILL_MISSING is the same fill, for the gate.
"""
import os
from typing import List

import numpy as np
import tensorflow as tf
import tf_keras
from tfx import v1 as tfx

from components.common import model_io

LABEL = 'diagnosis'
# Column names without spaces: scikit-learn's names ('mean radius', ...) with '_'.
FEATURES = [f'f{i:02d}' for i in range(30)]
# The data are standardized, so the feature means are 0: the usual mean imputation.
FILL_MISSING = {name: 0.0 for name in FEATURES}
FEATURE_SPEC = {
    **{name: tf.io.FixedLenFeature([1], tf.float32, default_value=[FILL_MISSING[name]])
       for name in FEATURES},
    LABEL: tf.io.FixedLenFeature([1], tf.int64),
}
SEED = 0
EPOCHS = 5


def write_csv(path: str, missing_fraction: float = 0.2, seed: int = 0) -> dict:
  """Writes the 569 standardized rows as CSV with a share of feature cells left empty.

  Returns:
    {'x', 'y'}: the data as written, NaN where a cell is empty.
  """
  from tests.helpers import breast_cancer_data  # pylint: disable=g-import-not-at-top
  x, y = breast_cancer_data()
  x = x.astype(np.float64)
  x[np.random.default_rng(seed).random(x.shape) < missing_fraction] = np.nan
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(','.join(FEATURES + [LABEL]) + '\n')
    for row, label in zip(x, y):
      cells = ['' if np.isnan(v) else f'{v:.6f}' for v in row]
      f.write(','.join(cells + [str(int(label))]) + '\n')
  return {'x': x, 'y': y}


def _parse(records: tf.Tensor) -> tuple:
  """Parses a batch, filling empty or absent features with their FEATURE_SPEC default.

  CsvExampleGen writes an empty list for an empty cell, which a FixedLenFeature default does
  not cover (it applies to absent features only): parse ragged, then pad with the default.
  """
  ragged = tf.io.parse_example(records, {name: tf.io.RaggedFeature(spec.dtype)
                                         for name, spec in FEATURE_SPEC.items()})
  features = {name: ragged[name].to_tensor(default_value=FILL_MISSING[name], shape=[None, 1])
              for name in FEATURES}
  return features, ragged[LABEL].to_tensor(shape=[None, 1])


def input_fn(file_pattern: List[str], data_accessor: tfx.components.DataAccessor,
             batch_size: int = 32) -> tf.data.Dataset:
  """(features, label) batches, repeating, with missing values filled (see _parse)."""
  del data_accessor  # Parsed with the feature spec, whose defaults fill the gaps.
  files = sorted(f for pattern in file_pattern for f in tf.io.gfile.glob(pattern))
  dataset = tf.data.TFRecordDataset(files, compression_type='GZIP')
  return dataset.shuffle(1024, seed=SEED).repeat().batch(batch_size).map(_parse)


def hostile_input_fn(file_pattern: List[str], data_accessor: tfx.components.DataAccessor,
                     batch_size: int = 32) -> tf.data.Dataset:
  """input_fn with inputs 50x their range: int8 calibrated on it loses much of its accuracy."""
  return input_fn(file_pattern, data_accessor, batch_size).map(
      lambda features, label: ({k: v * 50.0 for k, v in features.items()}, label))


def build_model() -> tf_keras.Model:
  inputs = [tf_keras.Input(shape=(1,), name=name) for name in FEATURES]
  x = tf_keras.layers.Concatenate(name='features')(inputs)
  x = tf_keras.layers.Dense(16, activation='relu', name='hidden')(x)
  output = tf_keras.layers.Dense(1, activation='sigmoid', name='malignant')(x)
  model = tf_keras.Model(inputs, output)
  model.compile(tf_keras.optimizers.Adam(1e-2), 'binary_crossentropy',
                metrics=[tf_keras.metrics.BinaryAccuracy()])
  return model


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  tf_keras.utils.set_random_seed(SEED)
  model = build_model()
  model.fit(input_fn(fn_args.train_files, fn_args.data_accessor), epochs=EPOCHS,
            steps_per_epoch=max(1, fn_args.train_steps // EPOCHS), verbose=0)
  model_io.save_keras_model(model, fn_args.serving_model_dir)
