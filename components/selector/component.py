"""VariantSelector component: picks the one variant that goes on to the push."""
import json
import re
from typing import Dict, Tuple

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components import artifact_types
from components import spec_keys
from components.errors import ConfigError
from components.selector import executor
from components.selector import selection as selection_lib

_VARIANT_NAME = re.compile(r'^[a-z][a-z0-9_]{0,39}$')


class VariantSelectorSpec(types.ComponentSpec):
  """Parameters and outputs of VariantSelector.

  The inputs depend on the variants (`model_<variant>` and `benchmark_<variant>`), so each
  VariantSelector builds a subclass with them: Kubeflow's V2 compiler accepts only one plain
  Channel per input key, which rules out a single union channel of all variants.
  """
  PARAMETERS = {
      spec_keys.VARIANTS_KEY: ExecutionParameter(type=str),  # JSON list
      spec_keys.PREFER_KEY: ExecutionParameter(type=str),
  }
  INPUTS = {}
  OUTPUTS = {
      spec_keys.SELECTED_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      spec_keys.SELECTED_BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
      spec_keys.SELECTION_KEY: ChannelParameter(type=artifact_types.VariantSelection),
  }


def _spec_class(variants) -> type:
  inputs = {}
  for variant in variants:
    inputs[executor.model_key(variant)] = ChannelParameter(type=standard_artifacts.Model)
    inputs[executor.benchmark_key(variant)] = ChannelParameter(
        type=artifact_types.DeviceBenchmark)
  return type('VariantSelectorSpec', (VariantSelectorSpec,), {'INPUTS': inputs})


class VariantSelector(base_component.BaseComponent):
  """Chooses which variant ships, from every variant's TFMA verdict and device benchmark.

  Give it, per variant, the TFLite model and the DeviceBenchmarker output that measured it (with
  the Evaluator's blessing and evaluation wired into that DeviceBenchmarker). It computes the
  Pareto front (accuracy up, p50 latency and gzip size down), picks the best variant by `prefer`
  among those both blessed and within budgets, and records why each other variant lost.

  Outputs: `model`, a copy of the winner (with its properties and a benchmark summary) and empty
  when nothing qualifies; `blessing`, a ModelBlessing of that output model (blessed only when a
  winner exists), so TFLitePusher / OTAPusher take `model` and `blessing` unchanged; `selection`,
  selection.json, index.html and PNG plots.
  """

  SPEC_CLASS = VariantSelectorSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self,
               candidates: Dict[str, Tuple[types.BaseChannel, types.BaseChannel]],
               prefer: str = selection_lib.PREFER_SIZE):
    """Builds the component; bad values raise ConfigError here, when the pipeline is built.

    Args:
      candidates: {variant name: (TFLite model channel, DeviceBenchmarker benchmark channel)};
        names are lowercase letters, digits and `_`.
      prefer: among eligible variants, `size` (gzip payload), `latency` (p50) or `accuracy`.
    """
    selection_lib.validate_prefer(prefer)
    if not isinstance(candidates, dict) or not candidates:
      raise ConfigError('candidates must be a non-empty dict {variant: (model, benchmark)}.')
    for name, pair in candidates.items():
      if not isinstance(name, str) or not _VARIANT_NAME.match(name):
        raise ConfigError(f'variant name {name!r} is not accepted: use lowercase letters, digits '
                         'and _ (starting with a letter, at most 40).')
      if not isinstance(pair, tuple) or len(pair) != 2:
        raise ConfigError(f'candidates[{name!r}] must be a (model, benchmark) pair of channels.')
    spec_class = _spec_class(candidates)
    channels = {}
    for name, (model, benchmark) in candidates.items():
      channels[executor.model_key(name)] = model
      channels[executor.benchmark_key(name)] = benchmark
    spec = spec_class(
        variants=json.dumps(list(candidates)),
        prefer=prefer,
        model=types.Channel(type=standard_artifacts.Model),
        blessing=types.Channel(type=standard_artifacts.ModelBlessing),
        selection=types.Channel(type=artifact_types.VariantSelection),
        **channels)
    super().__init__(spec=spec)
