"""The one definition of the optimizer components: their spec and their constructor.

Pruner, Clusterer and QATTrainer differ only in their config class, the name of the argument
that takes it, and their executor; everything else is here.
"""
from typing import Optional, Type

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components import spec_keys
from components.common import validation
from components.common.finetune.config import FineTuneConfig
from components.common.finetune.config import OptimizationConfig
from components.common.finetune.config import fine_tuning_or_default
from components.common.user_code import validate_input_fn_source


class OptimizerSpec(types.ComponentSpec):
  """Inputs, outputs and parameters of every optimizer component."""
  PARAMETERS = {
      spec_keys.INPUT_FN_KEY: ExecutionParameter(type=str, optional=True),
      spec_keys.MODULE_FILE_KEY: ExecutionParameter(type=str, optional=True),
      spec_keys.FINE_TUNING_KEY: ExecutionParameter(type=str),  # JSON of FineTuneConfig.
      spec_keys.OPTIMIZATION_KEY: ExecutionParameter(type=str),  # JSON of the CONFIG_CLASS.
      # 1: a failure of the optimization is recorded on the output (components.common.failures).
      spec_keys.RECORD_FAILURE_KEY: ExecutionParameter(type=int, optional=True),
  }
  INPUTS = {
      spec_keys.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      spec_keys.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
  }
  OUTPUTS = {
      spec_keys.OPTIMIZED_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      spec_keys.MODEL_RUN_KEY: ChannelParameter(type=standard_artifacts.ModelRun),
  }


class OptimizerComponent(base_component.BaseComponent):
  """Base of Pruner, Clusterer and QATTrainer; subclasses set CONFIG_CLASS and EXECUTOR_SPEC.

  A subclass's constructor names its config argument (`pruning=`, `clustering=`, `qat=`) and
  passes everything on to `__init__` here, which validates when the pipeline is built.

  With `record_failure=True` (what create_pipeline sets when it builds several variants) a
  failure of the optimization does not stop the run: the output is marked as a failed variant
  with the reason (`tfx_edge_failed`, `tfx_edge_failure_reason`), and a failed input is passed on
  without work. See components.common.failures.
  """

  SPEC_CLASS = OptimizerSpec
  CONFIG_CLASS: Type[OptimizationConfig] = OptimizationConfig
  CONFIG_ARGUMENT = ''  # The constructor argument that takes the CONFIG_CLASS, for messages.

  def __init__(self, model: types.BaseChannel, examples: types.BaseChannel,
               input_fn: Optional[str], module_file: Optional[str],
               config: Optional[OptimizationConfig], fine_tuning: Optional[FineTuneConfig],
               record_failure: bool = False):
    validate_input_fn_source(input_fn, module_file)
    validation.boolean('record_failure', record_failure)
    fine_tuning = fine_tuning_or_default(fine_tuning)
    config = self.CONFIG_CLASS() if config is None else validation.instance_of(
        self.CONFIG_ARGUMENT, config, self.CONFIG_CLASS)
    # Checked against the epochs and learning rate the executor will use (its own for unset ones).
    config.check_fits(self.EXECUTOR_SPEC.executor_class.with_defaults(fine_tuning))
    super().__init__(spec=OptimizerSpec(
        model=model,
        examples=examples,
        input_fn=input_fn,
        module_file=module_file,
        fine_tuning=fine_tuning.to_json(),
        optimization=config.to_json(),
        record_failure=int(record_failure),
        optimized_model=types.Channel(type=standard_artifacts.Model),
        model_run=types.Channel(type=standard_artifacts.ModelRun)))
