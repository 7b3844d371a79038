"""Reading a TFX Evaluator's output: the metric values, the failed thresholds, the blessing."""
from typing import Dict, List

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_specs
from tensorflow_model_analysis.writers import eval_config_writer
from tfx import types
from tfx.components.evaluator import constants as evaluator_constants

from components import spec_keys
from components.common import tasks

# The model names of the accuracy gate's EvalConfig (components.gate), under which TFMA
# reports each model's metrics.
CANDIDATE = 'candidate'
BASELINE = 'baseline'
# The metric the multi-class gate thresholds, as TFMA names it in its output.
ACCURACY_METRIC = tasks.GATE_METRIC[tasks.MULTICLASS][1]
OVERALL = 'overall'  # The overall slice, as slice_text names it.


def gated_metrics(evaluation_uri: str) -> List[str]:
  """The metrics an Evaluator output thresholds, by the names TFMA reports them under.

  Read from the EvalConfig that TFMA stores beside its results, so a user's own EvalConfig is
  read the same way as the gate's; empty when the output holds none.
  """
  config = eval_config_writer.load_eval_run(evaluation_uri)[0]
  if config is None:
    return []
  return [metric_specs.metric_instance(metric).name for spec in config.metrics_specs
          for metric in spec.metrics if metric.HasField('threshold')]


def gate_metric(evaluation_uri: str) -> str:
  """The first thresholded metric of an Evaluator output (the gate's), or ACCURACY_METRIC."""
  return next(iter(gated_metrics(evaluation_uri)), ACCURACY_METRIC)


def gate_misfit(evaluation_uri: str, output: tasks.Output) -> str:
  """Why the gate's metrics cannot measure a model with this output, or '' when they can.

  A blessing from such a gate proves nothing (SparseCategoricalAccuracy on one sigmoid unit
  scores every model alike), so whoever decides on it must refuse the model instead.
  """
  reasons = [tasks.misfit(tasks.TASK_OF_METRIC[name], output)
             for name in gated_metrics(evaluation_uri) if name in tasks.TASK_OF_METRIC]
  found = [r for r in reasons if r]
  return ('the gate cannot measure this model: ' + ' '.join(found)) if found else ''


def validation_failures(evaluation_uri: str) -> List[str]:
  """One readable line per failed threshold in an Evaluator output (empty when it passed)."""
  result = tfma.load_validation_result(evaluation_uri)
  lines = []
  for per_slice in result.metric_validations_per_slice:
    for failure in per_slice.failures:
      key = failure.metric_key
      value = failure.metric_value
      if not value.HasField('double_value'):
        lines.append(f'{key.name}: {failure.message or value}')
        continue
      what = 'change vs baseline' if key.is_diff else 'value'
      lines.append(f'{key.name} {what} = {value.double_value.value:+.4f} fails '
                   f'{_threshold_text(failure.metric_threshold, key.is_diff)} '
                   f'(model {key.model_name or "?"})')
  if not result.validation_ok and not lines:
    if result.missing_slices or result.missing_thresholds:
      lines.append(f'missing slices or thresholds: {list(result.missing_slices)} '
                   f'{list(result.missing_thresholds)}')
  return lines


def _threshold_text(threshold: tfma.MetricThreshold, is_diff: bool) -> str:
  if is_diff and threshold.HasField('change_threshold'):
    change = threshold.change_threshold
    if change.HasField('absolute'):
      return f'the allowed change >= {change.absolute.value:+.4f}'
    return f'the change threshold {change}'
  bounds = threshold.value_threshold
  parts = []
  if bounds.HasField('lower_bound'):
    parts.append(f'>= {bounds.lower_bound.value:.4f}')
  if bounds.HasField('upper_bound'):
    parts.append(f'<= {bounds.upper_bound.value:.4f}')
  return 'the bound ' + ' and '.join(parts)


def metric_values(evaluation_uri: str, metric_name: str) -> Dict[str, float]:
  """{model name: value} of one metric on the overall slice (diffs left out)."""
  return slice_metric_values(evaluation_uri, metric_name).get(OVERALL, {})



def slice_text(slice_key) -> str:
  """A slice as people read it: `overall`, or `feature=value[, feature=value]`.

  Args:
    slice_key: a TFMA SliceKey proto (from metrics or validation results).
  """
  parts = []
  for single in slice_key.single_slice_keys:
    value = getattr(single, single.WhichOneof('kind')) if single.WhichOneof('kind') else ''
    parts.append(f'{single.column}={value.decode() if isinstance(value, bytes) else value}')
  return ', '.join(parts) or OVERALL


def slice_metric_values(evaluation_uri: str, metric_name: str) -> Dict[str, Dict[str, float]]:
  """{slice (slice_text): {model name: value}} of one metric on every slice (diffs left out)."""
  values = {}
  for metrics_for_slice in tfma.load_metrics(evaluation_uri):
    for kv in metrics_for_slice.metric_keys_and_values:
      if kv.key.name == metric_name and not kv.key.is_diff and kv.value.HasField('double_value'):
        values.setdefault(slice_text(metrics_for_slice.slice_key), {})[kv.key.model_name] = (
            kv.value.double_value.value)
  return values


def blessing_refusal(model: types.Artifact, blessing: types.Artifact,
                     evaluation_uri: str = '') -> str:
  """Why the Evaluator's (or VariantSelector's) `blessing` does not bless `model`, or ''.

  A blessing counts only for the model it names: a pipeline that wires the wrong Evaluator must
  not push. The reason quotes the failed thresholds when `evaluation_uri` is given.
  """
  current = blessing.get_string_custom_property(
      evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY)
  if current and current != model.uri:
    return (f'the blessing {blessing.uri} is for model {current}, not for {model.uri}; wire the '
            'Evaluator that evaluated this model.')
  if blessing.get_int_custom_property(spec_keys.PROP_FAILED):
    # Whatever else a blessing of a failed variant says, it is a refusal.
    return ('the variant failed before the gate: ' +
            (blessing.get_string_custom_property(spec_keys.PROP_FAILURE_REASON) or 'failed'))
  blessed = blessing.get_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY)
  if blessed == evaluator_constants.BLESSED_VALUE:
    return ''
  selection_reason = blessing.get_string_custom_property(spec_keys.PROP_SELECTION_REASON)
  if selection_reason:
    return f'VariantSelector chose no model to ship: {selection_reason}'
  failures = validation_failures(evaluation_uri) if evaluation_uri else []
  detail = '; '.join(failures) if failures else 'see the Evaluator output for the thresholds'
  return f'model is NOT_BLESSED by the Evaluator: {detail}'
