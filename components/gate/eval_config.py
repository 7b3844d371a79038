"""Builds the EvalConfig that gates a TFLite candidate against a float32 TFLite baseline.

TFMA cannot mix TFLite and SavedModel models in one evaluation, so the baseline is the float32
TFLite conversion of the same model (PTQConverter mode `float32`), not the Trainer's SavedModel.
"""
import difflib
import json
import math
from typing import Optional, Sequence

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_specs
from tensorflow_model_analysis.metrics import metric_types
import tf_keras

from components.common import tasks
from components.common import validation
from components.common.evaluation import BASELINE
from components.common.evaluation import CANDIDATE
from components.errors import ConfigError

# The gate's thresholds unless told otherwise. Classification: any model better than a coin on
# balanced binary data, and at most one accuracy point below the float32 baseline. Regression:
# a mean absolute error at most 5% above the baseline's, and no bound on its value.
DEFAULT_MIN_ACCURACY = 0.5
DEFAULT_MAX_ACCURACY_DROP = 0.01
DEFAULT_MAX_ERROR_INCREASE = 0.05
# Reported beside the gate metric of a task, without a threshold.
_REPORTED = {tasks.BINARY: ('AUC',)}


def _check_threshold(name, value, what, closed):
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
  ok = ok and 0.0 <= value and (value <= 1.0 if closed else value < 1.0)
  if not ok:
    interval = '[0.0, 1.0]' if closed else '[0.0, 1.0)'
    raise ConfigError(f'{name}={value!r} is not accepted: {what} thresholds lie in {interval}; '
                      'a value outside could never pass or never fail.')


def gate_config(label_key: str,
                task: str = tasks.MULTICLASS,
                min_accuracy: float = DEFAULT_MIN_ACCURACY,
                max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
                max_error_increase: float = DEFAULT_MAX_ERROR_INCREASE,
                max_error: Optional[float] = None,
                extra_metrics: Sequence[str] = ()) -> tfma.EvalConfig:
  """The EvalConfig that gates an int8 TFLite candidate against its float32 TFLite baseline.

  The metric follows the task (see components.common.tasks), and every threshold has a value part
  and a change-against-the-baseline part:

  - `multiclass` (2+ output units): SparseCategoricalAccuracy >= min_accuracy and at most
    max_accuracy_drop (absolute, 0.01 = 1 point) below the baseline's;
  - `binary` (one sigmoid unit): BinaryAccuracy at threshold 0.5, same thresholds, plus AUC
    reported;
  - `binary_logits` (one linear unit, a logit): BinaryAccuracy at logit 0 (probability 0.5),
    reported as `binary_accuracy_of_logits`, same thresholds;
  - `regression` (a linear output): MeanAbsoluteError at most max_error_increase (relative,
    0.05 = 5%) above the baseline's, and at most max_error when given.

  Whether the task fits the model is checked where the model is known (the benchmarker and the
  pushers refuse a blessing whose metric cannot measure the model's output).

  Args:
    label_key: the label feature.
    task: one of components.common.tasks.TASKS.
    min_accuracy: classification: lowest accepted accuracy, in [0, 1].
    max_accuracy_drop: classification: largest accepted absolute drop, in [0, 1).
    max_error_increase: regression: largest accepted relative increase of the error, in [0, 1).
    max_error: regression: largest accepted mean absolute error (> 0), or None for no bound.
    extra_metrics: class names of more metrics to compute and report, without a threshold: TFMA
      metrics (for example `MultiClassConfusionMatrixPlot`) or tf_keras.metrics classes.

  Returns:
    An EvalConfig for the TFX Evaluator (with `model=` the candidate and `baseline_model=` the
    float32 TFLite model).

  Raises:
    ConfigError: an unknown task, a threshold that no model could ever pass, a malformed label
      key, or a metric TFMA does not know.
  """
  tasks.validate_task(task)
  if not isinstance(label_key, str) or not label_key:
    raise ConfigError(f'label_key={label_key!r} must name the label feature.')
  if isinstance(extra_metrics, str):
    raise ConfigError(f'extra_metrics={extra_metrics!r} must be a list of metric class names.')
  if task == tasks.REGRESSION:
    _check_threshold('max_error_increase', max_error_increase, 'relative error', closed=False)
    if max_error is not None:
      validation.positive_number('max_error', max_error)
    threshold = tfma.MetricThreshold(change_threshold=tfma.GenericChangeThreshold(
        direction=tfma.MetricDirection.LOWER_IS_BETTER,
        relative={'value': float(max_error_increase)}))
    if max_error is not None:
      threshold.value_threshold.upper_bound.value = float(max_error)
  else:
    _check_threshold('min_accuracy', min_accuracy, 'accuracy', closed=True)
    _check_threshold('max_accuracy_drop', max_accuracy_drop, 'accuracy', closed=False)
    threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={'value': float(min_accuracy)}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={'value': -float(max_accuracy_drop)}))
  config = tfma.EvalConfig(
      model_specs=[
          tfma.ModelSpec(name=CANDIDATE, label_key=label_key, model_type=tfma.TF_LITE),
          tfma.ModelSpec(name=BASELINE, label_key=label_key, model_type=tfma.TF_LITE,
                         is_baseline=True),
      ],
      slicing_specs=[tfma.SlicingSpec()],
      metrics_specs=[
          tfma.MetricsSpec(metrics=[
              tfma.MetricConfig(class_name='ExampleCount'),
              _gate_metric(task, threshold),
              *(tfma.MetricConfig(class_name=name)
                for name in (*_REPORTED.get(task, ()), *extra_metrics)),
          ])
      ])
  validate_eval_config(config)
  return config


def _gate_metric(task: str, threshold: tfma.MetricThreshold) -> tfma.MetricConfig:
  """The MetricConfig of the task's gated metric, under the name tasks.GATE_METRIC gives it."""
  class_name, name = tasks.GATE_METRIC[task]
  config = tasks.GATE_METRIC_CONFIG.get(task)
  if config is None:
    return tfma.MetricConfig(class_name=class_name, threshold=threshold)
  return tfma.MetricConfig(class_name=class_name, threshold=threshold,
                           config=json.dumps(dict(config, name=name)))


def accuracy_gate_config(label_key: str,
                         min_accuracy: float = DEFAULT_MIN_ACCURACY,
                         max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
                         extra_metrics: Sequence[str] = ()) -> tfma.EvalConfig:
  """gate_config for a multi-class classifier: accuracy value and change thresholds.

  The candidate is blessed only when its accuracy is at least `min_accuracy` and at most
  `max_accuracy_drop` (absolute, 0.01 = 1 point) below the baseline's.
  """
  return gate_config(label_key, tasks.MULTICLASS, min_accuracy=min_accuracy,
                     max_accuracy_drop=max_accuracy_drop, extra_metrics=extra_metrics)


def validate_eval_config(eval_config: tfma.EvalConfig) -> None:
  """Raises ConfigError naming a metric the TFX Evaluator could not create, with what is accepted.

  TFMA resolves each MetricConfig only when the Evaluator runs, after the models were trained and
  converted; checking while the pipeline is built fails in seconds instead. Resolution is TFMA's
  own: a registered TFMA metric, else a tf_keras metric class, else `module` + `class_name`.

  Args:
    eval_config: the EvalConfig given to the Evaluator.
  """
  for spec in eval_config.metrics_specs:
    for metric in spec.metrics:
      try:
        metric_specs.metric_instance(metric)
      except Exception as e:  # pylint: disable=broad-except  # Keras, imports and TFMA differ.
        raise ConfigError(_unknown_metric_message(metric, e)) from e


def _unknown_metric_message(metric: tfma.MetricConfig, error: Exception) -> str:
  where = f' in module {metric.module!r}' if metric.module else ''
  reason = str(error).split('. ')[0]  # Keras goes on with advice on custom objects.
  close = difflib.get_close_matches(
      metric.class_name, [*metric_types.registered_metrics(), *_keras_metric_names()], n=3)
  suggestion = f' Did you mean {" or ".join(map(repr, close))}?' if close else ''
  return (f'eval_config names metric class_name={metric.class_name!r}{where}, which TFMA cannot '
          f'create ({type(error).__name__}: {reason}). Accepted: a TFMA metric (tfma.metrics, for '
          'example "ExampleCount"), a tf_keras.metrics class (for example '
          '"SparseCategoricalAccuracy"), or a custom metric class with module= its import path.'
          f'{suggestion}')


def _keras_metric_names():
  """Class names of the tf_keras metrics, which TFMA accepts without a module."""
  return [name for name in dir(tf_keras.metrics)
          if isinstance(getattr(tf_keras.metrics, name), type) and
          issubclass(getattr(tf_keras.metrics, name), tf_keras.metrics.Metric)]
