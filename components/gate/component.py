"""GateExamplesGen component: the eval examples and schema the gate's Evaluator reads."""
import json
from typing import Mapping, Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components import spec_keys
from components.common import tasks
from components.common import validation
from components.gate import executor
from components.gate import schema as schema_lib


class GateExamplesGenSpec(types.ComponentSpec):
  """Inputs, outputs and parameters of GateExamplesGen."""
  PARAMETERS = {
      spec_keys.LABEL_KEY: ExecutionParameter(type=str),
      spec_keys.EVAL_SPLIT_KEY: ExecutionParameter(type=str),
      spec_keys.FILL_MISSING_KEY: ExecutionParameter(type=str),  # JSON
      spec_keys.TASK_KEY: ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      spec_keys.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      spec_keys.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
  }
  OUTPUTS = {
      spec_keys.GATE_EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      spec_keys.SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema),
  }


class GateExamplesGen(base_component.BaseComponent):
  """Makes sure the gate can feed a TFLite model every eval example, filled as training was.

  TFMA feeds a TFLite model's inputs by feature name, and feeds -1 or fails with a reshape error
  where an example lacks a value. This component reads the eval split with Beam, counts per
  feature how many examples lack it, fills the model inputs named in `fill_missing` (the values
  the module's input_fn fills them with), and writes those examples with a Schema that reads the
  inputs and the label dense. It refuses the data (DataError, with the counts and the way out)
  when a model input is absent, of the wrong kind or length, or missing without a fill value, or
  when a label is missing. Given the gate's `task`, it first refuses (ConfigError) a model whose
  output that task's metric cannot measure (tasks.misfit: the argmax of one sigmoid unit, say),
  before any variant is evaluated; the benchmarker and the pusher check each variant again.

  Outputs: `gate_examples`, the eval split filled (give it to the Evaluator as `examples`), and
  `schema` (the Evaluator's `schema`), with custom properties `tfx_edge_eval_examples`,
  `tfx_edge_missing_values` (JSON {feature: examples that lacked it}) and
  `tfx_edge_filled_features` (JSON {feature: value filled in}).
  """

  SPEC_CLASS = GateExamplesGenSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self,
               examples: types.BaseChannel,
               model: types.BaseChannel,
               label_key: str,
               eval_split: str = 'eval',
               fill_missing: Optional[Mapping[str, float]] = None,
               task: Optional[str] = None):
    """Builds the component; bad values raise ConfigError here, when the pipeline is built.

    Args:
      examples: the Examples to evaluate (raw, or a Transform's transformed_examples when the
        model's inputs are transformed features).
      model: a TFLite Model artifact of the gated model (the float32 baseline has the same inputs
        as every variant).
      label_key: the label feature.
      eval_split: the split to evaluate; the output holds it under the same name.
      fill_missing: {feature: value} filled in where an example lacks a model input, `*` for
        every input not named: the values the module's input_fn fills them with in training.
        Default: none, so missing values are refused.
      task: the gate's task (components/common/tasks.py TASKS); the model's output is checked
        against it before the data is read. Default: not checked here.
    """
    validation.non_empty_str('label_key', label_key, 'the label feature')
    validation.non_empty_str('eval_split', eval_split, 'a split of the examples')
    if task is not None:
      tasks.validate_task(task)
    spec = GateExamplesGenSpec(
        examples=examples,
        model=model,
        label_key=label_key,
        eval_split=eval_split,
        fill_missing=json.dumps(schema_lib.validate_fill_missing(fill_missing), sort_keys=True),
        task=task,
        gate_examples=types.Channel(type=standard_artifacts.Examples),
        schema=types.Channel(type=standard_artifacts.Schema))
    super().__init__(spec=spec)
