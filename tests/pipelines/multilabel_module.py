"""A user's multi-label module: three independent yes/no tags of a digit, a logit per tag.

Labels are multi-hot (`tags`: three 0/1 values per example: even, at least 5, a multiple of 3)
and the model ends in three linear units, which look like multi-class logits: only
`--task multilabel_logits` tells the gate (BinaryAccuracy at logit 0 over every tag) and the
fine-tuning (binary cross-entropy from logits) what they are.
"""
import os
from typing import List

import numpy as np
import tensorflow as tf
import tf_keras
from tfx import v1 as tfx

from components.common import model_io
from pipelines import data

TAGS = 'tags'
NUM_TAGS = 3
FEATURE_SPEC = {
    data.PIXELS_KEY: tf.io.FixedLenFeature([data.NUM_PIXELS], tf.float32),
    TAGS: tf.io.FixedLenFeature([NUM_TAGS], tf.int64),
}
SEED = 0
EPOCHS = 5


def tags_of(digit: int) -> List[int]:
  """The multi-hot tags of a digit."""
  return [int(digit % 2 == 0), int(digit >= 5), int(digit % 3 == 0)]


def write_tfrecords(data_root: str) -> None:
  """The 1,797 digits with their tags instead of the class, as gzip tf.Example TFRecords."""
  os.makedirs(data_root, exist_ok=True)
  options = tf.io.TFRecordOptions(compression_type='GZIP')
  with tf.io.TFRecordWriter(os.path.join(data_root, 'digits_tags.tfrecord.gz'), options) as w:
    for example in data.digits_examples():
      feature = example.features.feature
      digit = feature.pop(data.LABEL_KEY).int64_list.value[0]
      feature[TAGS].int64_list.value.extend(tags_of(digit))
      w.write(example.SerializeToString())


def input_fn(file_pattern: List[str], data_accessor: tfx.components.DataAccessor,
             batch_size: int = 32) -> tf.data.Dataset:
  """(features, multi-hot tags) batches, repeating."""
  del data_accessor
  files = sorted(f for pattern in file_pattern for f in tf.io.gfile.glob(pattern))
  dataset = tf.data.TFRecordDataset(files, compression_type='GZIP')
  return (dataset.shuffle(2048, seed=SEED).repeat().batch(batch_size)
          .map(lambda records: tf.io.parse_example(records, FEATURE_SPEC))
          .map(lambda features: (features, features.pop(TAGS))))


def build_model() -> tf_keras.Model:
  pixels = tf_keras.Input((data.NUM_PIXELS,), name=data.PIXELS_KEY)
  x = tf_keras.layers.Dense(32, activation='relu', name='dense')(pixels)
  logits = tf_keras.layers.Dense(NUM_TAGS, name='tag_logits')(x)
  model = tf_keras.Model(pixels, logits)
  model.compile(tf_keras.optimizers.Adam(3e-3),
                tf_keras.losses.BinaryCrossentropy(from_logits=True))
  return model


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  tf_keras.utils.set_random_seed(SEED)
  model = build_model()
  model.fit(input_fn(fn_args.train_files, fn_args.data_accessor), epochs=EPOCHS,
            steps_per_epoch=max(1, fn_args.train_steps // EPOCHS), verbose=0)
  model_io.save_keras_model(model, fn_args.serving_model_dir)


def litert_tag_accuracy(tflite_model: bytes, pixels: np.ndarray, tags: np.ndarray) -> float:
  """Share of (example, tag) pairs a device gets right (inputs rounded to int8 as it does)."""
  interp = tf.lite.Interpreter(model_content=tflite_model)
  interp.allocate_tensors()
  [inp], [out] = interp.get_input_details(), interp.get_output_details()
  correct = 0
  for row, labels in zip(pixels, tags):
    value = row[None].astype(np.float32)
    if inp['dtype'] == np.int8:
      scale, zero = inp['quantization']
      value = np.clip(np.round(value / scale + zero), -128, 127).astype(np.int8)
    interp.set_tensor(inp['index'], value)
    interp.invoke()
    logits = interp.get_tensor(out['index']).astype(np.float32)[0]
    if out['dtype'] == np.int8:
      scale, zero = out['quantization']
      logits = (logits - zero) * scale
    correct += int(np.sum((logits > 0) == labels.astype(bool)))
  return correct / tags.size
