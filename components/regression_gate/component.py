"""RegressionGate component: never ship a model worse than the one devices run now."""
from typing import Any, Mapping, Optional, Sequence, Union

from google.protobuf import json_format
import tensorflow_model_analysis as tfma
from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components import artifact_types
from components import spec_keys
from components.common import device_extractors
from components.common import releases
from components.common import tasks
from components.common import validation
from components.regression_gate import executor
from components.regression_gate import regression

class RegressionGateSpec(types.ComponentSpec):
  """Inputs, outputs and parameters of RegressionGate."""
  PARAMETERS = {
      spec_keys.OTA_REPOSITORY_KEY: ExecutionParameter(type=str),
      spec_keys.OTA_TRUSTED_ROOT_KEY: ExecutionParameter(type=str, optional=True),
      spec_keys.MODEL_NAME_KEY: ExecutionParameter(type=str),
      spec_keys.OTA_CHANNEL_KEY: ExecutionParameter(type=str),
      spec_keys.EVAL_CONFIG_KEY: ExecutionParameter(type=str),  # JSON of tfma.EvalConfig
      spec_keys.MODULE_PATH_KEY: ExecutionParameter(type=str),
      spec_keys.EVAL_SPLIT_KEY: ExecutionParameter(type=str),
      spec_keys.MAX_REGRESSION_KEY: ExecutionParameter(type=float),
      spec_keys.MAX_SLICE_REGRESSION_KEY: ExecutionParameter(type=float),
      spec_keys.SLICE_NOISE_Z_KEY: ExecutionParameter(type=float, optional=True),
  }
  INPUTS = {
      spec_keys.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      spec_keys.MODEL_BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
      spec_keys.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      spec_keys.SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema),
      # VariantSelector's output: the selection report is written again with the released row.
      spec_keys.SELECTION_KEY: ChannelParameter(type=artifact_types.VariantSelection,
                                                optional=True),
  }
  OUTPUTS = {
      spec_keys.RELEASED_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      spec_keys.EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
      spec_keys.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
  }


class RegressionGate(base_component.BaseComponent):
  """Blesses a candidate TFLite model only if it is no worse than the released one.

  Fetches the release of `model_name` devices run now on `channel` from the OTA repository
  through TUF, verified as a device verifies it (signatures, expiry, hashes), and evaluates the
  candidate against it with TFMA on the gate's eval examples: overall and per slice (one slice
  per label class by default, plus `slicing_features` and `slicing_specs`). The candidate must
  also carry the float32 gate's blessing (`model_blessing`); one that lacks it is not evaluated.

  Outputs: `released_model` (the released TFLite model as a Model artifact, custom property
  `tfx_edge_released_version`, 'none' before the first release), `evaluation` (TFMA's output)
  and `blessing`, with custom properties `blessed`, `tfx_edge_regression_status` (first_release,
  passed, regressed, signature_mismatch, not_evaluated or not_measured) and `tfx_edge_reason`,
  which names the metric, the slice and both values when the candidate regressed. The first
  release of a name is blessed with the reason recorded; a released model with other inputs or
  outputs fails the gate with both signatures named.
  """

  SPEC_CLASS = RegressionGateSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self,
               model: types.BaseChannel,
               model_blessing: types.BaseChannel,
               examples: types.BaseChannel,
               schema: types.BaseChannel,
               repository_dir: str,
               model_name: str,
               label_key: str,
               task: str = tasks.MULTICLASS,
               channel: str = releases.DEFAULT_CHANNEL,
               trusted_root: Optional[str] = None,
               max_regression: float = regression.DEFAULT_MAX_REGRESSION,
               max_slice_regression: float = regression.DEFAULT_MAX_SLICE_REGRESSION,
               slicing_features: Sequence[str] = (),
               eval_split: str = 'eval',
               slice_noise_z: float = regression.SLICE_Z,
               slicing_specs: Sequence[Union[str, Mapping[str, Any], tfma.SlicingSpec]] = (),
               selection: Optional[types.BaseChannel] = None):
    """Builds the component; bad values raise ConfigError here, when the pipeline is built.

    Args:
      model: the candidate TFLite Model (for example VariantSelector's `model`).
      model_blessing: the candidate's float32-gate blessing (VariantSelector's `blessing`).
      examples: the gate's eval examples (GateExamplesGen's `gate_examples`).
      schema: their schema (GateExamplesGen's `schema`).
      repository_dir: the OTA repository the pusher publishes to (a path, an fsspec URI) or
        the http(s) URL it is served at.
      model_name: the name the model is published under.
      label_key: the label feature.
      task: one of components.common.tasks.TASKS; decides the metric.
      channel: the release channel the candidate would replace.
      trusted_root: a root.json devices trust, obtained out of band; default: the
        repository's own metadata/1.root.json (its first root, trusted on first use).
      max_regression: largest overall regression accepted (accuracy points as a fraction, or a
        relative error increase for `regression`); default 0.0: none.
      max_slice_regression: the same for each slice; default 0.02.
      slicing_features: features whose values are slices, besides the label classes.
      slicing_specs: more slices, each a TFMA SlicingSpec or its JSON form (a dict): feature
        crosses ({"feature_keys": ["country", "device"]}), one value ({"feature_values":
        {"country": "fr"}}) or a query ({"slice_keys_sql": ...}); a plain string is a feature
        name. The features must be in the examples (checked against the schema before TFMA
        runs), and a one-value slice without examples fails the gate: it cannot be measured.
      selection: VariantSelector's `selection`; when given, the selection report is written
        again with the released model's row beside the candidates
        (`<evaluation>/selection/index.html`).
      eval_split: the split of `examples` to evaluate.
      slice_noise_z: a slice whose drop exceeds max_slice_regression still passes when the
        excess is within this many standard errors of sampling noise (default 1.645, one-sided
        95%); 0 takes max_slice_regression literally.
    """
    validation.non_empty_str('repository_dir', repository_dir, 'the OTA repository')
    validation.model_name(model_name)
    releases.validate_channel(channel)
    validation.non_empty_str('eval_split', eval_split, 'a split of the examples')
    slice_noise_z = regression.validate_slice_noise_z(slice_noise_z)
    eval_config = regression.regression_config(label_key, task, max_regression,
                                               max_slice_regression, slicing_features,
                                               slicing_specs=slicing_specs)
    spec = RegressionGateSpec(
        model=model,
        model_blessing=model_blessing,
        examples=examples,
        schema=schema,
        selection=selection,
        repository=repository_dir,
        trusted_root=trusted_root,
        model_name=model_name,
        channel=channel,
        eval_config=json_format.MessageToJson(eval_config, sort_keys=True),
        # Inputs quantized as the device quantizes them, as in the float32 gate.
        module_path=device_extractors.MODULE_PATH,
        eval_split=eval_split,
        max_regression=float(max_regression),
        max_slice_regression=float(max_slice_regression),
        slice_noise_z=slice_noise_z,
        released_model=types.Channel(type=standard_artifacts.Model),
        evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
        blessing=types.Channel(type=standard_artifacts.ModelBlessing))
    super().__init__(spec=spec)
