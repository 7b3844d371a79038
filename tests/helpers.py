"""Helpers that several test modules share: artifacts as the components write them, executor runs,
and the processes and file modes that fault tests need. Fixtures are in tests/conftest.py.
"""
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tfx import types
from tfx.types import standard_artifacts
import tf_keras

from components import PTQConverter
from components import artifact_types
from components import spec_keys
from components.benchmarker import budgets as budgets_lib
from components.benchmarker import executor as bench_executor
from components.common import model_io
from components.common.finetune.config import FineTuneConfig
from tests.conftest import REPO_ROOT

# What a pipeline step's environment holds, for the tests that run one in a child process.
ENV = dict(os.environ, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='2')

# The digits module's input_fn, and fine-tuning short enough for a test.
INPUT_FN = 'pipelines.digits_module.input_fn'
TINY = FineTuneConfig(epochs=1, steps_per_epoch=12, eval_steps=2)

# Fast benchmark settings: two thread counts, few runs.
FAST = budgets_lib.MeasureSettings(threads=(1, 2), warmup_runs=2, min_runs=20,
                                   min_duration_s=0.2)


def channel(artifact_type=standard_artifacts.Model) -> types.Channel:
  return types.Channel(type=artifact_type)


# --- Keras models and their artifacts ----------------------------------------------------------


def small_model(input_name='pixels', input_size=64):
  """Dense(16, name='hidden') -> Dense(10, softmax, name='classifier'); untrained."""
  tf_keras.utils.set_random_seed(0)
  inputs = tf_keras.Input((input_size,), name=input_name)
  hidden = tf_keras.layers.Dense(16, activation='relu', name='hidden')(inputs)
  return tf_keras.Model(inputs, tf_keras.layers.Dense(10, activation='softmax',
                                                      name='classifier')(hidden))


def keras_model_artifact(model, uri):
  """A Model artifact at uri holding model as the Trainer saves it."""
  artifact = standard_artifacts.Model()
  artifact.uri = str(uri)
  model_io.save_keras_model(model, model_io.serving_model_dir(artifact.uri))
  return artifact


def relabel(records, mapping):
  """The serialized tf.Examples with their `label` changed by mapping {old: new}."""
  out = []
  for record in records:
    example = tf.train.Example.FromString(record)
    values = example.features.feature['label'].int64_list.value
    values[0] = mapping.get(values[0], values[0])
    out.append(example.SerializeToString())
  return out


# --- TFLite model artifacts, blessings, evaluations --------------------------------------------


def tflite_model_artifact(uri, data=b'tflite-bytes', mode='int8'):
  """A Model artifact as PTQConverter writes it: the bytes in both places, mode and dtypes."""
  model = standard_artifacts.Model()
  model.uri = str(uri)
  model_io.write_tflite(data, model.uri)
  model.set_string_custom_property(spec_keys.PROP_MODE, mode)
  model.set_string_custom_property(spec_keys.PROP_INPUT_DTYPES, '{"pixels": "int8"}')
  model.set_string_custom_property(spec_keys.PROP_OUTPUT_DTYPES, '{"out": "int8"}')
  return model


def blessing_artifact(uri, model, blessed):
  """A ModelBlessing as the Evaluator writes it, for `model`."""
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = str(uri)
  blessing.set_int_custom_property('blessed', int(blessed))
  blessing.set_string_custom_property('current_model', model.uri)
  return blessing


def evaluation_with_failure(uri):
  """A ModelEvaluation with a real TFMA validations file: accuracy 0.9 fails the bound 0.99."""
  # TFMA is slow to import; only the tests that read an evaluation need it.
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  from tensorflow_model_analysis.proto import validation_result_pb2  # pylint: disable=g-import-not-at-top
  evaluation = standard_artifacts.ModelEvaluation()
  evaluation.uri = str(uri)
  os.makedirs(evaluation.uri)
  result = validation_result_pb2.ValidationResult(validation_ok=False)
  failure = result.metric_validations_per_slice.add().failures.add()
  failure.metric_key.name = 'sparse_categorical_accuracy'
  failure.metric_key.model_name = 'candidate'
  failure.metric_threshold.value_threshold.lower_bound.value = 0.99
  failure.metric_value.double_value.value = 0.9
  with tf.io.TFRecordWriter(os.path.join(evaluation.uri, 'validations.tfrecord')) as writer:
    writer.write(result.SerializeToString())
  assert not tfma.load_validation_result(evaluation.uri).validation_ok
  return evaluation


# --- executor runs -------------------------------------------------------------------------------


def run_ptq(model, examples, out_dir, mode='int8', calibration_samples=100, label_key='label',
            **kwargs):
  """Runs the PTQConverter executor with the exec properties its component makes.

  Returns:
    (tflite_model, calibration) output artifacts, at out_dir/tflite and out_dir/calibration.
  """
  component = PTQConverter(
      model=channel(), examples=None if examples is None else channel(
          standard_artifacts.Examples), mode=mode, calibration_samples=calibration_samples,
      label_key=label_key, **kwargs)
  tflite = standard_artifacts.Model()
  tflite.uri = os.path.join(str(out_dir), 'tflite')
  calibration = standard_artifacts.Examples()
  calibration.uri = os.path.join(str(out_dir), 'calibration')
  inputs = {spec_keys.MODEL_KEY: [model]}
  if examples is not None:
    inputs[spec_keys.EXAMPLES_KEY] = [examples]
  component.EXECUTOR_SPEC.executor_class().Do(
      inputs, {spec_keys.TFLITE_MODEL_KEY: [tflite], spec_keys.CALIBRATION_KEY: [calibration]},
      dict(component.exec_properties))
  return tflite, calibration


def run_optimizer(component, source, examples, out_dir):
  """Runs the executor of an optimizer component (Pruner, Clusterer, QATTrainer).

  Returns:
    (optimized_model, model_run) output artifacts, at out_dir/model and out_dir/run.
  """
  out = standard_artifacts.Model()
  out.uri = os.path.join(str(out_dir), 'model')
  run = standard_artifacts.ModelRun()
  run.uri = os.path.join(str(out_dir), 'run')
  component.EXECUTOR_SPEC.executor_class().Do(
      {spec_keys.MODEL_KEY: [source], spec_keys.EXAMPLES_KEY: [examples]},
      {spec_keys.OPTIMIZED_MODEL_KEY: [out], spec_keys.MODEL_RUN_KEY: [run]},
      dict(component.exec_properties))
  return out, run


def run_benchmark(tmp_path, name, model, blessing=None, budgets=budgets_lib.Budgets(),
                  settings=FAST):
  """Runs the DeviceBenchmarker executor on the host; returns its output at benchmarks/<name>."""
  output = artifact_types.DeviceBenchmark()
  output.uri = str(tmp_path / 'benchmarks' / name)
  inputs = {spec_keys.MODEL_KEY: [model]}
  if blessing is not None:
    inputs[spec_keys.MODEL_BLESSING_KEY] = [blessing]
  executor = bench_executor.Executor(
      bench_executor.Executor.Context(tmp_dir=str(tmp_path / 'tmp' / name), unique_id='1'))
  executor.Do(inputs, {spec_keys.BENCHMARK_KEY: [output]}, {
      spec_keys.TARGET_KEY: 'host',
      spec_keys.BENCHMARK_SETTINGS_KEY: settings.to_json(),
      spec_keys.BUDGETS_KEY: budgets.to_json(),
      spec_keys.VARIANT_KEY: name,
  })
  return output


def read_json(path):
  with open(path) as f:
    return json.load(f)


# --- processes, servers and file modes -----------------------------------------------------------


def run_without_root_override(code, *args):
  """Runs Python code in a child process to which file modes apply, even when tests run as root."""
  command = [sys.executable, '-c', code, *args]
  if os.geteuid() == 0:
    if not shutil.which('setpriv'):
      pytest.skip('running as root without setpriv: a read-only mode cannot be enforced')
    # Root writes through any file mode with CAP_DAC_OVERRIDE; a child without it cannot.
    caps = '-dac_override,-dac_read_search'
    command = ['setpriv', f'--bounding-set={caps}', f'--inh-caps={caps}', *command]
  return subprocess.run(command, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True,
                        timeout=120, check=False)


@contextlib.contextmanager
def read_only(path):
  os.chmod(path, 0o555)
  try:
    yield
  finally:
    os.chmod(path, 0o755)


@contextlib.contextmanager
def http_server(directory):
  """`python -m http.server` serving directory on a free loopback port; yields its URL."""
  server = subprocess.Popen(
      [sys.executable, '-u', '-m', 'http.server', '0', '--bind', '127.0.0.1', '--directory',
       str(directory)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  try:
    port = re.search(r'port (\d+)', server.stdout.readline()).group(1)
    yield f'http://127.0.0.1:{port}'
  finally:
    server.terminate()
    server.wait(timeout=10)
    server.stdout.close()


# --- a small conv net for the optimization logic (pruning, clustering, QAT) -----------------------

OPTIMIZATION_STEPS = 20


def conv_model(seed=0):
  """Conv (1 input channel) -> Conv (8) -> Dense (8*4*4=128 -> 16) -> Dense(4); untrained.

  Layers with weights: conv_a, conv_b, dense_a, head.
  """
  tf_keras.utils.set_random_seed(seed)
  inputs = tf_keras.Input((64,), name='pixels')
  x = tf_keras.layers.Reshape((8, 8, 1))(inputs)
  x = tf_keras.layers.Conv2D(8, 3, padding='same', activation='relu', name='conv_a')(x)
  x = tf_keras.layers.Conv2D(8, 3, padding='same', activation='relu', name='conv_b')(x)
  x = tf_keras.layers.MaxPooling2D()(x)
  x = tf_keras.layers.Flatten()(x)
  x = tf_keras.layers.Dense(16, activation='relu', name='dense_a')(x)
  outputs = tf_keras.layers.Dense(4, activation='softmax', name='head')(x)
  return tf_keras.Model(inputs, outputs)


def random_data(n=256, seed=0):
  """(pixels, labels) for conv_model: uniform pixels, labels in [0, 4)."""
  rng = np.random.default_rng(seed)
  return rng.random((n, 64), dtype=np.float32), rng.integers(0, 4, n)


def fit_briefly(model, callbacks=()):
  """OPTIMIZATION_STEPS steps of training on random_data; returns the model."""
  x, y = random_data()
  model.compile('adam', 'sparse_categorical_crossentropy')
  model.fit(x, y, batch_size=16, epochs=1, steps_per_epoch=OPTIMIZATION_STEPS,
            callbacks=list(callbacks), verbose=0)
  return model


def prune_briefly(config, log_dir, model=None):
  """Prunes (conv_model by default) while fitting briefly; returns (stripped, pruned layers)."""
  from components.pruner import pruning  # pylint: disable=g-import-not-at-top
  model = model or conv_model()
  wrapped = pruning.prune(model, config, OPTIMIZATION_STEPS)
  fit_briefly(wrapped, pruning.callbacks(str(log_dir)))
  return pruning.strip(wrapped), pruning.prunable_layers(model, config)


def int8_of(model):
  """The int8 TFLite conversion of a conv_model-shaped model, calibrated on random_data."""
  from components.ptq_converter import calibration  # pylint: disable=g-import-not-at-top
  from components.ptq_converter import conversion  # pylint: disable=g-import-not-at-top
  return conversion.convert(model, 'int8',
                            calibration.representative_dataset({'pixels': random_data(32)[0]}))


def breast_cancer_data():
  """scikit-learn's breast-cancer data (binary, 30 features), standardized and shuffled (seed 0).

  Returns:
    (x float32 [569, 30], y int [569]): the first 400 rows are the tests' training rows.
  """
  from sklearn.datasets import load_breast_cancer  # pylint: disable=g-import-not-at-top
  x, y = load_breast_cancer(return_X_y=True)
  x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
  order = np.random.default_rng(0).permutation(len(x))
  return x[order], y[order]
