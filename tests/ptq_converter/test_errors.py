"""Bad input, faults and secrets: every failure names what is wrong, and nothing is lost.

Each test makes one thing go wrong for real (a model, the data, an executor killed, a directory
without write permission, a corrupt key) and checks the error the user reads and what stays safe.
"""
import base64
import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import traceback

from cryptography.hazmat.primitives import serialization
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx import types
from tfx.orchestration import metadata
from tfx.types import standard_artifacts
import tf_keras

from components import Pruner
from components import errors
from components import spec_keys
from components.common import model_io
from components.common import tflite
from components.common.finetune.config import FineTuneConfig
from components.gate import accuracy_gate_config
from components.gate import validate_eval_config
from components.ota import client
from components.ota import signing_keys
from components.ota import repository
from components.ptq_converter import calibration
from components.ptq_converter import conversion
from components.ptq_converter import executor as ptq_executor
from components.pruner import executor as pruner_executor
from components.pusher import publisher as publisher_lib
from tests.conftest import REPO_ROOT
from tests.conftest import write_examples

INPUT_FN = 'pipelines.digits_module.input_fn'
TINY = FineTuneConfig(epochs=1, steps_per_epoch=12, eval_steps=2)
ENV = dict(os.environ, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='2')

# --- helpers ---------------------------------------------------------------------------------


def _model_artifact(model, path):
  artifact = standard_artifacts.Model()
  artifact.uri = str(path)
  model_io.save_keras_model(model, os.path.join(artifact.uri, 'Format-Serving'))
  return artifact


def _small_model(input_name='pixels', input_size=64):
  tf_keras.utils.set_random_seed(0)
  inputs = tf_keras.Input((input_size,), name=input_name)
  hidden = tf_keras.layers.Dense(16, activation='relu', name='hidden')(inputs)
  return tf_keras.Model(inputs, tf_keras.layers.Dense(10, activation='softmax',
                                                      name='classifier')(hidden))


def _ptq(model, examples, tmp_path, **exec_properties):
  """Runs the PTQConverter executor; returns its tflite_model output."""
  tflite = standard_artifacts.Model()
  tflite.uri = str(tmp_path / 'ptq' / 'tflite')
  calib = standard_artifacts.Examples()
  calib.uri = str(tmp_path / 'ptq' / 'calibration')
  props = {spec_keys.MODE_KEY: 'int8', spec_keys.INFERENCE_IO_KEY: 'native',
           spec_keys.CALIBRATION_SPLIT_KEY: 'train', spec_keys.CALIBRATION_SAMPLES_KEY: 100,
           spec_keys.LABEL_KEY: 'label', spec_keys.SEED_KEY: 0}
  props.update(exec_properties)
  inputs = {spec_keys.MODEL_KEY: [model]}
  if examples is not None:
    inputs[spec_keys.EXAMPLES_KEY] = [examples]
  ptq_executor.Executor().Do(inputs, {spec_keys.TFLITE_MODEL_KEY: [tflite],
                                      spec_keys.CALIBRATION_KEY: [calib]}, props)
  return tflite


def _prune(model, examples, tmp_path):
  """Runs the Pruner executor; returns (optimized_model, model_run) outputs."""
  component = Pruner(model=types.Channel(type=standard_artifacts.Model),
                     examples=types.Channel(type=standard_artifacts.Examples), input_fn=INPUT_FN,
                     fine_tuning=TINY)
  out = standard_artifacts.Model()
  out.uri = str(tmp_path / 'pruned' / 'model')
  run = standard_artifacts.ModelRun()
  run.uri = str(tmp_path / 'pruned' / 'run')
  pruner_executor.Executor().Do(
      {spec_keys.MODEL_KEY: [model], spec_keys.EXAMPLES_KEY: [examples]},
      {spec_keys.OPTIMIZED_MODEL_KEY: [out], spec_keys.MODEL_RUN_KEY: [run]},
      dict(component.exec_properties))
  return out, run


def _relabel(records, mapping):
  """The records with labels changed by mapping {old: new}."""
  out = []
  for record in records:
    example = tf.train.Example.FromString(record)
    values = example.features.feature['label'].int64_list.value
    values[0] = mapping.get(values[0], values[0])
    out.append(example.SerializeToString())
  return out


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
                     'mode converts them'):
    conversion.convert(_model_with_op(tf.math.erf), 'int8', _calibration_data)


# --- labels outside the model's classes ------------------------------------------------------


@pytest.mark.parametrize('mapping,values', [({9: 10}, '10'), ({0: -1}, '-1')])
def test_fine_tuning_labels_outside_the_classes_are_named_with_the_split(
    trained_model_artifact, digits_records, tmp_path, mapping, values):
  examples = write_examples(str(tmp_path / 'examples'), {
      'train': _relabel(digits_records[:1437], mapping), 'eval': digits_records[1437:]})

  with pytest.raises(ValueError, match=f"split 'train': label values {values} are outside the "
                     r"model's 10 classes \[0, 9\] \(it has 10 output units\); fine-tuning "
                     'stopped at the first batch'):
    _prune(trained_model_artifact, examples, tmp_path)

  assert not os.path.exists(tmp_path / 'pruned' / 'model' / 'Format-Serving')


def test_calibration_labels_outside_the_classes_are_named_with_the_split(
    trained_model_artifact, digits_records, tmp_path):
  examples = write_examples(str(tmp_path / 'examples'),
                            {'train': _relabel(digits_records[:1437], {9: 10})})

  with pytest.raises(ValueError, match=r"split 'train': label 'label' has values outside the "
                     r"model's 10 classes \[0, 9\]: 10 \(\d+ examples\)"):
    _ptq(trained_model_artifact, examples, tmp_path)

  assert not os.path.exists(tmp_path / 'ptq' / 'tflite')


# --- an eval config naming an unknown metric -------------------------------------------------


def test_gate_with_an_unknown_metric_fails_when_built_and_suggests_the_name():
  with pytest.raises(ValueError, match="class_name='SparseCategoricalAccurcy', which TFMA cannot "
                     r"create \(ValueError: Unknown metric function.*Accepted: a TFMA metric.*a "
                     "tf_keras.metrics class.*Did you mean 'SparseCategoricalAccuracy'"):
    accuracy_gate_config('label', extra_metrics=['SparseCategoricalAccurcy'])


def test_gate_extra_metrics_that_exist_are_added():
  config = accuracy_gate_config('label', extra_metrics=['AUC', 'MultiClassConfusionMatrixPlot'])

  assert [m.class_name for m in config.metrics_specs[0].metrics][2:] == [
      'AUC', 'MultiClassConfusionMatrixPlot']


def test_a_user_eval_config_with_a_missing_metric_module_is_named():
  config = tfma.EvalConfig(metrics_specs=[tfma.MetricsSpec(metrics=[
      tfma.MetricConfig(class_name='ExampleCount'),
      tfma.MetricConfig(class_name='F2Score', module='my_metrics.scores')])])

  with pytest.raises(ValueError, match="class_name='F2Score' in module 'my_metrics.scores', which "
                     "TFMA cannot create \\(ModuleNotFoundError: No module named 'my_metrics'\\)"):
    validate_eval_config(config)


# --- a corrupt model; NaN or Inf in the weights ----------------------------------------------


def test_a_corrupt_saved_model_is_named_before_anything_runs(tmp_path):
  source = _model_artifact(_small_model(), tmp_path / 'source')
  with open(os.path.join(source.uri, 'Format-Serving', 'saved_model.pb'), 'r+b') as f:
    f.truncate(100)  # What a copy interrupted halfway leaves.

  with pytest.raises(model_io.ModelLoadError, match=f'Model artifact {source.uri}: the SavedModel '
                     'at .* cannot be reloaded as a Keras 2 \\(tf_keras\\) model'):
    _ptq(source, None, tmp_path, **{spec_keys.MODE_KEY: 'float32'})

  assert not os.path.exists(tmp_path / 'ptq' / 'tflite')



def _model_with_bad_weight(value):
  model = _small_model()
  kernel, bias = model.get_layer('hidden').get_weights()
  kernel[3, 5] = value
  model.get_layer('hidden').set_weights([kernel, bias])
  return model


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_nan_or_inf_weights_are_named_by_layer_before_converting(tmp_path, value):
  source = _model_artifact(_model_with_bad_weight(value), tmp_path / 'source')

  with pytest.raises(model_io.ModelLoadError, match="layer 'hidden' holds 1 NaN or Inf values of "
                     "1024 in weight 'hidden/kernel:0'. Its training diverged"):
    _ptq(source, None, tmp_path, **{spec_keys.MODE_KEY: 'float32'})

  assert not os.path.exists(tmp_path / 'ptq' / 'tflite')


def test_nan_weights_stop_fine_tuning_before_it_starts(digits_examples, tmp_path):
  source = _model_artifact(_model_with_bad_weight(float('nan')), tmp_path / 'source')

  with pytest.raises(model_io.ModelLoadError, match="layer 'hidden' holds 1 NaN"):
    _prune(source, digits_examples, tmp_path)

  assert not os.path.exists(tmp_path / 'pruned')  # Not even TensorBoard logs: no training.


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

  with pytest.raises(ValueError, match=r"calibration examples from examples/7 do not match the "
                     r"model inputs .*feature 'pixels' of example 1: expected float_list of 64 "
                     rf'values \(shape \[64\]\), {got}'):
    calibration.to_input_arrays(records, tiny_model, source='examples/7')


def test_calibration_feature_mismatch_fails_the_converter_naming_the_artifact(
    trained_model_artifact, tmp_path):
  examples = write_examples(str(tmp_path / 'examples'),
                            {'train': [_example([0.5] * 63)] * 20})

  with pytest.raises(ValueError, match=f'calibration examples from {examples.uri} do not match'):
    _ptq(trained_model_artifact, examples, tmp_path, **{spec_keys.LABEL_KEY: None})

  assert not os.path.exists(tmp_path / 'ptq' / 'tflite')


@pytest.mark.parametrize('model,message', [
    (lambda: _small_model(input_name='image'),
     r"input_fn gives no feature 'image', which model input 'image' reads \(expected float32 of "
     r"shape \(None, 64\)\); it gives \['pixels'\]"),
    (lambda: _small_model(input_size=32),
     r"feature 'pixels' from input_fn is float32 of shape \(32, 64\), but model input 'pixels' "
     r'expects float32 of shape \(None, 32\)'),
])
def test_fine_tuning_features_that_do_not_fit_the_model_fail_before_training(
    digits_examples, tmp_path, model, message):
  source = _model_artifact(model(), tmp_path / 'source')

  with pytest.raises(ValueError, match=f"Examples artifact {digits_examples.uri}, split 'train': "
                     + message):
    _prune(source, digits_examples, tmp_path)

  assert not os.path.exists(tmp_path / 'pruned')


# --- an empty Examples split -----------------------------------------------------------------


@pytest.mark.parametrize('empty,parameter', [('train', 'fine_tuning.train_split'),
                                             ('eval', 'fine_tuning.eval_split')])
def test_fine_tuning_on_an_empty_split_is_refused_naming_it(trained_model_artifact, digits_records,
                                                           tmp_path, empty, parameter):
  splits = {'train': digits_records[:200], 'eval': digits_records[200:300]}
  splits[empty] = []
  examples = write_examples(str(tmp_path / 'examples'), splits)

  with pytest.raises(ValueError, match=f"split '{empty}' \\({parameter}\\) is empty: the 1 "
                     'file\\(s\\) matching .* hold no examples'):
    _prune(trained_model_artifact, examples, tmp_path)

  assert not os.path.exists(tmp_path / 'pruned')


def test_calibration_on_an_empty_split_is_refused_naming_it(trained_model_artifact, tmp_path):
  examples = write_examples(str(tmp_path / 'examples'), {'train': []})

  with pytest.raises(ValueError, match=f"Examples artifact {examples.uri}: split 'train' "
                     r'\(calibration_split\) is empty'):
    _ptq(trained_model_artifact, examples, tmp_path)

  assert not os.path.exists(tmp_path / 'ptq')


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
  [tflite] = [a for key, a in outputs if key == 'tflite_model']
  with open(os.path.join(tflite.uri, 'model.tflite'), 'rb') as f:
    assert tflite.io_details(f.read())['inputs'][0].dtype == 'int8'


# --- a push that fails partway ---------------------------------------------------------------


def _run_without_root_override(code, *args):
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
def _read_only(path):
  os.chmod(path, 0o555)
  try:
    yield
  finally:
    os.chmod(path, 0o755)


def _version_intact(pub, version, model):
  path = pub.versions('digits')[version]
  with open(os.path.join(path, publisher_lib.MODEL_FILE), 'rb') as f:
    assert f.read() == model
  with open(os.path.join(path, publisher_lib.METADATA_FILE)) as f:
    assert json.load(f)['sha256'] == hashlib.sha256(model).hexdigest()


_PUBLISH_TO_DIRECTORY = '''
import sys
from components.pusher import publisher
publisher.VersionedDirectoryPublisher(sys.argv[1]).publish('digits', b'model-2', {})
'''


def test_a_read_only_destination_fails_the_push_and_keeps_the_previous_version(tmp_path):
  pub = publisher_lib.VersionedDirectoryPublisher(str(tmp_path))
  pub.publish('digits', b'model-1', {})

  with _read_only(tmp_path / 'digits'):
    proc = _run_without_root_override(_PUBLISH_TO_DIRECTORY, str(tmp_path))

  assert proc.returncode == 1 and 'PermissionError' in proc.stderr, proc.stderr[-2000:]
  assert sorted(pub.versions('digits')) == [1]
  _version_intact(pub, 1, b'model-1')
  assert pub.publish('digits', b'model-2', {}).version == 2


@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EIO], ids=['disk-full', 'io-error'])
def test_a_write_failing_midway_keeps_the_previous_version_and_no_leftovers(tmp_path, monkeypatch,
                                                                           code):
  pub = publisher_lib.VersionedDirectoryPublisher(str(tmp_path))
  pub.publish('digits', b'model-1', {})

  def failing_fsync(fd):
    raise OSError(code, os.strerror(code))

  monkeypatch.setattr(os, 'fsync', failing_fsync)  # The model file is half-written when it fails.
  with pytest.raises(OSError, match=os.strerror(code)):
    pub.publish('digits', b'model-2', {})
  monkeypatch.undo()

  assert sorted(os.listdir(tmp_path / 'digits')) == ['00000001']
  _version_intact(pub, 1, b'model-1')
  assert pub.publish('digits', b'model-2', {}).version == 2


_PUBLISH_TO_OTA = '''
import sys
from components.ota import repository
repository.OTARepository(sys.argv[1], sys.argv[2]).publish('digits', b'model-two')
'''


@contextlib.contextmanager
def _served(directory):
  """`python -m http.server` on a free loopback port; yields its URL."""
  server = subprocess.Popen(
      [sys.executable, '-u', '-m', 'http.server', '0', '--bind', '127.0.0.1', '--directory',
       directory], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  try:
    port = re.search(r'port (\d+)', server.stdout.readline()).group(1)
    yield f'http://127.0.0.1:{port}'
  finally:
    server.terminate()
    server.wait(timeout=10)


@pytest.mark.parametrize('read_only', ['metadata', 'targets/digits/stable'])
def test_a_push_denied_permission_keeps_the_release_verifiable_and_a_rerun_completes(
    tmp_path, read_only):
  repo = repository.OTARepository(str(tmp_path / 'repo'), str(tmp_path / 'keys'))
  repo.init()
  repo.publish('digits', b'model-one')

  with _read_only(os.path.join(repo.repo_dir, read_only)):
    proc = _run_without_root_override(_PUBLISH_TO_OTA, repo.repo_dir, str(tmp_path / 'keys'))

  assert proc.returncode == 1 and 'PermissionError' in proc.stderr, proc.stderr[-2000:]
  assert [r.version for r in repo.releases('digits')] == [1]
  root = os.path.join(repo.metadata_dir, '1.root.json')
  with _served(repo.repo_dir) as url:
    # A device verifies signatures and hashes and still gets version 1.
    during = client.fetch(url, root, 'digits', str(tmp_path / 'device'))
    assert repo.publish('digits', b'model-two').version == 2
    after = client.fetch(url, root, 'digits', str(tmp_path / 'device'))
  assert (during.version, after.version) == (1, 2)
  with open(after.path, 'rb') as f:
    assert f.read() == b'model-two'


# --- secrets ---------------------------------------------------------------------------------


def _encrypted(pem):
  key = serialization.load_pem_private_key(pem, password=None)
  return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.BestAvailableEncryption(b'passphrase'))


@pytest.mark.parametrize('corrupt', [
    lambda pem: pem[:len(pem) // 2],  # truncated
    lambda pem: pem.replace(pem.splitlines()[1][10:14], b'!!!!'),  # garbled body
    lambda pem: pem.replace(b'PRIVATE KEY', b'PUBLIC KEY'),  # wrong kind of PEM
    _encrypted,  # needs a passphrase it does not have
], ids=['truncated', 'garbled', 'wrong-kind', 'encrypted'])
def test_a_malformed_key_error_names_the_file_but_never_holds_key_material(tmp_path, corrupt):
  keys_dir = str(tmp_path / 'keys')
  signing_keys.create_or_load(keys_dir)
  path = os.path.join(keys_dir, 'targets.pem')
  with open(path, 'rb') as f:
    pem = f.read()
  raw = serialization.load_pem_private_key(pem, password=None).private_bytes(
      serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
  with open(path, 'wb') as f:
    f.write(corrupt(pem))

  with pytest.raises((ValueError, TypeError)) as raised:
    signing_keys.load(keys_dir)

  # Everything a log would show: the message, the repr and the traceback with its chain.
  shown = ''.join(traceback.format_exception(raised.type, raised.value, raised.tb))
  shown += repr(raised.value)
  body = b''.join(pem.splitlines()[1:-1]).decode()
  fragments = {body[i:i + 12] for i in range(len(body) - 12)}
  assert not [f for f in fragments if f in shown]
  for form in (raw.hex(), base64.b64encode(raw).decode()):
    assert form not in shown
  if raised.type is ValueError:
    assert f'signing key file {path} is not an unencrypted PEM private key' in str(raised.value)
