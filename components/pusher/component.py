"""TFLitePusher component: publishes a blessed TFLite model of an allowed mode."""
import json
from typing import Optional, Sequence

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components import spec_keys
from components.common import modes
from components.common import validation
from components.pusher import executor
from components.pusher import publisher


class TFLitePusherSpec(types.ComponentSpec):
  """Inputs, outputs and parameters of TFLitePusher."""
  PARAMETERS = {
      spec_keys.PUSH_DESTINATION_KEY: ExecutionParameter(type=str),
      spec_keys.MODEL_NAME_KEY: ExecutionParameter(type=str),
      spec_keys.ALLOWED_MODES_KEY: ExecutionParameter(type=str),  # JSON list
  }
  INPUTS = {
      spec_keys.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      spec_keys.MODEL_BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
      spec_keys.EVALUATION_KEY: ChannelParameter(
          type=standard_artifacts.ModelEvaluation, optional=True),
      # The regression gate's verdict against the released model; when wired, it must bless too.
      spec_keys.REGRESSION_BLESSING_KEY: ChannelParameter(
          type=standard_artifacts.ModelBlessing, optional=True),
  }
  OUTPUTS = {
      spec_keys.PUSHED_MODEL_KEY: ChannelParameter(type=standard_artifacts.PushedModel),
  }


class TFLitePusher(base_component.BaseComponent):
  """Publishes a PTQConverter model only when the Evaluator blessed it and its mode is allowed.

  The model lands in a versioned directory, `<push_destination>/<model_name>/<version>/` with
  `model.tflite` and `metadata.json`; versions only go up and appear atomically. When the model
  is not pushed, the log and the `pushed_model` artifact's `tfx_edge_push_reason` say why, with
  the failed thresholds when `evaluation=` is given. With `regression_blessing=` wired (the
  regression gate against the released model), that blessing must bless too, after the model's
  own gate; its `tfx_edge_reason` is the refusal's reason.

  Outputs:
    pushed_model: PushedModel with custom properties `pushed` (1/0), `pushed_version`,
      `pushed_destination` and `tfx_edge_push_reason`.
  """

  SPEC_CLASS = TFLitePusherSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self,
               model: types.BaseChannel,
               model_blessing: types.BaseChannel,
               push_destination: str,
               model_name: str,
               evaluation: Optional[types.BaseChannel] = None,
               allowed_modes: Sequence[str] = modes.DEFAULT_ALLOWED_MODES,
               regression_blessing: Optional[types.BaseChannel] = None):
    """Builds the component; bad values raise ConfigError here, when the pipeline is built.

    Args:
      model: a PTQConverter `tflite_model` channel.
      model_blessing: the Evaluator's `blessing` for that model.
      push_destination: local directory that holds the published versions.
      model_name: name the model is published under (letters, digits, `_-.`; no paths).
      evaluation: the Evaluator's `evaluation`, used to explain a refusal.
      allowed_modes: PTQ modes that may be pushed (default: int8 only).
      regression_blessing: optional ModelBlessing of the regression gate (the model against
        the released one): the model is pushed only when its `blessed` is 1.
    """
    validation.model_name(model_name)
    validation.non_empty_str('push_destination', push_destination, 'a directory')
    publisher.VersionedDirectoryPublisher(push_destination)  # Rejects remote URIs now.
    modes.validate_allowed_modes(allowed_modes)
    spec = TFLitePusherSpec(
        model=model,
        model_blessing=model_blessing,
        evaluation=evaluation,
        regression_blessing=regression_blessing,
        push_destination=push_destination,
        model_name=model_name,
        allowed_modes=json.dumps(list(allowed_modes)),
        pushed_model=types.Channel(type=standard_artifacts.PushedModel))
    super().__init__(spec=spec)
