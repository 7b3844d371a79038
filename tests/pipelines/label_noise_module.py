"""The digits module, trained on labels corrupted the way LABEL_NOISE_ENV says: a worse model.

What a bad training run looks like to the release gates: new data with broken labels. The eval
split stays true, so a model trained this way is measurably worse than one trained on clean
labels, while its int8 conversion is still faithful to its own float32 model.

`TFX_EDGE_TEST_LABEL_NOISE`:
- unset or `none`: clean labels (the digits module as it is);
- `flip30`: 30% of the training labels, chosen by a hash of the example, replaced by another
  class;
- `kill3`: every 3 labelled as 5: one class fails while the others hold.
"""
import os

import tensorflow as tf
import tf_keras
from tfx import v1 as tfx

from components.common import model_io
from pipelines import digits_module

LABEL_NOISE_ENV = 'TFX_EDGE_TEST_LABEL_NOISE'
input_fn = digits_module.input_fn  # Fine-tuning and calibration read the data as it is.


def _corrupt(noise: str):
  def corrupt(features, label):
    if noise == 'flip30':
      # A stable per-example choice: the pixel sum hashed into [0, 100).
      key = tf.cast(tf.reduce_sum(features['pixels'], axis=-1) * 1000.0, tf.int64) % 100
      key = tf.cast(tf.reshape(key, tf.shape(label)), label.dtype)
      return features, tf.where(key < 30, (label + 1 + key % 9) % 10, label)
    if noise == 'kill3':
      return features, tf.where(label == 3, tf.constant(5, label.dtype), label)
    return features, label
  return corrupt


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  """Trains the digits CNN as digits_module does, on corrupted training labels."""
  noise = os.environ.get(LABEL_NOISE_ENV, 'none')
  if noise not in ('none', 'flip30', 'kill3'):
    raise ValueError(f'{LABEL_NOISE_ENV}={noise!r}: accepted none, flip30, kill3.')
  tf_keras.utils.set_random_seed(digits_module.SEED)
  train = input_fn(fn_args.train_files, fn_args.data_accessor, 32).map(_corrupt(noise))
  model = digits_module.build_model()
  model.fit(train, epochs=digits_module.EPOCHS,
            steps_per_epoch=max(1, fn_args.train_steps // digits_module.EPOCHS), verbose=0)
  model_io.save_keras_model(model, fn_args.serving_model_dir)
