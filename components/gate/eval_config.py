"""Builds the EvalConfig that gates a TFLite candidate against a float32 TFLite baseline.

TFMA cannot mix TFLite and SavedModel models in one evaluation, so the baseline is the float32
TFLite conversion of the same model (PTQConverter mode `float32`), not the Trainer's SavedModel.
"""
import math

import tensorflow_model_analysis as tfma

CANDIDATE = 'candidate'
BASELINE = 'baseline'
ACCURACY_METRIC = 'sparse_categorical_accuracy'


def accuracy_gate_config(label_key: str,
                         min_accuracy: float = 0.5,
                         max_accuracy_drop: float = 0.01) -> tfma.EvalConfig:
  """An EvalConfig with a value threshold and a change threshold on accuracy.

  The candidate is blessed only when its accuracy is at least `min_accuracy` and at most
  `max_accuracy_drop` (absolute, 0.01 = 1 point) below the baseline's.

  Args:
    label_key: the label feature (integer class ids).
    min_accuracy: lowest accepted accuracy, in [0, 1].
    max_accuracy_drop: largest accepted absolute drop from the baseline, in [0, 1).

  Returns:
    An EvalConfig for the TFX Evaluator (with `model=` the candidate and `baseline_model=` the
    float32 TFLite model).

  Raises:
    ValueError: a threshold that no model could ever pass, or a malformed label key.
  """
  if not isinstance(label_key, str) or not label_key:
    raise ValueError(f'label_key={label_key!r} must name the label feature.')
  for name, value, low, high, closed in (('min_accuracy', min_accuracy, 0.0, 1.0, True),
                                         ('max_accuracy_drop', max_accuracy_drop, 0.0, 1.0,
                                          False)):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and low <= value and (value <= high if closed else value < high)
    if not ok:
      interval = f'[{low}, {high}]' if closed else f'[{low}, {high})'
      raise ValueError(f'{name}={value!r} is not accepted: accuracy thresholds lie in {interval}; '
                       'a value outside could never pass or never fail.')

  threshold = tfma.MetricThreshold(
      value_threshold=tfma.GenericValueThreshold(lower_bound={'value': float(min_accuracy)}),
      change_threshold=tfma.GenericChangeThreshold(
          direction=tfma.MetricDirection.HIGHER_IS_BETTER,
          absolute={'value': -float(max_accuracy_drop)}))
  return tfma.EvalConfig(
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
          ])
      ])
