"""Builds the EvalConfig that gates a TFLite candidate against a float32 TFLite baseline.

TFMA cannot mix TFLite and SavedModel models in one evaluation, so the baseline is the float32
TFLite conversion of the same model (PTQConverter mode `float32`), not the Trainer's SavedModel.
"""
import difflib
import math
from typing import Sequence

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_specs
from tensorflow_model_analysis.metrics import metric_types
import tf_keras

from components.common.evaluation import BASELINE
from components.common.evaluation import CANDIDATE
from components.errors import ConfigError

# The gate's thresholds unless told otherwise: any model better than a coin on balanced binary
# data, and at most one accuracy point below the float32 baseline.
DEFAULT_MIN_ACCURACY = 0.5
DEFAULT_MAX_ACCURACY_DROP = 0.01


def accuracy_gate_config(label_key: str,
                         min_accuracy: float = DEFAULT_MIN_ACCURACY,
                         max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
                         extra_metrics: Sequence[str] = ()) -> tfma.EvalConfig:
  """An EvalConfig with a value threshold and a change threshold on accuracy.

  The candidate is blessed only when its accuracy is at least `min_accuracy` and at most
  `max_accuracy_drop` (absolute, 0.01 = 1 point) below the baseline's.

  Args:
    label_key: the label feature (integer class ids).
    min_accuracy: lowest accepted accuracy, in [0, 1].
    max_accuracy_drop: largest accepted absolute drop from the baseline, in [0, 1).
    extra_metrics: class names of more metrics to compute and report, without a threshold: TFMA
      metrics (for example `MultiClassConfusionMatrixPlot`) or tf_keras.metrics classes.

  Returns:
    An EvalConfig for the TFX Evaluator (with `model=` the candidate and `baseline_model=` the
    float32 TFLite model).

  Raises:
    ConfigError: a threshold that no model could ever pass, a malformed label key, or a metric
      TFMA does not know.
  """
  if not isinstance(label_key, str) or not label_key:
    raise ConfigError(f'label_key={label_key!r} must name the label feature.')
  for name, value, low, high, closed in (('min_accuracy', min_accuracy, 0.0, 1.0, True),
                                         ('max_accuracy_drop', max_accuracy_drop, 0.0, 1.0,
                                          False)):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and low <= value and (value <= high if closed else value < high)
    if not ok:
      interval = f'[{low}, {high}]' if closed else f'[{low}, {high})'
      raise ConfigError(f'{name}={value!r} is not accepted: accuracy thresholds lie in {interval}; '
                       'a value outside could never pass or never fail.')

  threshold = tfma.MetricThreshold(
      value_threshold=tfma.GenericValueThreshold(lower_bound={'value': float(min_accuracy)}),
      change_threshold=tfma.GenericChangeThreshold(
          direction=tfma.MetricDirection.HIGHER_IS_BETTER,
          absolute={'value': -float(max_accuracy_drop)}))
  if isinstance(extra_metrics, str):
    raise ConfigError(f'extra_metrics={extra_metrics!r} must be a list of metric class names.')
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
              tfma.MetricConfig(
                  class_name='SparseCategoricalAccuracy', threshold=threshold),
              *(tfma.MetricConfig(class_name=name) for name in extra_metrics),
          ])
      ])
  validate_eval_config(config)
  return config


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
