"""Shared fixtures: real digits data as a TFX Examples artifact and a real trained SavedModel."""
import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
from tfx.types import artifact_utils  # noqa: E402
from tfx.types import standard_artifacts  # noqa: E402

from components.common import model_io  # noqa: E402
from pipelines import data  # noqa: E402
from pipelines import digits_module  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_examples(uri: str, splits: dict) -> standard_artifacts.Examples:
  """An Examples artifact at uri with gzip TFRecord files per split, as ExampleGen writes."""
  for split, records in splits.items():
    split_dir = os.path.join(uri, f'Split-{split}')
    os.makedirs(split_dir, exist_ok=True)
    options = tf.io.TFRecordOptions(compression_type='GZIP')
    with tf.io.TFRecordWriter(os.path.join(split_dir, 'data_tfrecord-00000-of-00001.gz'),
                              options) as writer:
      for record in records:
        writer.write(record)
  examples = standard_artifacts.Examples()
  examples.uri = uri
  examples.split_names = artifact_utils.encode_split_names(list(splits))
  return examples


@pytest.fixture(scope='session')
def digits_records():
  """The 1,797 digits as serialized tf.Examples."""
  return [e.SerializeToString() for e in data.digits_examples()]


@pytest.fixture(scope='session')
def digits_examples(tmp_path_factory, digits_records):
  """Examples artifact with train (first 1,437) and eval (last 360) splits."""
  uri = str(tmp_path_factory.mktemp('examples'))
  return write_examples(uri, {'train': digits_records[:1437], 'eval': digits_records[1437:]})


@pytest.fixture(scope='session')
def digits_arrays(digits_records):
  parsed = tf.io.parse_example(tf.constant(digits_records), digits_module.FEATURE_SPEC)
  return parsed[data.PIXELS_KEY].numpy(), parsed[data.LABEL_KEY].numpy()


@pytest.fixture(scope='session')
def trained_model_artifact(tmp_path_factory, digits_arrays):
  """A Model artifact holding the digits CNN, trained briefly, saved as the Trainer saves it."""
  tf_keras.utils.set_random_seed(0)
  pixels, labels = digits_arrays
  model = digits_module.build_model()
  model.fit({data.PIXELS_KEY: pixels[:1437]}, labels[:1437], epochs=3, batch_size=32, verbose=0)
  artifact = standard_artifacts.Model()
  artifact.uri = str(tmp_path_factory.mktemp('model'))
  model_io.save_keras_model(model, os.path.join(artifact.uri, 'Format-Serving'))
  return artifact


@pytest.fixture(scope='session')
def tiny_model():
  """A small untrained model with one input named `pixels`."""
  tf_keras.utils.set_random_seed(0)
  inputs = tf_keras.Input((data.NUM_PIXELS,), name=data.PIXELS_KEY)
  x = tf_keras.layers.Reshape((8, 8, 1))(inputs)
  x = tf_keras.layers.Conv2D(4, 3, activation='relu')(x)
  x = tf_keras.layers.Flatten()(x)
  outputs = tf_keras.layers.Dense(data.NUM_CLASSES, activation='softmax')(x)
  return tf_keras.Model(inputs, outputs)


def random_pixels(n=32, seed=0):
  return np.random.default_rng(seed).random((n, data.NUM_PIXELS), dtype=np.float32)


@pytest.fixture(scope='session')
def tflite_models(tiny_model):
  """Two real TFLite conversions of tiny_model: float32 and int8 (int8 is the smaller)."""
  from components.common import modes  # pylint: disable=g-import-not-at-top
  from components.ptq_converter import conversion  # pylint: disable=g-import-not-at-top

  def representative():
    for row in random_pixels(16):
      yield {data.PIXELS_KEY: row[None]}
  return {
      'fp32': conversion.convert(tiny_model, modes.FLOAT32),
      'int8': conversion.convert(tiny_model, modes.INT8, representative),
  }


@pytest.fixture(autouse=True, scope='session')
def _argv_without_pytest_options():
  """sys.argv as a plain program's: TFX's Beam executors parse it with absl (flags.FLAGS(sys.argv
  + beam args)), which reads pytest's `-v --durations=15` as `--verbosity=--durations=15`.

  Session-scoped, so that module- and session-scoped fixtures that run a pipeline get it too.
  """
  saved = sys.argv
  sys.argv = sys.argv[:1]
  yield
  sys.argv = saved
