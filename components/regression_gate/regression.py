"""The regression gate's EvalConfig and verdicts: a new model against the released one.

The float32 gate (components.gate) proves that an int8 model is faithful to its own training;
it cannot tell that the training got worse (new data, corrupted labels). This gate evaluates the
int8 candidate against the int8 model devices run now, on the same eval examples, overall and
per slice (by default one slice per label class), and blesses it only when no threshold fails.
Plain logic: TFMA protos and results, no TFX.
"""
import dataclasses
import json
import math
import numbers
from typing import Any, List, Mapping, Optional, Sequence

from google.protobuf import json_format
import tensorflow_model_analysis as tfma

from components.common import evaluation
from components.common import tasks
from components.errors import ConfigError

DEFAULT_MAX_REGRESSION = 0.0  # Overall: no drop at all.
DEFAULT_MAX_SLICE_REGRESSION = 0.02  # Per slice: 2 points.
# Tasks whose label holds one class per example, so that slicing by it gives a slice per class.
_CLASS_TASKS = (tasks.MULTICLASS, tasks.BINARY, tasks.BINARY_LOGITS)


def _check_fraction(name: str, value: float) -> float:
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
  if not ok or not 0.0 <= value < 1.0:
    raise ConfigError(f'{name}={value!r} is not accepted: give a fraction in [0.0, 1.0) '
                      '(0.02 = 2 points of accuracy, or 2% more error for a regression).')
  return float(value)


def check_slicing_features(slicing_features: Sequence[str]) -> List[str]:
  """The slicing feature names, or ConfigError naming what is accepted."""
  if isinstance(slicing_features, str) or not all(
      isinstance(f, str) and f for f in slicing_features):
    raise ConfigError(f'slicing_features={slicing_features!r} is not accepted: give a list of '
                      'feature names, each one a slice per value (for example ["country"]).')
  return list(slicing_features)


_SPEC_FORMS = ('a feature name ("country": a slice per value), a TFMA SlicingSpec, or its JSON '
               'form: {"feature_keys": ["country", "device"]} (a slice per pair of values), '
               '{"feature_values": {"country": "fr"}} (one slice), both, or {"slice_keys_sql": '
               '"..."}')


def check_slicing_specs(slicing_specs: Sequence[Any]) -> List[tfma.SlicingSpec]:
  """TFMA SlicingSpecs from what a user gives, or ConfigError naming what is accepted.

  Args:
    slicing_specs: a list whose items are each one of _SPEC_FORMS. Numbers in feature_values
      are taken as their text, as TFMA compares them.
  """
  if isinstance(slicing_specs, (str, bytes, Mapping, tfma.SlicingSpec)) or not isinstance(
      slicing_specs, (list, tuple)):
    raise ConfigError(f'slicing_specs={slicing_specs!r:.200} is not accepted: give a list whose '
                      f'items are each {_SPEC_FORMS}.')
  out = []
  for i, item in enumerate(slicing_specs):
    where = f'slicing_specs[{i}]={item!r:.200}'
    if isinstance(item, str) and item:
      spec = tfma.SlicingSpec(feature_keys=[item])
    elif isinstance(item, tfma.SlicingSpec):
      spec = tfma.SlicingSpec()
      spec.CopyFrom(item)
    elif isinstance(item, Mapping):
      item = dict(item)
      if isinstance(item.get('feature_values'), Mapping):
        item['feature_values'] = {
            k: str(v) if isinstance(v, numbers.Number) and not isinstance(v, bool) else v
            for k, v in item['feature_values'].items()}
      try:
        spec = json_format.ParseDict(item, tfma.SlicingSpec())
      except json_format.ParseError as e:
        raise ConfigError(f'{where} is not a TFMA SlicingSpec ({e}); give {_SPEC_FORMS}.'
                          ) from None
    else:
      raise ConfigError(f'{where} is not accepted; give {_SPEC_FORMS}.')
    if spec == tfma.SlicingSpec():
      raise ConfigError(f'{where} names no feature: the overall slice is always evaluated; give '
                        f'{_SPEC_FORMS}.')
    if any(not k for k in spec.feature_keys) or any(not k for k in spec.feature_values):
      raise ConfigError(f'{where} has an empty feature name; give {_SPEC_FORMS}.')
    out.append(spec)
  return out


def spec_features(spec: tfma.SlicingSpec) -> List[str]:
  """The features a SlicingSpec slices by (none for a SQL spec: its query names them)."""
  return sorted({*spec.feature_keys, *spec.feature_values})


def single_slice(spec: tfma.SlicingSpec) -> Optional[str]:
  """The one slice a spec of feature values only selects, as evaluation.slice_text names it;
  None for a spec that makes a slice per value."""
  if spec.feature_keys or spec.slice_keys_sql or not spec.feature_values:
    return None
  return ', '.join(f'{k}={v}' for k, v in sorted(spec.feature_values.items()))


def regression_config(label_key: str, task: str = tasks.MULTICLASS,
                      max_regression: float = DEFAULT_MAX_REGRESSION,
                      max_slice_regression: float = DEFAULT_MAX_SLICE_REGRESSION,
                      slicing_features: Sequence[str] = (),
                      class_slices: Optional[bool] = None,
                      slicing_specs: Sequence[Any] = ()) -> tfma.EvalConfig:
  """The EvalConfig that gates a candidate TFLite model against the released TFLite model.

  The metric is the task's gate metric (components.common.tasks.GATE_METRIC). The candidate
  passes when, against the released model (TFMA's baseline):
  - overall, it is at most `max_regression` worse: absolute accuracy points for the
    classification tasks (0.0: no drop), a relative increase of the mean absolute error for a
    regression;
  - on every slice, at most `max_slice_regression` worse, the same way.

  Args:
    label_key: the label feature.
    task: one of tasks.TASKS.
    max_regression: overall threshold, in [0, 1).
    max_slice_regression: per-slice threshold, in [0, 1).
    slicing_features: features to slice by, each value of each one a slice.
    class_slices: a slice per label class; default: for the tasks with one class label.
    slicing_specs: more slices, each a feature name, a tfma.SlicingSpec or its JSON form
      (check_slicing_specs): feature crosses, one value, a SQL query.

  Returns:
    An EvalConfig whose models are evaluation.CANDIDATE and evaluation.BASELINE (the released
    model).

  Raises:
    ConfigError: an unknown task, a threshold outside [0, 1), or bad slicing features.
  """
  tasks.validate_task(task)
  if not isinstance(label_key, str) or not label_key:
    raise ConfigError(f'label_key={label_key!r} must name the label feature.')
  max_regression = _check_fraction('max_regression', max_regression)
  max_slice_regression = _check_fraction('max_slice_regression', max_slice_regression)
  features = check_slicing_features(slicing_features)
  if class_slices is None:
    class_slices = task in _CLASS_TASKS
  if class_slices and task not in _CLASS_TASKS:
    raise ConfigError(f'class_slices=True needs a class label; task={task!r} has none. '
                      f'Tasks with one: {", ".join(_CLASS_TASKS)}.')
  slices = ([tfma.SlicingSpec(feature_keys=[label_key])] if class_slices else [])
  for spec in [tfma.SlicingSpec(feature_keys=[f]) for f in features] + check_slicing_specs(
      slicing_specs):
    if spec not in slices:  # The class slices may be asked for again.
      slices.append(spec)

  def threshold(fraction):
    if task == tasks.REGRESSION:
      change = tfma.GenericChangeThreshold(direction=tfma.MetricDirection.LOWER_IS_BETTER,
                                           relative={'value': fraction})
    else:
      change = tfma.GenericChangeThreshold(direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                                           absolute={'value': -fraction})
    return tfma.MetricThreshold(change_threshold=change)

  class_name, name = tasks.GATE_METRIC[task]
  metric = tfma.MetricConfig(class_name=class_name, per_slice_thresholds=[
      tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()],
                                   threshold=threshold(max_regression))])
  if slices:
    metric.per_slice_thresholds.add(slicing_specs=slices,
                                    threshold=threshold(max_slice_regression))
  extra = tasks.GATE_METRIC_CONFIG.get(task)
  if extra is not None:
    metric.config = json.dumps(dict(extra, name=name))
  return tfma.EvalConfig(
      model_specs=[
          tfma.ModelSpec(name=evaluation.CANDIDATE, label_key=label_key,
                         model_type=tfma.TF_LITE),
          tfma.ModelSpec(name=evaluation.BASELINE, label_key=label_key,
                         model_type=tfma.TF_LITE, is_baseline=True),
      ],
      slicing_specs=[tfma.SlicingSpec(), *slices],
      metrics_specs=[tfma.MetricsSpec(metrics=[tfma.MetricConfig(class_name='ExampleCount'),
                                               metric])])


def signature_mismatch(candidate: Mapping[str, list], released: Mapping[str, list]) -> str:
  """Why the candidate cannot replace the released model on devices, or '' when it can.

  Args:
    candidate: the candidate's tensors, as components.common.tflite.io_specs gives them
      ({'inputs': [...], 'outputs': [...]}, each with name, shape and dtype).
    released: the released model's, the same way.
  """
  def describe(specs):
    return '; '.join(f'{side} ' + ', '.join(
        f'{t["name"]} {t["dtype"]}{list(t["shape"])}' for t in specs.get(side, []))
                     for side in ('inputs', 'outputs'))

  def key(specs):
    return {side: sorted((t['name'], t['dtype'], tuple(t['shape'][1:]))
                         for t in specs.get(side, [])) for side in ('inputs', 'outputs')}

  if key(candidate) == key(released):
    return ''
  return ('the candidate\'s signature differs from the released model\'s, so devices could not '
          f'run it in its place: candidate {describe(candidate)}; released {describe(released)}. '
          'Publish it under a new model name, or keep the inputs and outputs.')


# One-sided 95%: a slice fails only when its drop beyond the threshold is this many standard
# errors of the difference of two accuracies on its examples (see slice_drop_is_noise).
SLICE_Z = 1.645


def validate_slice_noise_z(z: Any, name: str = 'slice_noise_z') -> float:
  """z as a float if it is a finite number from 0 to 10; ConfigError naming what is accepted."""
  if isinstance(z, bool) or not isinstance(z, numbers.Real) or not 0 <= z <= 10:
    raise ConfigError(f'{name}={z!r} is not accepted; give a number of standard errors from 0 '
                      f'(slice thresholds taken literally) to 10 (default {SLICE_Z}).')
  return float(z)


def slice_drop_is_noise(released: float, candidate: float, examples: int, allowed: float,
                        z: float = SLICE_Z) -> bool:
  """Whether an accuracy drop on a slice beyond `allowed` is within sampling noise.

  A slice of 36 examples moves 2.8 points per example, so a 2-point slice threshold taken
  literally refuses every retrained model that gets one more example of one class wrong. The
  drop counts only when it exceeds `allowed` by more than z standard errors of the difference
  of the two accuracies (binomial, each on the slice's examples; the models are evaluated on the
  same examples, so this errs on the side of calling a drop noise on small slices and is strict
  on large ones).

  Args:
    released: the released model's accuracy on the slice.
    candidate: the candidate's.
    examples: examples in the slice.
    allowed: the slice threshold (a fraction).
    z: standard errors; 0 takes the threshold literally.
  """
  if examples <= 0:
    return True
  variance = (released * (1 - released) + candidate * (1 - candidate)) / examples
  return (released - candidate) - allowed <= z * math.sqrt(variance)


# What compare() says of each slice.
OK = 'ok'
REGRESSED = 'regressed'
NOISE = 'within noise'  # Beyond the threshold, within sampling noise: not a failure.


@dataclasses.dataclass(frozen=True)
class SliceResult:
  """The candidate against the released model on one slice."""
  slice: str  # evaluation.slice_text: 'overall' or 'feature=value'.
  examples: int
  candidate: Optional[float]
  released: Optional[float]
  allowed: float
  verdict: str  # OK, REGRESSED or NOISE.

  def line(self, metric: str) -> str:
    return (f'{metric} on slice {self.slice}: candidate {_fmt(self.candidate)} vs released '
            f'{_fmt(self.released)} (allowed regression {self.allowed:g}, {self.examples} '
            'examples)')


def compare(evaluation_uri: str, metric: str, max_regression: float, max_slice_regression: float,
            higher_is_better: bool = True, z: float = SLICE_Z) -> List[SliceResult]:
  """Every slice of the evaluation, overall first, with its verdict.

  The overall slice is held to `max_regression` as TFMA validated it. A slice that TFMA failed
  counts as REGRESSED only when its drop is beyond sampling noise (slice_drop_is_noise), else
  NOISE (z standard errors; 0 takes the slice threshold literally); for error metrics (lower
  is better) TFMA's verdict stands.
  """
  values = evaluation.slice_metric_values(evaluation_uri, metric)
  counts = evaluation.slice_metric_values(evaluation_uri, 'example_count')
  failed = {evaluation.slice_text(v.slice_key)
            for v in tfma.load_validation_result(evaluation_uri).metric_validations_per_slice
            if any(f.metric_key.name == metric for f in v.failures)}
  results = []
  for name in sorted(values, key=lambda n: (n != evaluation.OVERALL, n)):
    candidate = values[name].get(evaluation.CANDIDATE)
    released = values[name].get(evaluation.BASELINE)
    is_slice = name != evaluation.OVERALL
    allowed = max_slice_regression if is_slice else max_regression
    examples = int(counts.get(name, {}).get(evaluation.CANDIDATE, 0))
    verdict = OK
    if name in failed:
      verdict = REGRESSED
      if (is_slice and higher_is_better and candidate is not None and released is not None and
          slice_drop_is_noise(released, candidate, examples, allowed, z)):
        verdict = NOISE
    results.append(SliceResult(name, examples, candidate, released, allowed, verdict))
  return results


def _fmt(value: Optional[float]) -> str:
  return 'n/a' if value is None else f'{value:.4f}'
