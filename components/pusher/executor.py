"""TFLitePusher executor: checks the blessing and the mode, then delegates to a Publisher."""
import json
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.components.evaluator import constants as evaluator_constants
from tfx.types import artifact_utils

from components import spec_keys
from components.common import evaluation
from components.common import model_io
from components.common import tflite
from components.pusher import publisher

# What publish() returns; named here for executors that subclass this one.
PublishResult = publisher.PublishResult


def refusal_reason(model: types.Artifact, blessing: types.Artifact, allowed_modes: List[str],
                   evaluation_uri: str = '') -> str:
  """Why `model` must not be pushed, or '' when it may be."""
  reason = evaluation.blessing_refusal(model, blessing, evaluation_uri)
  if reason:
    return reason
  mode = model.get_string_custom_property(spec_keys.PROP_MODE)
  if mode not in allowed_modes:
    return f'model mode {mode!r} is not in allowed_modes {allowed_modes}'
  return ''


def regression_refusal(model: types.Artifact, regression_blessing: types.Artifact) -> str:
  """Why the regression gate's blessing (against the released model) forbids a push, or ''."""
  current = regression_blessing.get_string_custom_property(
      evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY)
  if current and current != model.uri:
    return (f'the regression blessing {regression_blessing.uri} is for model {current}, not for '
            f'{model.uri}; wire the RegressionGate that compared this model.')
  if regression_blessing.get_int_custom_property(spec_keys.PROP_BLESSED) == 1:
    return ''
  return regression_blessing.get_string_custom_property(spec_keys.PROP_REASON) or (
      f'the regression gate did not bless this model against the released one (no reason '
      f'recorded; see {regression_blessing.uri})')


class Executor(base_executor.BaseExecutor):
  """Pushes through VersionedDirectoryPublisher, or records why it did not.

  Subclasses publish elsewhere by overriding `publish`; the gating stays the same.
  """

  NAME = 'TFLitePusher'  # In log lines.

  def publish(self, name: str, tflite_model: bytes, metadata: Dict[str, Any],
              exec_properties: Dict[str, Any]) -> PublishResult:
    """Publishes the model; returns the version and where it went."""
    destination = publisher.VersionedDirectoryPublisher(
        exec_properties[spec_keys.PUSH_DESTINATION_KEY])
    return destination.publish(name, tflite_model, metadata)

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    model = artifact_utils.get_single_instance(input_dict[spec_keys.MODEL_KEY])
    blessing = artifact_utils.get_single_instance(input_dict[spec_keys.MODEL_BLESSING_KEY])
    evaluations = input_dict.get(spec_keys.EVALUATION_KEY) or []
    regression = input_dict.get(spec_keys.REGRESSION_BLESSING_KEY) or []
    pushed = artifact_utils.get_single_instance(output_dict[spec_keys.PUSHED_MODEL_KEY])
    name = exec_properties[spec_keys.MODEL_NAME_KEY]
    allowed_modes = json.loads(exec_properties[spec_keys.ALLOWED_MODES_KEY])

    reason = refusal_reason(model, blessing, allowed_modes,
                            evaluations[0].uri if evaluations else '')
    tflite_model = b'' if reason else model_io.read_tflite(model.uri, self.NAME)
    if not reason and evaluations:
      # A blessing from a metric that cannot measure this model's output proves nothing.
      reason = evaluation.gate_misfit(evaluations[0].uri, tflite.output(tflite_model))
    if not reason and regression:
      # After the model's own gate: a model that fails it is refused for that reason first.
      reason = regression_refusal(model, regression[0])
    if reason:
      logging.warning('%s: NOT pushing %s: %s', self.NAME, model.uri, reason)
      pushed.set_int_custom_property(spec_keys.PROP_PUSHED, 0)
      pushed.set_string_custom_property(spec_keys.PROP_PUSH_REASON, reason)
      return

    metadata = {
        'mode': model.get_string_custom_property(spec_keys.PROP_MODE),
        'input_dtypes': json.loads(model.get_string_custom_property(spec_keys.PROP_INPUT_DTYPES)),
        'output_dtypes': json.loads(model.get_string_custom_property(spec_keys.PROP_OUTPUT_DTYPES)),
        'source_model_uri': model.uri,
    }
    benchmark = model.get_string_custom_property(spec_keys.PROP_BENCHMARK)
    if benchmark:  # Set by VariantSelector on the model it chose, with the TFMA figures.
      metadata['benchmark'] = json.loads(benchmark)
      metadata['tfma_metrics'] = metadata['benchmark'].pop('tfma_metrics', {})
    if evaluations:
      metadata['tfma_metrics'] = evaluation.metric_values(
          evaluations[0].uri, evaluation.gate_metric(evaluations[0].uri))
    if regression:  # The evidence against the released model, kept with the release.
      metadata['regression_gate'] = {
          'blessed': 1,
          'reason': regression[0].get_string_custom_property(spec_keys.PROP_REASON)}
    # Which blessings let this model through: an OTA release pending approval needs them.
    metadata['gated_by'] = {'model_blessing': blessing.uri, **(
        {'regression_blessing': regression[0].uri, 'regression_status': regression[0]
         .get_string_custom_property(spec_keys.PROP_REGRESSION_STATUS)} if regression else {})}
    result = self.publish(name, tflite_model, metadata, exec_properties)
    for key, value in result.properties.items():
      if isinstance(value, int):
        pushed.set_int_custom_property(key, value)
      else:
        pushed.set_string_custom_property(key, value)
    # A string, as the TFX Pusher writes it (tools that read pushed_version expect one).
    pushed.set_string_custom_property(spec_keys.PROP_PUSHED_VERSION, str(result.version))
    pushed.set_string_custom_property(spec_keys.PROP_PUSHED_DESTINATION, result.uri)
    if result.refusal:
      logging.warning('%s: NOT pushing %s: %s', self.NAME, model.uri, result.refusal)
      pushed.set_int_custom_property(spec_keys.PROP_PUSHED, 0)
      pushed.set_string_custom_property(spec_keys.PROP_PUSH_REASON, result.refusal)
      return
    logging.info('%s: %s %s version %d at %s.', self.NAME,
                 'pushed' if result.created else 'already published as', name, result.version,
                 result.uri)
    pushed.set_int_custom_property(spec_keys.PROP_PUSHED, 1)
    pushed.set_string_custom_property(
        spec_keys.PROP_PUSH_REASON, result.reason or (
            'pushed' if result.created else 'same model already latest'))
