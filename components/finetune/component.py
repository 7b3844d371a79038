"""The component skeleton every optimizer shares: channels, fine-tuning and input_fn checks."""
import json
from typing import Any, Dict, Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components import keys
from components.finetune import config as config_lib

PARAMETERS = {
    keys.INPUT_FN_KEY: ExecutionParameter(type=str, optional=True),
    keys.MODULE_FILE_KEY: ExecutionParameter(type=str, optional=True),
    keys.FINE_TUNING_KEY: ExecutionParameter(type=str),
    keys.OPTIMIZATION_KEY: ExecutionParameter(type=str),
}
INPUTS = {
    keys.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
    keys.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
}
OUTPUTS = {
    keys.OPTIMIZED_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
    keys.MODEL_RUN_KEY: ChannelParameter(type=standard_artifacts.ModelRun),
}


class OptimizerComponent(base_component.BaseComponent):
  """Base of Pruner, Clusterer and QATTrainer; subclasses set SPEC_CLASS and EXECUTOR_SPEC."""

  def __init__(self, model: types.BaseChannel, examples: types.BaseChannel,
               input_fn: Optional[str], module_file: Optional[str],
               fine_tuning: Optional[config_lib.FineTuneConfig], options: Dict[str, Any]):
    config_lib.validate_input_fn_source(input_fn, module_file)
    fine_tuning = config_lib.fine_tuning_or_default(fine_tuning)
    spec = self.SPEC_CLASS(
        model=model,
        examples=examples,
        input_fn=input_fn,
        module_file=module_file,
        fine_tuning=fine_tuning.to_json(),
        optimization=json.dumps(options, sort_keys=True),
        optimized_model=types.Channel(type=standard_artifacts.Model),
        model_run=types.Channel(type=standard_artifacts.ModelRun))
    super().__init__(spec=spec)
