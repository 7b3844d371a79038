"""PTQConverter on bad input and faults: every failure names what is wrong, and nothing is lost.

Each test makes one thing go wrong for real (the model, its ops, the calibration data, the
executor killed mid-run) and checks the error the user reads and that no output is left.
"""
import os
import signal
import subprocess
import sys
import threading

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
import numpy as np
import pytest
import tensorflow as tf
from tfx.orchestration import metadata
import tf_keras

from components import errors
from components.common import tflite
from components.ptq_converter import calibration
from components.ptq_converter import conversion
from tests.conftest import REPO_ROOT
from tests.conftest import write_examples
from tests.helpers import ENV
from tests.helpers import keras_model_artifact
from tests.helpers import relabel
from tests.helpers import run_ptq
from tests.helpers import small_model

# --- ops that cannot be int8 -----------------------------------------------------------------


def _model_with_op(op):
  inputs = tf_keras.Input((8,), name='x')
  x = tf_keras.layers.Dense(8, name='hidden')(inputs)
  x = tf_keras.layers.Lambda(op, name='odd')(x)
  return tf_keras.Model(inputs, tf_keras.layers.Dense(3, activation='softmax', name='out')(x))


def _calibration_data():
  rng = np.random.default_rng(0)
  for _ in range(10):
    yield {'x': rng.random((1, 8), dtype=np.float32)}


@pytest.mark.parametrize('inference_io', ['native', 'float32'])
def test_int8_names_the_ops_left_in_float_and_suggests_the_fallback_mode(inference_io):
  model = _model_with_op(tf.math.sin)

  # The converter itself succeeds here, leaving SIN in float between DEQUANTIZE and QUANTIZE.
  with pytest.raises(errors.ConversionError,
                     match=r"mode='int8': 1 op\(s\) have no int8 kernel and were left in float: "
                     r"SIN \(.*odd/Sin\)\..*Use mode='int8_float_fallback'"):
    conversion.convert(model, 'int8', _calibration_data, inference_io)

  fallback = conversion.convert(model, 'int8_float_fallback', _calibration_data)
  assert [op.split()[0] for op in tflite.float_ops(fallback)] == ['SIN']


def test_ops_with_no_tflite_kernel_at_all_are_named_without_suggesting_a_mode():
  with pytest.raises(errors.ConversionError,
                     match='the model uses TensorFlow ops with no TFLite builtin kernel: Erf. No '
                     'mode converts them') as raised:
    conversion.convert(_model_with_op(tf.math.erf), 'int8', _calibration_data)

  assert 'int8_float_fallback does not help' in str(raised.value)
  assert "keeps them in float" not in str(raised.value)  # No mode to suggest.


# --- labels outside the model's classes ------------------------------------------------------


def test_calibration_labels_outside_the_classes_are_named_with_the_split(
    trained_model_artifact, digits_records, tmp_path):
  examples = write_examples(str(tmp_path / 'examples'),
                            {'train': relabel(digits_records[:1437], {9: 10})})

  with pytest.raises(errors.DataError, match=r"split 'train': label 'label' has values outside "
                     r"the model's 10 classes \[0, 9\]: 10 \(\d+ examples\)"):
    run_ptq(trained_model_artifact, examples, tmp_path / 'ptq')

  assert not os.path.exists(tmp_path / 'ptq' / 'tflite')


# --- a corrupt model; NaN or Inf in the weights ----------------------------------------------


def test_a_corrupt_saved_model_is_named_before_anything_runs(tmp_path):
  source = keras_model_artifact(small_model(), tmp_path / 'source')
  with open(os.path.join(source.uri, 'Format-Serving', 'saved_model.pb'), 'r+b') as f:
    f.truncate(100)  # What a copy interrupted halfway leaves.

  with pytest.raises(errors.ModelLoadError, match=f'Model artifact {source.uri}: the SavedModel '
                     'at .* cannot be reloaded as a Keras 2 \\(tf_keras\\) model'):
    run_ptq(source, None, tmp_path / 'ptq', mode='float32')

  assert not os.path.exists(tmp_path / 'ptq' / 'tflite')


def _model_with_bad_weight(value):
  model = small_model()
  kernel, bias = model.get_layer('hidden').get_weights()
  kernel[3, 5] = value
  model.get_layer('hidden').set_weights([kernel, bias])
  return model


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_nan_or_inf_weights_are_named_by_layer_before_converting(tmp_path, value):
  source = keras_model_artifact(_model_with_bad_weight(value), tmp_path / 'source')

  with pytest.raises(errors.ModelLoadError, match="layer 'hidden' holds 1 NaN or Inf values of "
                     "1024 in weight 'hidden/kernel:0'. Its training diverged"):
    run_ptq(source, None, tmp_path / 'ptq', mode='float32')

  assert not os.path.exists(tmp_path / 'ptq' / 'tflite')


# --- features of the wrong dtype or shape ----------------------------------------------------


def _example(pixels):
  kind = (tf.train.Feature(float_list=tf.train.FloatList(value=pixels))
          if isinstance(pixels[0], float) else
          tf.train.Feature(int64_list=tf.train.Int64List(value=pixels)))
  return tf.train.Example(features=tf.train.Features(feature={'pixels': kind})).SerializeToString()


@pytest.mark.parametrize('pixels,got', [
    ([1] * 64, 'got int64_list of 64 values'),
    ([0.5] * 63, 'got float_list of 63 values'),
])
def test_calibration_features_of_the_wrong_dtype_or_size_are_named(tiny_model, pixels, got):
  records = [_example([0.5] * 64), _example(pixels)]

  with pytest.raises(errors.DataError, match=r"calibration examples from examples/7 do not match "
                     r"the model inputs .*feature 'pixels' of example 1: expected float_list of 64 "
                     rf'values \(shape \[64\]\), {got}'):
    calibration.to_input_arrays(records, tiny_model, source='examples/7')


def test_calibration_feature_mismatch_fails_the_converter_naming_the_artifact(
    trained_model_artifact, tmp_path):
  examples = write_examples(str(tmp_path / 'examples'),
                            {'train': [_example([0.5] * 63)] * 20})

  with pytest.raises(errors.DataError, match=f'calibration examples from {examples.uri} do not '
                     r"match the model inputs .*feature 'pixels' of example 0: expected "
                     'float_list of 64 values'):
    run_ptq(trained_model_artifact, examples, tmp_path / 'ptq', label_key=None)

  assert not os.path.exists(tmp_path / 'ptq' / 'tflite')


# --- an empty Examples split -----------------------------------------------------------------


def test_calibration_on_an_empty_split_is_refused_naming_it(trained_model_artifact, tmp_path):
  examples = write_examples(str(tmp_path / 'examples'), {'train': []})

  with pytest.raises(errors.DataError, match=f"Examples artifact {examples.uri}: split 'train' "
                     r'\(calibration_split\) is empty'):
    run_ptq(trained_model_artifact, examples, tmp_path / 'ptq')

  assert not os.path.exists(tmp_path / 'ptq' / 'tflite')


# --- an executor killed mid-run --------------------------------------------------------------

# A LocalDagRunner run of Importer -> PTQConverter(int8). With `stall`, the executor stops after
# writing the model files but before returning, and waits to be killed.
_PIPELINE = r'''
import os, sys, time
from tfx import v1 as tfx
from tfx.types import standard_artifacts
from components import PTQConverter
from components.common import tflite

pipeline_root, metadata_path, model_uri, examples_uri, stall = sys.argv[1:]
if stall == 'stall':
  def stall_after_writing(tflite_model):
    print('MODEL WRITTEN', flush=True)
    time.sleep(600)
  tflite.io_details = stall_after_writing  # Called right after the model files are written.

model = tfx.dsl.Importer(source_uri=model_uri,
                         artifact_type=standard_artifacts.Model).with_id('model')
examples = tfx.dsl.Importer(source_uri=examples_uri, artifact_type=standard_artifacts.Examples,
                            properties={'split_names': '["train", "eval"]'}).with_id('examples')
int8 = PTQConverter(model=model.outputs['result'], examples=examples.outputs['result'],
                    mode='int8', calibration_samples=50).with_id('int8')
tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
    pipeline_name='killed', pipeline_root=pipeline_root, components=[model, examples, int8],
    metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
        metadata_path),
    beam_pipeline_args=['--direct_running_mode=in_memory', '--direct_num_workers=1']))
'''


def _int8_outputs(metadata_path):
  """[(execution, [(output key, artifact)])] of the `int8` node, as MLMD records them."""
  store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(metadata_path))
  node = store.get_context_by_type_and_name('node', 'killed.int8')
  runs = []
  for execution in store.get_executions_by_context(node.id):
    events = [e for e in store.get_events_by_execution_ids([execution.id])
              if e.type == metadata_store_pb2.Event.OUTPUT]
    artifacts = store.get_artifacts_by_id([e.artifact_id for e in events])
    runs.append((execution, [(e.path.steps[0].key, a) for e, a in zip(events, artifacts)]))
  return runs


@pytest.mark.e2e  # A TFX pipeline in a child process, twice: about a minute.
def test_a_converter_killed_mid_run_publishes_nothing_and_a_rerun_succeeds(
    trained_model_artifact, digits_examples, tmp_path):
  args = [str(tmp_path / 'root'), str(tmp_path / 'metadata.sqlite'), trained_model_artifact.uri,
          digits_examples.uri]
  proc = subprocess.Popen([sys.executable, '-c', _PIPELINE, *args, 'stall'], cwd=REPO_ROOT,
                          env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  watchdog = threading.Timer(300, proc.kill)
  watchdog.start()
  try:
    output = []
    for line in proc.stdout:
      output.append(line)
      if 'MODEL WRITTEN' in line:
        proc.send_signal(signal.SIGKILL)
        break
    assert proc.wait() == -signal.SIGKILL, ''.join(output[-50:])
  finally:
    watchdog.cancel()
    proc.kill()
    proc.stdout.close()

  # The files on disk look complete, but TFX publishes outputs only when the executor returns.
  assert list((tmp_path / 'root').glob('int8/tflite_model/*/model.tflite'))
  [(killed, killed_outputs)] = _int8_outputs(str(tmp_path / 'metadata.sqlite'))
  assert killed.last_known_state == metadata_store_pb2.Execution.RUNNING
  assert killed_outputs == []  # Nothing a downstream step could resolve as an input.

  rerun = subprocess.run([sys.executable, '-c', _PIPELINE, *args, 'run'], cwd=REPO_ROOT, env=ENV,
                         capture_output=True, text=True, timeout=300, check=False)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  runs = _int8_outputs(str(tmp_path / 'metadata.sqlite'))
  [(done, outputs)] = [r for r in runs if r[0].id != killed.id]
  assert done.last_known_state == metadata_store_pb2.Execution.COMPLETE
  assert {key for key, a in outputs if a.state == metadata_store_pb2.Artifact.LIVE} == {
      'tflite_model', 'calibration'}
  [converted] = [a for key, a in outputs if key == 'tflite_model']
  with open(os.path.join(converted.uri, 'model.tflite'), 'rb') as f:
    assert tflite.io_details(f.read())['inputs'][0].dtype == 'int8'
