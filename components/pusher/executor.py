"""TFLitePusher executor: checks the blessing and the mode, then delegates to a Publisher."""
import json
import os
from typing import Any, Dict, List

from absl import logging
import tensorflow as tf
from tfx import types
from tfx.components.evaluator import constants as evaluator_constants
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components import keys
from components.gate import eval_config
from components.gate import results
from components.pusher import publisher


def blessing_refusal(model: types.Artifact, blessing: types.Artifact,
                     evaluation_uri: str = '') -> str:
  """Why the Evaluator's `blessing` does not bless `model`, or '' when it does."""
  current = blessing.get_string_custom_property(
      evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY)
  if current and current != model.uri:
    return (f'the blessing {blessing.uri} is for model {current}, not for {model.uri}; wire the '
            'Evaluator that evaluated this model.')
  blessed = blessing.get_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY)
  selection_reason = blessing.get_string_custom_property(keys.PROP_SELECTION_REASON)
  if blessed != evaluator_constants.BLESSED_VALUE and selection_reason:
    return f'VariantSelector chose no model to ship: {selection_reason}'
  if blessed != evaluator_constants.BLESSED_VALUE:
    failures = results.validation_failures(evaluation_uri) if evaluation_uri else []
    detail = '; '.join(failures) if failures else 'see the Evaluator output for the thresholds'
    return f'model is NOT_BLESSED by the Evaluator: {detail}'
  return ''


def refusal_reason(model: types.Artifact, blessing: types.Artifact, allowed_modes: List[str],
                   evaluation_uri: str = '') -> str:
  """Why `model` must not be pushed, or '' when it may be."""
  reason = blessing_refusal(model, blessing, evaluation_uri)
  if reason:
    return reason
  mode = model.get_string_custom_property(keys.PROP_MODE)
  if mode not in allowed_modes:
    return f'model mode {mode!r} is not in allowed_modes {allowed_modes}'
  return ''


class Executor(base_executor.BaseExecutor):
  """Pushes through VersionedDirectoryPublisher, or records why it did not.

  Subclasses publish elsewhere by overriding `publish`; the gating stays the same.
  """

  NAME = 'TFLitePusher'  # In log lines.

  def publish(self, name: str, tflite_model: bytes, metadata: Dict[str, Any],
              exec_properties: Dict[str, Any]) -> publisher.PublishResult:
    """Publishes the model; returns the version and where it went."""
    destination = publisher.VersionedDirectoryPublisher(exec_properties[keys.PUSH_DESTINATION_KEY])
    return destination.publish(name, tflite_model, metadata)

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    model = artifact_utils.get_single_instance(input_dict[keys.MODEL_KEY])
    blessing = artifact_utils.get_single_instance(input_dict[keys.MODEL_BLESSING_KEY])
    evaluations = input_dict.get(keys.EVALUATION_KEY) or []
    pushed = artifact_utils.get_single_instance(output_dict[keys.PUSHED_MODEL_KEY])
    name = exec_properties[keys.MODEL_NAME_KEY]
    allowed_modes = json.loads(exec_properties[keys.ALLOWED_MODES_KEY])

    reason = refusal_reason(model, blessing, allowed_modes,
                            evaluations[0].uri if evaluations else '')
    if reason:
      logging.warning('%s: NOT pushing %s: %s', self.NAME, model.uri, reason)
      pushed.set_int_custom_property(keys.PROP_PUSHED, 0)
      pushed.set_string_custom_property(keys.PROP_PUSH_REASON, reason)
      return

    with tf.io.gfile.GFile(os.path.join(model.uri, keys.PLAIN_TFLITE_FILE_NAME), 'rb') as f:
      tflite_model = f.read()
    metadata = {
        'mode': model.get_string_custom_property(keys.PROP_MODE),
        'input_dtypes': json.loads(model.get_string_custom_property(keys.PROP_INPUT_DTYPES)),
        'output_dtypes': json.loads(model.get_string_custom_property(keys.PROP_OUTPUT_DTYPES)),
        'source_model_uri': model.uri,
    }
    benchmark = model.get_string_custom_property(keys.PROP_BENCHMARK)
    if benchmark:  # Set by VariantSelector on the model it chose, with the TFMA figures.
      metadata['benchmark'] = json.loads(benchmark)
      metadata['tfma_metrics'] = metadata['benchmark'].pop('tfma_metrics', {})
    if evaluations:
      metadata['tfma_metrics'] = results.metric_values(evaluations[0].uri,
                                                       eval_config.ACCURACY_METRIC)
    result = self.publish(name, tflite_model, metadata, exec_properties)
    logging.info('%s: %s %s version %d at %s.', self.NAME,
                 'pushed' if result.created else 'already published as', name, result.version,
                 result.uri)
    pushed.set_int_custom_property(keys.PROP_PUSHED, 1)
    pushed.set_int_custom_property(keys.PROP_PUSHED_VERSION, result.version)
    pushed.set_string_custom_property(keys.PROP_PUSHED_DESTINATION, result.uri)
    pushed.set_string_custom_property(
        keys.PROP_PUSH_REASON, 'pushed' if result.created else 'same model already latest')
