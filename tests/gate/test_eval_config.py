"""The TFMA accuracy gate's EvalConfig: thresholds that can decide, metrics TFMA can create.

Every check runs when the pipeline is built, not after training when the Evaluator starts.
"""
import pytest
import tensorflow_model_analysis as tfma

from components import errors
from components.gate import DEFAULT_MAX_ACCURACY_DROP
from components.gate import DEFAULT_MIN_ACCURACY
from components.gate import accuracy_gate_config
from components.gate import validate_eval_config


@pytest.mark.parametrize('kwargs,message', [
    (dict(min_accuracy=1.5), r'min_accuracy=1.5 is not accepted: accuracy thresholds lie in '
     r'\[0.0, 1.0\]'),
    (dict(min_accuracy=-0.1), 'min_accuracy=-0.1 is not accepted'),
    (dict(min_accuracy=True), 'min_accuracy=True is not accepted'),
    (dict(max_accuracy_drop=1.0), r'max_accuracy_drop=1.0 is not accepted.*\[0.0, 1.0\)'),
    (dict(max_accuracy_drop=float('nan')), 'max_accuracy_drop=nan is not accepted'),
    (dict(label_key=''), "label_key='' must name the label feature"),
    (dict(extra_metrics='AUC'), "extra_metrics='AUC' must be a list of metric class names"),
])
def test_gate_thresholds_that_could_never_decide_are_rejected(kwargs, message):
  args = dict(label_key='label')
  args.update(kwargs)

  with pytest.raises(errors.ConfigError, match=message):
    accuracy_gate_config(**args)


def test_gate_config_compares_two_tflite_models_with_both_thresholds():
  config = accuracy_gate_config('label', min_accuracy=0.9, max_accuracy_drop=0.02)

  assert [(m.name, m.model_type, m.is_baseline, m.label_key) for m in config.model_specs] == [
      ('candidate', 'tf_lite', False, 'label'), ('baseline', 'tf_lite', True, 'label')]
  metrics = config.metrics_specs[0].metrics
  assert [m.class_name for m in metrics] == ['ExampleCount', 'SparseCategoricalAccuracy']
  threshold = metrics[1].threshold
  assert threshold.value_threshold.lower_bound.value == 0.9
  # A drop of 0.02 is a change of at least -0.02 for a metric where higher is better.
  assert threshold.change_threshold.absolute.value == -0.02
  assert threshold.change_threshold.direction == tfma.MetricDirection.HIGHER_IS_BETTER


def test_gate_defaults_are_better_than_a_coin_and_at_most_one_point_below_the_baseline():
  threshold = accuracy_gate_config('label').metrics_specs[0].metrics[1].threshold

  assert (DEFAULT_MIN_ACCURACY, DEFAULT_MAX_ACCURACY_DROP) == (0.5, 0.01)
  assert threshold.value_threshold.lower_bound.value == 0.5
  assert threshold.change_threshold.absolute.value == -0.01


def test_gate_with_an_unknown_metric_fails_when_built_and_suggests_the_name():
  with pytest.raises(errors.ConfigError, match="class_name='SparseCategoricalAccurcy', which TFMA "
                     r"cannot create \(ValueError: Unknown metric function.*Accepted: a TFMA "
                     "metric.*a tf_keras.metrics class.*Did you mean "
                     "'SparseCategoricalAccuracy'"):
    accuracy_gate_config('label', extra_metrics=['SparseCategoricalAccurcy'])


def test_gate_extra_metrics_that_exist_are_added_without_a_threshold():
  config = accuracy_gate_config('label', extra_metrics=['AUC', 'MultiClassConfusionMatrixPlot'])

  metrics = config.metrics_specs[0].metrics
  assert [m.class_name for m in metrics] == [
      'ExampleCount', 'SparseCategoricalAccuracy', 'AUC', 'MultiClassConfusionMatrixPlot']
  # Reported only: the gate stays on accuracy alone.
  assert [m.class_name for m in metrics if m.HasField('threshold')] == [
      'SparseCategoricalAccuracy']


def test_a_user_eval_config_with_a_missing_metric_module_is_named():
  config = tfma.EvalConfig(metrics_specs=[tfma.MetricsSpec(metrics=[
      tfma.MetricConfig(class_name='ExampleCount'),
      tfma.MetricConfig(class_name='F2Score', module='my_metrics.scores')])])

  with pytest.raises(errors.ConfigError, match="class_name='F2Score' in module "
                     "'my_metrics.scores', which TFMA cannot create \\(ModuleNotFoundError: No "
                     "module named 'my_metrics'\\)"):
    validate_eval_config(config)


def test_a_user_eval_config_whose_metrics_exist_passes():
  config = tfma.EvalConfig(metrics_specs=[tfma.MetricsSpec(metrics=[
      tfma.MetricConfig(class_name='ExampleCount'),
      tfma.MetricConfig(class_name='SparseCategoricalCrossentropy')])])

  assert validate_eval_config(config) is None
