"""TFLitePusher component: publishes a blessed TFLite model of an allowed mode."""
import json
from typing import Optional, Sequence

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components import keys
from components.ptq_converter import conversion
from components.pusher import executor
from components.pusher import publisher


def validate_allowed_modes(allowed_modes: Sequence[str]) -> None:
  """Raises ValueError unless allowed_modes is a non-empty list of PTQ modes."""
  if isinstance(allowed_modes, str) or not allowed_modes:
    raise ValueError(f'allowed_modes={allowed_modes!r} must be a non-empty list of modes from '
                     f'{", ".join(conversion.MODES)}.')
  for mode in allowed_modes:
    if mode not in conversion.MODES:
      raise ValueError(f'allowed_modes contains {mode!r}, which is not a PTQ mode; accepted: '
                       f'{", ".join(conversion.MODES)}.')


class TFLitePusherSpec(types.ComponentSpec):
  """Inputs, outputs and parameters of TFLitePusher."""
  PARAMETERS = {
      keys.PUSH_DESTINATION_KEY: ExecutionParameter(type=str),
      keys.MODEL_NAME_KEY: ExecutionParameter(type=str),
      keys.ALLOWED_MODES_KEY: ExecutionParameter(type=str),  # JSON list
  }
  INPUTS = {
      keys.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      keys.MODEL_BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
      keys.EVALUATION_KEY: ChannelParameter(
          type=standard_artifacts.ModelEvaluation, optional=True),
  }
  OUTPUTS = {
      keys.PUSHED_MODEL_KEY: ChannelParameter(type=standard_artifacts.PushedModel),
  }


class TFLitePusher(base_component.BaseComponent):
  """Publishes a PTQConverter model only when the Evaluator blessed it and its mode is allowed.

  The model lands in a versioned directory, `<push_destination>/<model_name>/<version>/` with
  `model.tflite` and `metadata.json`; versions only go up and appear atomically. When the model
  is not pushed, the log and the `pushed_model` artifact's `tfx_edge_push_reason` say why, with
  the failed thresholds when `evaluation=` is given.

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
               allowed_modes: Sequence[str] = (conversion.INT8,)):
    """Builds the component; bad values raise ValueError here, when the pipeline is built.

    Args:
      model: a PTQConverter `tflite_model` channel.
      model_blessing: the Evaluator's `blessing` for that model.
      push_destination: local directory that holds the published versions.
      model_name: name the model is published under (letters, digits, `_-.`; no paths).
      evaluation: the Evaluator's `evaluation`, used to explain a refusal.
      allowed_modes: PTQ modes that may be pushed (default: int8 only).
    """
    publisher.validate_model_name(model_name)
    if not push_destination or not isinstance(push_destination, str):
      raise ValueError(f'push_destination={push_destination!r} must be a directory path.')
    publisher.VersionedDirectoryPublisher(push_destination)  # Rejects remote URIs now.
    validate_allowed_modes(allowed_modes)
    spec = TFLitePusherSpec(
        model=model,
        model_blessing=model_blessing,
        evaluation=evaluation,
        push_destination=push_destination,
        model_name=model_name,
        allowed_modes=json.dumps(list(allowed_modes)),
        pushed_model=types.Channel(type=standard_artifacts.PushedModel))
    super().__init__(spec=spec)
