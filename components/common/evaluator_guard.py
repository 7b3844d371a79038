"""The TFX Evaluator behind a guard: a failed variant is refused without being evaluated.

The accuracy gate is the standard TFX Evaluator (components.gate builds its EvalConfig). Given a
failed variant (components.common.failures) it would fail the whole run on a model file that is
not there. This Evaluator is the same component with an executor that first looks at the model:
for a failed variant it writes a NOT_BLESSED blessing that names the model and gives the failure
as the reason, and an empty evaluation; any other model is evaluated by TFX's own executor.
"""
import os
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.components.evaluator import component as evaluator_component
from tfx.components.evaluator import constants
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components import spec_keys
from components.common import failures


class Executor(evaluator_executor.Executor):
  """TFX's Evaluator executor, refusing a failed variant without work."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    model = artifact_utils.get_single_instance(input_dict[spec_keys.MODEL_KEY])
    reason = failures.failure_of(model)
    if not reason:
      super().Do(input_dict, output_dict, exec_properties)
      return
    blessing = artifact_utils.get_single_instance(output_dict[spec_keys.BLESSING_KEY])
    evaluation = artifact_utils.get_single_instance(output_dict[spec_keys.EVALUATION_KEY])
    # A refusal that names this very model, so no consumer can mistake it for another's approval.
    blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY,
                                     constants.NOT_BLESSED_VALUE)
    blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY,
                                        model.uri)
    blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
    blessing.set_string_custom_property(spec_keys.PROP_REASON,
                                        f'not evaluated: the variant failed: {reason}')
    for artifact in (blessing, evaluation):
      failures.mark_failed(artifact, reason)
    io_utils.write_string_file(os.path.join(blessing.uri, constants.NOT_BLESSED_FILE_NAME), '')
    logging.warning('Evaluator: %s is a failed variant, refused without evaluation: %s',
                    model.uri, reason)


class Evaluator(evaluator_component.Evaluator):
  """tfx.components.Evaluator, same arguments and outputs, refusing failed variants unevaluated."""

  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
