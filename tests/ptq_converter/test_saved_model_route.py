"""Models that are not tf_keras Functional take the PTQ-only route: PTQConverter converts them
from their SavedModel's `serving_default` signature.

Three models a user might bring, each trained on scikit-learn data and saved the way its API
saves: a Keras 3 model (`model.export`), a plain TF `tf.Module` with a serving signature
(`tf.saved_model.save`) and a subclassed tf_keras model (`model.save`). Each goes through the real
PTQConverter executor in float32 and int8, and the int8 model's accuracy, measured with LiteRT,
is compared with the float model's own. One e2e test runs the Keras 3 model through the real
Evaluator gate and OTAPusher in a LocalDagRunner pipeline.
"""
import json
import os

from ml_metadata import metadata_store
import numpy as np
import pytest
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import standard_artifacts
import tf_keras

from components import OTAPusher
from components import PTQConverter
from components import errors
from components.common import evaluation
from components.common import model_io
from components.common import tasks
from components.common import tflite
from components.common import device_extractors as extractors
from components.gate import gate_config
from components.ota import repository
from pipelines import data
from pipelines import summary
from tests.conftest import write_examples
from tests.helpers import INPUT_FN
from tests.helpers import breast_cancer_data
from tests.helpers import keras_model_artifact
from tests.helpers import relabel
from tests.helpers import run_ptq
from tests.helpers import small_model

FEATURES, LABEL = 'features', 'label'
# Training rows of the breast-cancer data; the others are the eval split.
TRAIN = 400
# The largest accuracy an int8 model may lose against its float model here: two eval examples
# of the breast-cancer split, about three of the digits split.
MAX_INT8_LOSS = 0.012


def _example(features, label, name):
  return tf.train.Example(features=tf.train.Features(feature={
      name: tf.train.Feature(float_list=tf.train.FloatList(value=features)),
      LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
  })).SerializeToString()


def _model_artifact(root, save):
  """A Model artifact at root whose Format-Serving directory `save(path)` writes."""
  artifact = standard_artifacts.Model()
  artifact.uri = str(root)
  save(model_io.serving_model_dir(artifact.uri))
  return artifact


@pytest.fixture(scope='module')
def cancer(tmp_path_factory):
  """scikit-learn's breast cancer (binary) as Examples with one 30-value feature `features`."""
  x, y = breast_cancer_data()
  examples = write_examples(str(tmp_path_factory.mktemp('cancer_examples')), {
      'train': [_example(f, label, FEATURES) for f, label in zip(x[:TRAIN], y[:TRAIN])],
      'eval': [_example(f, label, FEATURES) for f, label in zip(x[TRAIN:], y[TRAIN:])]})
  return dict(x=x, y=y, examples=examples)


@pytest.fixture(scope='module')
def keras3_case(cancer, tmp_path_factory):
  """A Keras 3 binary classifier (one sigmoid unit), exported with model.export(dir)."""
  import keras  # pylint: disable=g-import-not-at-top  # Keras 3, even with TF_USE_LEGACY_KERAS=1.
  assert keras.__version__.startswith('3.')
  keras.utils.set_random_seed(0)
  inputs = keras.Input((30,), name=FEATURES)
  hidden = keras.layers.Dense(16, activation='relu')(inputs)
  model = keras.Model(inputs, keras.layers.Dense(1, activation='sigmoid')(hidden))
  model.compile('adam', 'binary_crossentropy')
  model.fit(cancer['x'][:TRAIN], cancer['y'][:TRAIN], epochs=30, verbose=0)
  artifact = _model_artifact(tmp_path_factory.mktemp('keras3'), model.export)
  return dict(cancer, name=FEATURES, model=artifact, output=tasks.Output(1, 'sigmoid'),
              scores=model.predict(cancer['x'][TRAIN:], verbose=0), ptq={})


class _DigitsModule(tf.Module):
  """A two-layer softmax classifier written in plain TensorFlow, no Keras anywhere."""

  def __init__(self):
    super().__init__()
    rng = np.random.default_rng(0)
    self.w1 = tf.Variable(rng.normal(0, 0.1, (data.NUM_PIXELS, 32)).astype(np.float32))
    self.b1 = tf.Variable(np.zeros(32, np.float32))
    self.w2 = tf.Variable(rng.normal(0, 0.1, (32, data.NUM_CLASSES)).astype(np.float32))
    self.b2 = tf.Variable(np.zeros(data.NUM_CLASSES, np.float32))

  def logits(self, pixels):
    return tf.nn.relu(pixels @ self.w1 + self.b1) @ self.w2 + self.b2

  # The input is named after the feature it reads: TFMA feeds TFLite inputs by that name.
  @tf.function(input_signature=[tf.TensorSpec([None, data.NUM_PIXELS], tf.float32,
                                              name=data.PIXELS_KEY)])
  def serve(self, pixels):
    return {'probabilities': tf.nn.softmax(self.logits(pixels))}


@pytest.fixture(scope='module')
def module_case(digits_examples, digits_arrays, tmp_path_factory):
  """A tf.Module trained with plain gradient descent on the digits, saved with its signature."""
  pixels, labels = digits_arrays
  module = _DigitsModule()
  train_x, train_y = tf.constant(pixels[:1437]), tf.constant(labels[:1437])

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          train_y, module.logits(train_x)))
    for variable, gradient in zip(module.trainable_variables,
                                  tape.gradient(loss, module.trainable_variables)):
      variable.assign_sub(0.5 * gradient)

  for _ in range(300):
    step()
  artifact = _model_artifact(
      tmp_path_factory.mktemp('module'),
      lambda path: tf.saved_model.save(module, path, signatures={'serving_default': module.serve}))
  return dict(x=pixels, y=labels, examples=digits_examples, name=data.PIXELS_KEY,
              model=artifact, output=tasks.Output(data.NUM_CLASSES, 'softmax'),
              scores=module.serve(tf.constant(pixels[1437:]))['probabilities'].numpy(),
              # Calibration reads the sample through the digits module's input_fn.
              ptq=dict(input_fn=INPUT_FN), train=1437)


class _Subclassed(tf_keras.Model):
  """A subclassed binary classifier; its dict input names the signature's input `features`."""

  def __init__(self):
    super().__init__()
    self.hidden = tf_keras.layers.Dense(16, activation='relu')
    self.head = tf_keras.layers.Dense(1, activation='sigmoid')

  def call(self, inputs):
    return self.head(self.hidden(inputs[FEATURES]))


@pytest.fixture(scope='module')
def subclassed_case(cancer, tmp_path_factory):
  tf_keras.utils.set_random_seed(0)
  model = _Subclassed()
  model.compile('adam', 'binary_crossentropy')
  model.fit({FEATURES: cancer['x'][:TRAIN]}, cancer['y'][:TRAIN], epochs=30, verbose=0)
  artifact = _model_artifact(tmp_path_factory.mktemp('subclassed'),
                             lambda path: model.save(path, save_format='tf'))
  return dict(cancer, name=FEATURES, model=artifact, output=tasks.Output(1, 'sigmoid'),
              scores=model.predict({FEATURES: cancer['x'][TRAIN:]}, verbose=0), ptq={})


def _accuracy(scores, labels):
  """Binary accuracy at 0.5 for one output unit, else the accuracy of the argmax."""
  if scores.shape[-1] == 1:
    return float(np.mean((scores[:, 0] > 0.5) == labels.astype(bool)))
  return float(np.mean(scores.argmax(-1) == labels))


def input_name(detail):
  """A TFLite input's name as TFMA matches it to a feature (signature prefix and `:0` off)."""
  return detail['name'].removeprefix('serving_default_').split(':')[0]


def litert_scores(tflite_model, x):
  """The model's outputs for each row, one example at a time, as a device computes them."""
  interp = tflite.interpreter(tflite_model)
  interp.allocate_tensors()
  [inp], [out] = interp.get_input_details(), interp.get_output_details()
  scores = []
  for row in x:
    value = row[None]
    if inp['dtype'] == np.int8:  # A device rounds to the nearest int8 step.
      scale, zero = inp['quantization']
      value = np.clip(np.round(value / scale + zero), -128, 127).astype(np.int8)
    interp.set_tensor(inp['index'], value)
    interp.invoke()
    score = interp.get_tensor(out['index'])[0].astype(np.float32)
    if out['dtype'] == np.int8:
      scale, zero = out['quantization']
      score = (score - zero) * scale
    scores.append(score)
  return np.stack(scores)


@pytest.mark.parametrize('case_name', ['keras3_case', 'module_case', 'subclassed_case'])
def test_a_model_that_is_not_tf_keras_functional_is_converted_from_its_signature(
    request, tmp_path, case_name):
  case = request.getfixturevalue(case_name)
  train = case.get('train', TRAIN)
  eval_x, eval_y = case['x'][train:], case['y'][train:]

  source = model_io.load_model_source(case['model'].uri)
  assert source.kind == model_io.SAVED_MODEL and source.keras_model is None
  assert source.input_names == [case['name']]
  assert [spec.shape[-1] for spec in source.outputs] == [case['output'].units]

  converted = {}
  for mode in ('float32', 'int8'):
    examples = None if mode == 'float32' else case['examples']
    artifact, _ = run_ptq(case['model'], examples, tmp_path / mode, mode=mode,
                          calibration_samples=200, **case['ptq'])
    converted[mode] = model_io.read_tflite(artifact.uri, 'test')
    assert artifact.get_string_custom_property('tfx_edge_mode') == mode
  assert artifact.get_int_custom_property('tfx_edge_calibration_count') == 200

  float_accuracy = _accuracy(case['scores'], eval_y)
  tflite32 = _accuracy(litert_scores(converted['float32'], eval_x), eval_y)
  int8 = _accuracy(litert_scores(converted['int8'], eval_x), eval_y)
  print(f'\n{case_name}: float model {float_accuracy:.4f}, float32 TFLite {tflite32:.4f}, '
        f'int8 TFLite {int8:.4f} on {len(eval_y)} eval examples')
  assert float_accuracy > 0.9
  assert tflite32 == pytest.approx(float_accuracy, abs=1e-9)
  assert int8 >= float_accuracy - MAX_INT8_LOSS
  for data_ in converted.values():
    # Named as the feature, so TFMA feeds it; one output, whose activation the gate's task check
    # reads from the TFLite graph (for these models too).
    inputs = tflite.interpreter(data_).get_input_details()
    assert [input_name(detail) for detail in inputs] == [case['name']]
    assert tflite.output(data_) == case['output']
  assert {d.dtype for d in tflite.io_details(converted['int8'])['inputs']} == {'int8'}


def test_a_tf_keras_functional_model_keeps_the_keras_route(tmp_path):
  artifact = keras_model_artifact(small_model(), tmp_path / 'model')

  source = model_io.load_model_source(artifact.uri)

  assert source.kind == model_io.KERAS and source.not_keras == ''
  assert source.convertible is source.keras_model
  assert source.input_names == ['pixels'] and model_io.num_classes(source) == 10


def test_labels_outside_the_signatures_classes_are_refused(module_case, digits_records, tmp_path):
  # num_classes comes from the signature's output shape: 10 units, so label 10 is not a class.
  examples = write_examples(str(tmp_path / 'examples'),
                            {'train': relabel(digits_records[:300], {9: 10})})

  with pytest.raises(errors.DataError, match=r"label 'label' has values outside the model's 10 "
                     r'classes \[0, 9\]: 10 \(\d+ examples\)'):
    run_ptq(module_case['model'], examples, tmp_path / 'ptq', calibration_samples=100)


@pytest.mark.parametrize('case_name,what', [
    ('keras3_case', 'has no Keras 2 metadata'),
    ('subclassed_case', 'reloaded a _Subclassed, a subclassed model'),
])
def test_the_optimizers_refuse_such_a_model_and_name_the_ptq_only_route(request, case_name,
                                                                       what):
  artifact = request.getfixturevalue(case_name)['model']

  with pytest.raises(errors.ModelLoadError) as raised:
    model_io.load_keras_model(artifact.uri)  # What Pruner, Clusterer and QATTrainer call.

  message = str(raised.value)
  assert message.startswith(f'Model artifact {artifact.uri}: ') and what in message
  assert 'tensorflow-model-optimization (Pruner, Clusterer, QATTrainer) supports tf_keras ' in (
      message)
  assert ("build the PTQ variant only (variants=['ptq'] in create_pipeline, --variants ptq with "
          'pipelines.run_local and pipelines.run_kubeflow)') in message


class _Module(tf.Module):

  def __init__(self, weight=1.0):
    super().__init__()
    self.w = tf.Variable([weight, 1.0])

  @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name=FEATURES)])
  def serve(self, features):
    return {'score': tf.reduce_sum(features * self.w, axis=-1, keepdims=True)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def parse_and_serve(self, serialized):
    parsed = tf.io.parse_example(serialized, {FEATURES: tf.io.FixedLenFeature([2], tf.float32)})
    return self.serve(parsed[FEATURES])


def _without_serving_default(path):
  module = _Module()
  tf.saved_model.save(module, path, signatures={'predict': module.serve})


def _parsing_tf_examples(path):
  module = _Module()
  tf.saved_model.save(module, path, signatures={'serving_default': module.parse_and_serve})


def _with_nan_weight(path):
  module = _Module(weight=float('nan'))
  tf.saved_model.save(module, path, signatures={'serving_default': module.serve})


@pytest.mark.parametrize('save,message', [
    (_without_serving_default,
     r"which it lacks \(its signatures: \['predict'\]\)\. Export it with one"),
    (_parsing_tf_examples,
     r"whose inputs \['examples'\] are strings: a signature that parses serialized tf.Examples"),
    (_with_nan_weight,
     r"variable 'w' of the SavedModel at .* holds 1 NaN or Inf values of 2\. Its training "
     'diverged'),
])
def test_a_saved_model_ptq_cannot_convert_is_named_before_anything_runs(tmp_path, save, message):
  artifact = _model_artifact(tmp_path / 'model', save)

  with pytest.raises(errors.ModelLoadError, match=f'Model artifact {artifact.uri}: .*{message}'):
    run_ptq(artifact, None, tmp_path / 'ptq', mode='float32')

  assert not os.path.exists(tmp_path / 'ptq')


# --- the Keras 3 model through the gate and the push --------------------------------------------

PIPELINE = 'tfx_edge_keras3'
MODEL_NAME = 'breast_cancer_keras3'
BEAM_ARGS = ['--direct_running_mode=in_memory', '--direct_num_workers=1']


@pytest.mark.e2e
@pytest.mark.parametrize('case_name,task,label_key,train', [
    ('keras3_case', tasks.BINARY, LABEL, TRAIN),
    ('module_case', tasks.MULTICLASS, data.LABEL_KEY, 1437),
])
def test_a_keras3_model_and_a_tf_module_are_gated_by_tfma_and_pushed_over_the_air(
    request, case_name, task, label_key, train, tmp_path):
  case = request.getfixturevalue(case_name)
  root = str(tmp_path)
  repository.OTARepository(os.path.join(root, 'ota_repository'),
                           os.path.join(root, 'ota_keys')).init()
  examples = tfx.dsl.Importer(
      source_uri=case['examples'].uri, artifact_type=standard_artifacts.Examples,
      properties={'split_names': json.dumps(['train', 'eval'])}).with_id('examples')
  trained = tfx.dsl.Importer(source_uri=case['model'].uri,
                             artifact_type=standard_artifacts.Model).with_id('keras3_model')
  # What create_pipeline(variants=['ptq']) builds after the Trainer.
  ptq_float32 = PTQConverter(model=trained.outputs['result'], mode='float32').with_id(
      'ptq_float32')
  int8 = PTQConverter(model=trained.outputs['result'], examples=examples.outputs['result'],
                      mode='int8', calibration_samples=200, label_key=label_key,
                      **case['ptq']).with_id('ptq_int8')
  evaluator = tfx.components.Evaluator(
      examples=examples.outputs['result'], model=int8.outputs['tflite_model'],
      baseline_model=ptq_float32.outputs['tflite_model'],
      # At most MAX_INT8_LOSS below the baseline, as the test above allows.
      eval_config=gate_config(label_key, task, max_accuracy_drop=MAX_INT8_LOSS),
      module_path=extractors.MODULE_PATH)  # As the pipeline's Evaluators.
  pusher = OTAPusher(
      model=int8.outputs['tflite_model'], model_blessing=evaluator.outputs['blessing'],
      evaluation=evaluator.outputs['evaluation'],
      repository_dir=os.path.join(root, 'ota_repository'),
      keys_dir=os.path.join(root, 'ota_keys'), model_name=MODEL_NAME)
  metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(
      os.path.join(root, 'metadata.sqlite'))
  components = [examples, trained, ptq_float32, int8, evaluator, pusher]
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name=PIPELINE, pipeline_root=os.path.join(root, 'pipeline_root'),
      components=components, metadata_connection_config=metadata, beam_pipeline_args=BEAM_ARGS))

  store = metadata_store.MetadataStore(metadata)
  outputs = {c.id: summary.latest_artifacts(store, PIPELINE, c.id) for c in components}
  int8_model = model_io.read_tflite(outputs['ptq_int8']['tflite_model'].uri, 'test')
  float_model = model_io.read_tflite(outputs['ptq_float32']['tflite_model'].uri, 'test')
  evaluation_uri = outputs['Evaluator']['evaluation'].uri
  gate = evaluation.metric_values(evaluation_uri, tasks.GATE_METRIC[task][1])
  eval_x, eval_y = case['x'][train:], case['y'][train:]
  print(f'\n{case_name} gate: {tasks.GATE_METRIC[task][1]} {gate}')

  # TFMA fed the signature's input by feature name: its accuracies are the models' own.
  assert gate[evaluation.BASELINE] == pytest.approx(
      _accuracy(litert_scores(float_model, eval_x), eval_y), abs=1e-6)
  # The gate's extractors quantize inputs as a device does: exactly the device's accuracy.
  assert gate[evaluation.CANDIDATE] == pytest.approx(
      _accuracy(litert_scores(int8_model, eval_x), eval_y), abs=1e-6)
  assert outputs['Evaluator']['blessing'].custom_properties['blessed'].int_value == 1
  assert outputs['OTAPusher']['pushed_model'].custom_properties['pushed'].int_value == 1
  ota = repository.OTARepository(os.path.join(root, 'ota_repository'))
  [release] = ota.releases(MODEL_NAME)
  assert ota.read_target(release) == int8_model
  assert release.custom['mode'] == 'int8'
