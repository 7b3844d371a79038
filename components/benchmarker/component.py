"""DeviceBenchmarker component: latency, memory and size of TFLite models against budgets."""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components import artifact_types
from components import spec_keys
from components.benchmarker import budgets as budgets_lib
from components.benchmarker import executor
from components.benchmarker import targets
from components.common import validation


class DeviceBenchmarkerSpec(types.ComponentSpec):
  """Inputs, outputs and parameters of DeviceBenchmarker."""
  PARAMETERS = {
      spec_keys.TARGET_KEY: ExecutionParameter(type=str),
      spec_keys.BENCHMARK_SETTINGS_KEY: ExecutionParameter(type=str),  # JSON
      spec_keys.BUDGETS_KEY: ExecutionParameter(type=str),  # JSON
      spec_keys.VARIANT_KEY: ExecutionParameter(type=str),
  }
  INPUTS = {
      spec_keys.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      spec_keys.MODEL_BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing,
                                                optional=True),
      spec_keys.EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation,
                                            optional=True),
  }
  OUTPUTS = {
      spec_keys.BENCHMARK_KEY: ChannelParameter(type=artifact_types.DeviceBenchmark),
  }


class DeviceBenchmarker(base_component.BaseComponent):
  """Measures TFLite models with the LiteRT interpreter and checks them against budgets.

  Every model x thread count runs in its own process (XNNPACK on, as on devices): init time, first
  inference, warm-up, then timed runs until both a minimum count and a minimum duration are
  reached (mean, std, coefficient of variation, p50/p90/p99), peak memory above the bare runtime,
  and the file and gzip sizes. The host's CPU model and flags and the runtime version are recorded
  beside the numbers.

  Output `benchmark`: benchmark.json and index.html; custom property `tfx_edge_within_budgets`
  is 1 when every model is within the budgets, and `tfx_edge_budget_reason` says which budget
  failed. When the
  model's Evaluator `model_blessing` and `evaluation` are given, the accuracy verdict is recorded
  too, so one artifact holds all that VariantSelector needs about a variant.
  """

  SPEC_CLASS = DeviceBenchmarkerSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self,
               model: types.BaseChannel,
               model_blessing: Optional[types.BaseChannel] = None,
               evaluation: Optional[types.BaseChannel] = None,
               target: str = targets.HOST,
               settings: budgets_lib.MeasureSettings = budgets_lib.MeasureSettings(),
               budgets: budgets_lib.Budgets = budgets_lib.Budgets(),
               variant: str = ''):
    """Builds the component; bad values raise ConfigError here, when the pipeline is built.

    Args:
      model: TFLite Model artifacts (PTQConverter `tflite_model`); each is measured.
      model_blessing: the Evaluator's blessing of that model (optional).
      evaluation: the Evaluator's evaluation of that model, for the accuracy (optional).
      target: where to measure; see components/benchmarker/targets.py (`host`).
      settings: thread counts, warm-up, minimum runs and duration.
      budgets: limits on p90 latency, size, gzip size and peak memory.
      variant: a label for reports (for example `ptq` or `pcqat`).
    """
    targets.validate(target)
    validation.instance_of('settings', settings, budgets_lib.MeasureSettings)
    validation.instance_of('budgets', budgets, budgets_lib.Budgets)
    spec = DeviceBenchmarkerSpec(
        model=model,
        model_blessing=model_blessing,
        evaluation=evaluation,
        target=target,
        settings=settings.to_json(),
        budgets=budgets.to_json(),
        variant=variant,
        benchmark=types.Channel(type=artifact_types.DeviceBenchmark))
    super().__init__(spec=spec)
