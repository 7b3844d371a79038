"""The gate follows the task, and a gate whose metric cannot measure the model refuses it.

Real data (scikit-learn's breast cancer, a binary task), a real one-sigmoid-unit classifier, real
TFLite models and real TFMA evaluations, compared with accuracies computed directly with LiteRT.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
import tf_keras
from tfx.types import standard_artifacts

from components import spec_keys
from components.benchmarker import executor as bench_executor
from components.common import evaluation
from components.common import tasks
from components.common import tflite
from components.gate import accuracy_gate_config
from components.gate import gate_config
from components.ptq_converter import calibration
from components.ptq_converter import conversion
from components.pusher import executor as pusher_executor
from tests.helpers import blessing_artifact
from tests.helpers import breast_cancer_data
from tests.helpers import tflite_model_artifact

FEATURES, LABEL = 'features', 'label'


@pytest.fixture(scope='module')
def binary_case(tmp_path_factory):
  """A trained one-sigmoid-unit model, its eval Examples file, and three TFLite conversions."""
  x, y = breast_cancer_data()
  train_x, train_y, eval_x, eval_y = x[:400], y[:400], x[400:], y[400:]
  tf_keras.utils.set_random_seed(0)
  inputs = tf_keras.Input((30,), name=FEATURES)
  hidden = tf_keras.layers.Dense(16, activation='relu')(inputs)
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(1, activation='sigmoid')(hidden))
  model.compile('adam', 'binary_crossentropy')
  model.fit(train_x, train_y, epochs=30, verbose=0)

  root = tmp_path_factory.mktemp('binary')
  data = str(root / 'eval.tfrecord')
  with tf.io.TFRecordWriter(data) as writer:
    for features, label in zip(eval_x, eval_y):
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          FEATURES: tf.train.Feature(float_list=tf.train.FloatList(value=features)),
          LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
      })).SerializeToString())
  models = {
      'float32': conversion.convert(model, 'float32'),
      'int8': conversion.convert(model, 'int8', calibration.representative_dataset(
          {FEATURES: train_x[:300]})),
      # Calibrated on inputs 50x their real range: the ranges are so coarse that the model
      # loses about half its accuracy.
      'hostile_int8': conversion.convert(model, 'int8', calibration.representative_dataset(
          {FEATURES: train_x[:300] * 50})),
  }
  return dict(root=root, data=data, x=eval_x, y=eval_y, models=models)


def _litert_accuracy(tflite_model, x, y, as_tfma=False, threshold=0.5):
  """Accuracy at threshold 0.5, one example at a time, with LiteRT.

  A device rounds a float input to the nearest int8 step. TFMA's TFLite extractor truncates
  (`astype` without rounding or clipping); `as_tfma` quantizes the same way, to check that the
  gate's figure is exactly what this model computes on those inputs.
  """
  interp = tflite.interpreter(tflite_model)
  interp.allocate_tensors()
  [inp], [out] = interp.get_input_details(), interp.get_output_details()
  correct = 0
  for row, label in zip(x, y):
    value = row[None]
    if inp['dtype'] == np.int8:
      scale, zero = inp['quantization']
      value = ((value / scale + zero).astype(np.int8) if as_tfma else
               np.clip(np.round(value / scale + zero), -128, 127).astype(np.int8))
    interp.set_tensor(inp['index'], value)
    interp.invoke()
    score = interp.get_tensor(out['index']).astype(np.float32)[0, 0]
    if out['dtype'] == np.int8:
      scale, zero = out['quantization']
      score = (score - zero) * scale
    correct += int((score > threshold) == bool(label))
  return correct / len(y)


def _evaluate(case, candidate, config, name):
  """Runs TFMA as the Evaluator does: candidate against the float32 baseline, both TFLite."""
  shared = []
  for model_name, data in ((evaluation.CANDIDATE, case['models'][candidate]),
                           (evaluation.BASELINE, case['models']['float32'])):
    model_dir = case['root'] / name / model_name
    model_dir.mkdir(parents=True)
    (model_dir / 'tflite').write_bytes(data)
    shared.append(tfma.default_eval_shared_model(
        eval_saved_model_path=str(model_dir), model_name=model_name, eval_config=config))
  output = str(case['root'] / name / 'evaluation')
  tfma.run_model_analysis(eval_shared_model=shared, eval_config=config,
                          data_location=case['data'], output_path=output)
  return output


def test_binary_gate_measures_the_accuracy_litert_gives_and_blesses_a_faithful_int8(binary_case):
  config = gate_config(LABEL, tasks.BINARY)

  output = _evaluate(binary_case, 'int8', config, 'binary_int8')

  values = evaluation.metric_values(output, 'binary_accuracy')
  x, y = binary_case['x'], binary_case['y']
  int8, float32 = binary_case['models']['int8'], binary_case['models']['float32']
  assert values[evaluation.BASELINE] == pytest.approx(_litert_accuracy(float32, x, y), abs=1e-9)
  assert values[evaluation.CANDIDATE] == pytest.approx(
      _litert_accuracy(int8, x, y, as_tfma=True), abs=1e-9)
  # As a device runs it (rounded inputs): within an example or two of the gate's figure.
  assert values[evaluation.CANDIDATE] == pytest.approx(_litert_accuracy(int8, x, y),
                                                       abs=2 / len(y))
  assert values[evaluation.BASELINE] > 0.9
  assert tfma.load_validation_result(output).validation_ok
  assert evaluation.gated_metrics(output) == ['binary_accuracy']
  assert evaluation.gate_misfit(output, tflite.output(binary_case['models']['int8'])) == ''
  assert 'auc' in {k.key.name for m in tfma.load_metrics(output)
                   for k in m.metric_keys_and_values}


def test_binary_gate_refuses_an_int8_model_that_lost_accuracy(binary_case):
  hostile = _litert_accuracy(binary_case['models']['hostile_int8'], binary_case['x'],
                             binary_case['y'])
  baseline = _litert_accuracy(binary_case['models']['float32'], binary_case['x'],
                              binary_case['y'])
  assert hostile < baseline - 0.1  # The setup really made it worse.

  output = _evaluate(binary_case, 'hostile_int8', gate_config(LABEL, tasks.BINARY), 'hostile')

  result = tfma.load_validation_result(output)
  assert not result.validation_ok
  failures = evaluation.validation_failures(output)
  assert any(line.startswith('binary_accuracy') for line in failures), failures


def test_accuracy_over_the_argmax_of_one_unit_is_refused_though_tfma_blessed_it(binary_case,
                                                                              tmp_path):
  # The multi-class gate on a one-unit model: TFMA computes a number, the same for every model.
  config = accuracy_gate_config(LABEL, min_accuracy=0.0, max_accuracy_drop=0.01)
  output = _evaluate(binary_case, 'hostile_int8', config, 'argmax')
  values = evaluation.metric_values(output, evaluation.ACCURACY_METRIC)
  negative_share = float(np.mean(binary_case['y'] == 0))
  assert values[evaluation.CANDIDATE] == pytest.approx(negative_share)
  assert values[evaluation.BASELINE] == pytest.approx(negative_share)
  assert tfma.load_validation_result(output).validation_ok  # TFMA alone would approve it.

  data = binary_case['models']['hostile_int8']
  reason = evaluation.gate_misfit(output, tflite.output(data))
  assert 'the argmax of one unit is always class 0' in reason
  assert "Use task='binary'" in reason

  # The benchmarker records the verdict the selector and the pusher go by: refused.
  model = tflite_model_artifact(tmp_path / 'model', data)
  blessing = blessing_artifact(tmp_path / 'blessing', model, blessed=True)
  evaluation_artifact = tfma_evaluation_artifact(output)
  verdict = bench_executor.accuracy_of(model, data, blessing, evaluation_artifact)
  assert verdict['blessed'] is False
  assert verdict['reason'].startswith('the gate cannot measure this model:')
  # The pusher, given the same TFMA blessing directly, refuses it too and publishes nothing.
  pushed = standard_artifacts.PushedModel()
  pushed.uri = str(tmp_path / 'pushed')
  pusher_executor.Executor().Do(
      {spec_keys.MODEL_KEY: [model], spec_keys.MODEL_BLESSING_KEY: [blessing],
       spec_keys.EVALUATION_KEY: [evaluation_artifact]},
      {spec_keys.PUSHED_MODEL_KEY: [pushed]},
      {spec_keys.PUSH_DESTINATION_KEY: str(tmp_path / 'dest'), spec_keys.MODEL_NAME_KEY: 'binary',
       spec_keys.ALLOWED_MODES_KEY: json.dumps(['int8'])})
  assert pushed.get_int_custom_property(spec_keys.PROP_PUSHED) == 0
  assert 'the argmax of one unit is always class 0' in pushed.get_string_custom_property(
      spec_keys.PROP_PUSH_REASON)
  assert not os.path.exists(tmp_path / 'dest')


def tfma_evaluation_artifact(uri):
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  artifact = standard_artifacts.ModelEvaluation()
  artifact.uri = uri
  return artifact


@pytest.mark.parametrize('task,output,fits', [
    (tasks.MULTICLASS, tasks.Output(10, 'softmax'), True),
    (tasks.MULTICLASS, tasks.Output(10, 'linear'), True),
    (tasks.MULTICLASS, tasks.Output(1, 'sigmoid'), False),
    (tasks.BINARY, tasks.Output(1, 'sigmoid'), True),
    (tasks.BINARY, tasks.Output(1, 'linear'), False),
    (tasks.BINARY, tasks.Output(2, 'softmax'), False),
    (tasks.REGRESSION, tasks.Output(1, 'linear'), True),
    (tasks.REGRESSION, tasks.Output(1, 'sigmoid'), False),
    (tasks.MULTILABEL, tasks.Output(3, 'sigmoid'), True),
    (tasks.MULTILABEL, tasks.Output(1, 'sigmoid'), False),
    (tasks.MULTILABEL, tasks.Output(3, 'softmax'), False),
    (tasks.MULTILABEL_LOGITS, tasks.Output(3, 'linear'), True),
    (tasks.MULTILABEL_LOGITS, tasks.Output(3, 'sigmoid'), False),
    (tasks.MULTILABEL_LOGITS, tasks.Output(1, 'linear'), False),
])
def test_each_task_fits_the_outputs_its_metric_can_measure(task, output, fits):
  assert (tasks.misfit(task, output) == '') is fits


def test_the_output_is_read_from_the_tflite_graph_for_float_and_int8(binary_case):
  for data in binary_case['models'].values():
    assert tflite.output(data) == tasks.Output(units=1, activation='sigmoid')


def test_regression_gate_thresholds_the_relative_error_increase():
  config = gate_config(LABEL, tasks.REGRESSION, max_error_increase=0.1, max_error=40.0)
  [metric] = [m for m in config.metrics_specs[0].metrics if m.HasField('threshold')]
  assert metric.class_name == 'MeanAbsoluteError'
  assert metric.threshold.change_threshold.relative.value == pytest.approx(0.1)
  assert metric.threshold.change_threshold.direction == tfma.MetricDirection.LOWER_IS_BETTER
  assert metric.threshold.value_threshold.upper_bound.value == pytest.approx(40.0)


@pytest.mark.parametrize('kwargs,message', [
    (dict(task='ranking'), "task='ranking' is not accepted; accepted: multiclass, binary, "
     'binary_logits, multilabel, multilabel_logits, regression'),
    (dict(task=tasks.REGRESSION, max_error_increase=1.5), 'max_error_increase=1.5 is not '
     'accepted'),
    (dict(task=tasks.REGRESSION, max_error=0), 'max_error=0 is not accepted'),
])
def test_bad_task_or_thresholds_fail_when_the_pipeline_is_built(kwargs, message):
  with pytest.raises(ValueError, match=message):
    gate_config(LABEL, **kwargs)


def test_the_pipeline_builds_the_gate_for_its_task(tmp_path):
  from pipelines import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  built = pipeline_lib.create_pipeline('p', str(tmp_path / 'root'), str(tmp_path / 'data'),
                                       str(tmp_path / 'ota'), str(tmp_path / 'keys'),
                                       variants=['ptq'], task=tasks.BINARY)
  [evaluator] = [c for c in built.components if c.id == pipeline_lib.evaluator_node('ptq')]
  config = evaluator.exec_properties['eval_config']
  assert '"BinaryAccuracy"' in config and 'SparseCategoricalAccuracy' not in config
  assert os.path.basename(str(tmp_path)) in built.pipeline_info.pipeline_root


@pytest.fixture(scope='module')
def logits_case(binary_case, tmp_path_factory):
  """The binary task with a logit output (one linear unit), trained on the same rows."""
  x, y = breast_cancer_data()
  tf_keras.utils.set_random_seed(0)
  inputs = tf_keras.Input((30,), name=FEATURES)
  hidden = tf_keras.layers.Dense(16, activation='relu')(inputs)
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(1)(hidden))
  model.compile('adam', tf_keras.losses.BinaryCrossentropy(from_logits=True))
  model.fit(x[:400], y[:400], epochs=30, verbose=0)
  models = {'float32': conversion.convert(model, 'float32'),
            'int8': conversion.convert(model, 'int8', calibration.representative_dataset(
                {FEATURES: x[:300]}))}
  return dict(binary_case, root=tmp_path_factory.mktemp('logits'), models=models)


def test_binary_logits_gate_thresholds_the_logit_at_zero(logits_case):
  config = gate_config(LABEL, tasks.BINARY_LOGITS)

  output = _evaluate(logits_case, 'int8', config, 'logits_int8')

  name = tasks.GATE_METRIC[tasks.BINARY_LOGITS][1]
  values = evaluation.metric_values(output, name)
  x, y = logits_case['x'], logits_case['y']
  assert values[evaluation.BASELINE] == pytest.approx(
      _litert_accuracy(logits_case['models']['float32'], x, y, threshold=0.0), abs=1e-9)
  assert values[evaluation.CANDIDATE] == pytest.approx(
      _litert_accuracy(logits_case['models']['int8'], x, y, as_tfma=True, threshold=0.0),
      abs=1e-9)
  assert values[evaluation.BASELINE] > 0.9
  assert evaluation.gated_metrics(output) == [name]
  assert evaluation.gate_misfit(output, tflite.output(logits_case['models']['int8'])) == ''
  # The probability gate on the same logits would threshold them at 0.5: refused by name.
  reason = tasks.misfit(tasks.BINARY, tflite.output(logits_case['models']['int8']))
  assert "task='binary_logits' for one linear unit (a logit)" in reason
  assert tasks.misfit(tasks.BINARY_LOGITS, tasks.Output(1, 'sigmoid')) != ''


def _multilabel_targets(digits):
  """Three independent yes/no labels of a digit: even, at least 5, a multiple of 3."""
  return np.stack([digits % 2 == 0, digits >= 5, digits % 3 == 0], axis=1).astype(np.int64)


@pytest.fixture(scope='module', params=[tasks.MULTILABEL, tasks.MULTILABEL_LOGITS])
def multilabel_case(request, tmp_path_factory):
  """Digits with three multi-hot labels, a model with a sigmoid unit (or a logit) per label."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  x = (digits.data / 16.0).astype(np.float32)
  y = _multilabel_targets(digits.target)
  logits = request.param == tasks.MULTILABEL_LOGITS
  tf_keras.utils.set_random_seed(0)
  inputs = tf_keras.Input((64,), name=FEATURES)
  hidden = tf_keras.layers.Dense(32, activation='relu')(inputs)
  outputs = tf_keras.layers.Dense(3, activation=None if logits else 'sigmoid')(hidden)
  model = tf_keras.Model(inputs, outputs)
  model.compile('adam', tf_keras.losses.BinaryCrossentropy(from_logits=logits))
  model.fit(x[:1400], y[:1400], epochs=20, verbose=0)

  root = tmp_path_factory.mktemp(request.param)
  data = str(root / 'eval.tfrecord')
  eval_x, eval_y = x[1400:], y[1400:]
  serialized = [tf.train.Example(features=tf.train.Features(feature={
      FEATURES: tf.train.Feature(float_list=tf.train.FloatList(value=features)),
      LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=labels)),
  })).SerializeToString() for features, labels in zip(eval_x, eval_y)]
  with tf.io.TFRecordWriter(data) as writer:
    for example in serialized:
      writer.write(example)
  models = {'float32': conversion.convert(model, 'float32'),
            'int8': conversion.convert(model, 'int8', calibration.representative_dataset(
                {FEATURES: x[:300]}))}
  return dict(root=root, data=data, x=eval_x, y=eval_y, models=models, task=request.param,
              threshold=0.0 if logits else 0.5, serialized=serialized)


def _litert_multilabel_accuracy(tflite_model, x, y, threshold):
  """Share of (example, label) pairs LiteRT gets right, inputs quantized as TFMA does."""
  interp = tflite.interpreter(tflite_model)
  interp.allocate_tensors()
  [inp], [out] = interp.get_input_details(), interp.get_output_details()
  correct = 0
  for row, labels in zip(x, y):
    value = row[None]
    if inp['dtype'] == np.int8:
      scale, zero = inp['quantization']
      value = (value / scale + zero).astype(np.int8)
    interp.set_tensor(inp['index'], value)
    interp.invoke()
    scores = interp.get_tensor(out['index']).astype(np.float32)[0]
    if out['dtype'] == np.int8:
      scale, zero = out['quantization']
      scores = (scores - zero) * scale
    correct += int(np.sum((scores > threshold) == labels.astype(bool)))
  return correct / y.size


def test_multilabel_gate_measures_every_label_of_every_example(multilabel_case):
  from components.gate import schema as schema_lib  # pylint: disable=g-import-not-at-top
  case = multilabel_case
  config = gate_config(LABEL, case['task'])
  # The schema GateExamplesGen writes reads the label with one value per output unit.
  schema = schema_lib.gate_schema(
      schema_lib.summarize(case['serialized']),
      schema_lib.model_inputs(case['models']['int8']), LABEL, {}, 'eval')
  assert schema.tensor_representation_group[''].tensor_representation[
      LABEL].dense_tensor.shape.dim[0].size == 3

  output = _evaluate(case, 'int8', config, case['task'] + '_int8')

  name = tasks.GATE_METRIC[case['task']][1]
  values = evaluation.metric_values(output, name)
  assert values[evaluation.BASELINE] == pytest.approx(_litert_multilabel_accuracy(
      case['models']['float32'], case['x'], case['y'], case['threshold']), abs=1e-6)
  assert values[evaluation.CANDIDATE] == pytest.approx(_litert_multilabel_accuracy(
      case['models']['int8'], case['x'], case['y'], case['threshold']), abs=1e-6)
  assert values[evaluation.BASELINE] > 0.85
  assert evaluation.gated_metrics(output) == [name]
  assert evaluation.gate_misfit(output, tflite.output(case['models']['int8'])) == ''


def test_the_default_fine_tuning_loss_of_sigmoid_units_is_binary_cross_entropy():
  from components.common.finetune import config as finetune_config  # pylint: disable=g-import-not-at-top
  inputs = tf_keras.Input((4,))
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(3, activation='sigmoid')(inputs))
  assert finetune_config.FineTuneConfig().loss_for(model) == 'binary_crossentropy'
  assert tasks.infer(tasks.Output(3, 'sigmoid')) == tasks.MULTILABEL
