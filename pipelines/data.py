"""The embedded default dataset: scikit-learn's digits, exported as tf.Examples.

scikit-learn ships the 1,797 8x8 images inside its wheel, so the demo downloads nothing.
"""
import os

import numpy as np
import tensorflow as tf

PIXELS_KEY = 'pixels'
LABEL_KEY = 'label'
NUM_PIXELS = 64
NUM_CLASSES = 10
FILE_NAME = 'digits.tfrecord'


def digits_examples():
  """Yields one tf.Example per digit: `pixels` (64 floats in [0, 1]) and `label` (0-9)."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  # Pixel intensities are 0..16; scaling here keeps the model free of preprocessing layers.
  images = (digits.images.reshape(-1, NUM_PIXELS) / 16.0).astype(np.float32)
  for pixels, label in zip(images, digits.target):
    yield tf.train.Example(features=tf.train.Features(feature={
        PIXELS_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=pixels)),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }))


def export_digits(data_root: str) -> str:
  """Writes the digits as a TFRecord file under data_root once; later calls reuse it.

  Args:
    data_root: directory that becomes ImportExampleGen's input_base.

  Returns:
    Path of the TFRecord file.
  """
  path = os.path.join(data_root, FILE_NAME)
  if os.path.exists(path):
    return path
  os.makedirs(data_root, exist_ok=True)
  partial = path + '.partial'
  with tf.io.TFRecordWriter(partial) as writer:
    for example in digits_examples():
      writer.write(example.SerializeToString())
  os.replace(partial, path)  # Atomic: a crash never leaves a truncated dataset behind.
  return path


if __name__ == '__main__':
  import sys  # pylint: disable=g-import-not-at-top
  print(export_digits(sys.argv[1] if len(sys.argv) > 1 else 'data'))
