"""OTAPusher component: publishes a blessed int8 model into a signed TUF repository."""
import datetime
import json
import os
from typing import Mapping, Optional, Sequence, Union

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components import spec_keys
from components.common import modes
from components.common import validation
from components.errors import ConfigError
from components.ota import executor
from components.ota import repository
from components.ota import storage


# Recorded in every target for devices to check before installing: the oldest LiteRT runtime
# the pipeline's int8 models are tested with.
DEFAULT_MIN_RUNTIME_VERSION = 'ai-edge-litert>=1.2'


class OTAPusherSpec(types.ComponentSpec):
  """Inputs, outputs and parameters of OTAPusher."""
  PARAMETERS = {
      spec_keys.OTA_REPOSITORY_KEY: ExecutionParameter(type=str),
      spec_keys.OTA_KEYS_DIR_KEY: ExecutionParameter(type=str),
      spec_keys.MODEL_NAME_KEY: ExecutionParameter(type=str),
      spec_keys.OTA_CHANNEL_KEY: ExecutionParameter(type=str),
      spec_keys.ALLOWED_MODES_KEY: ExecutionParameter(type=str),  # JSON list
      spec_keys.OTA_DELTA_LAST_K_KEY: ExecutionParameter(type=int),
      spec_keys.OTA_DELTA_MAX_RATIO_KEY: ExecutionParameter(type=float),
      spec_keys.OTA_MIN_RUNTIME_KEY: ExecutionParameter(type=str),
      spec_keys.OTA_ROLLOUT_PERCENT_KEY: ExecutionParameter(type=int, optional=True),
      spec_keys.OTA_REQUIRE_APPROVAL_KEY: ExecutionParameter(type=int, optional=True),  # 1/0
      # JSON {role: duration}: the roles whose expiry differs from repository.EXPIRY.
      spec_keys.OTA_METADATA_EXPIRY_KEY: ExecutionParameter(type=str, optional=True),
      # Versions per name and channel the targets metadata lists; 0 lists every version.
      spec_keys.OTA_KEEP_VERSIONS_KEY: ExecutionParameter(type=int, optional=True),
      # The split of `examples` whose first example is the golden input.
      spec_keys.OTA_GOLDEN_SPLIT_KEY: ExecutionParameter(type=str, optional=True),
  }
  # The same channels as TFLitePusher's, whose gating the executor inherits.
  INPUTS = {
      spec_keys.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      spec_keys.MODEL_BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
      spec_keys.EVALUATION_KEY: ChannelParameter(
          type=standard_artifacts.ModelEvaluation, optional=True),
      spec_keys.REGRESSION_BLESSING_KEY: ChannelParameter(
          type=standard_artifacts.ModelBlessing, optional=True),
      # The examples the gate evaluated: the golden input is taken from them.
      spec_keys.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples, optional=True),
  }
  OUTPUTS = {
      spec_keys.PUSHED_MODEL_KEY: ChannelParameter(type=standard_artifacts.PushedModel),
  }


class OTAPusher(base_component.BaseComponent):
  """Publishes a PTQConverter model into a TUF repository, only when it may ship.

  The gate is TFLitePusher's: the Evaluator's blessing for this very model, and a mode in
  `allowed_modes` (int8). The target's custom info holds the model name, its monotonic version,
  channel, quantization mode, input/output tensor specs, the TFMA accuracy, the minimum runtime
  version, the bsdiff4 patches from recent versions, and its golden record (an input and the
  output LiteRT computes on it, a signed target of its own, which devices run before switching:
  docs/ota.md, "Health check and rollback"). With `examples=` wired (the pipeline wires
  GateExamplesGen's `gate_examples`) the golden input is the first example of `golden_split`,
  fed as the gate feeds it; without, a deterministic input. The custom info's `golden_input`
  and the artifact's `tfx_edge_golden_input` say which. The `pushed_model` artifact records
  `pushed`, `pushed_version`, `pushed_destination` (the TUF target path),
  `tfx_edge_release_state` (`live`, or `pending` when approval is required) and
  `tfx_edge_rollout_percent`.

  With `regression_blessing=` wired, the regression gate (against the released model) must
  bless the model too. With `require_approval=True` the model is published pending: no device
  installs it until `tfx-edge ota approve`. `rollout_percent` starts a staged rollout.
  `metadata_expiry` sets how long the metadata a push signs stays valid, per role.

  Signing keys are read from `keys_dir` (a directory or a mounted Kubernetes Secret) when the
  push runs; only the path is a parameter, so keys never reach ML Metadata or logs.
  """

  SPEC_CLASS = OTAPusherSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self,
               model: types.BaseChannel,
               model_blessing: types.BaseChannel,
               repository_dir: str,
               keys_dir: str,
               model_name: str,
               channel: str = repository.DEFAULT_CHANNEL,
               evaluation: Optional[types.BaseChannel] = None,
               allowed_modes: Sequence[str] = modes.DEFAULT_ALLOWED_MODES,
               delta_policy: repository.DeltaPolicy = repository.DeltaPolicy(),
               min_runtime_version: str = DEFAULT_MIN_RUNTIME_VERSION,
               regression_blessing: Optional[types.BaseChannel] = None,
               require_approval: bool = False,
               rollout_percent: int = repository.FULL_ROLLOUT,
               metadata_expiry: Optional[Mapping[str, Union[str, datetime.timedelta]]] = None,
               keep_versions: Optional[int] = repository.DEFAULT_KEEP_VERSIONS,
               examples: Optional[types.BaseChannel] = None,
               golden_split: Optional[str] = None):
    """Builds the component; bad values raise ConfigError here, when the pipeline is built.

    Args:
      model: a PTQConverter `tflite_model` channel.
      model_blessing: the Evaluator's `blessing` for that model.
      repository_dir: the TUF repository (created with `tfx-edge ota init`): a local or mounted
        path, or a gs://, s3:// or file:// URI (see components/ota/storage.py).
      keys_dir: directory holding <role>.pem signing keys (for example a mounted Secret).
      model_name: the model's name in the repository (letters, digits, `_-.`).
      channel: release channel, for example `stable` or `canary`.
      evaluation: the Evaluator's `evaluation`, for the metrics and to explain a refusal.
      allowed_modes: PTQ modes that may be published (default: int8 only).
      delta_policy: which bsdiff4 patches to publish.
      min_runtime_version: recorded for devices to check before installing.
      regression_blessing: optional ModelBlessing of the regression gate (the model against
        the released one): the model is published only when its `blessed` is 1.
      require_approval: publish the model pending, for `tfx-edge ota approve` to make live.
      rollout_percent: the percentage (1-100) of the channel's devices that install it.
      metadata_expiry: {role: duration} for the roles (targets, snapshot, timestamp; root is
        not signed by a push) whose expiry differs from the repository's config.json (which
        `tfx-edge ota init` and `tfx-edge ota config` write; else repository.EXPIRY), as a
        duration such as "30d" or a timedelta. Store the periods with `tfx-edge ota config`
        instead, and every push and refresh (the k8s CronJob's too) signs with them.
      keep_versions: how many versions per name and channel the targets metadata a push signs
        lists (plus those a rollout, a pending approval or a halt still needs); None lists every
        version. Older target files stay until `tfx-edge ota gc`.
      examples: Examples holding every model input by its feature name (GateExamplesGen's
        `gate_examples`): the golden input the device's health check runs is taken from them.
      golden_split: the split of `examples` whose first example is the golden input (default
        `eval`); only with `examples`.
    """
    repository.validate_role_name(model_name)  # Its delegated role must not clash.
    repository.validate_channel(channel)
    keep_versions = repository.validate_keep_versions(keep_versions)
    modes.validate_allowed_modes(allowed_modes)
    storage.validate_location(repository_dir)
    if not isinstance(keys_dir, str) or not keys_dir or '://' in keys_dir:
      raise ConfigError(f'keys_dir={keys_dir!r} must be a local or mounted directory path (for '
                       'example a mounted Kubernetes Secret): keys are never read from a URI.')
    if os.path.abspath(keys_dir).startswith(os.path.abspath(repository_dir) + os.sep):
      raise ConfigError(f'keys_dir={keys_dir!r} lies inside repository_dir, which is served to '
                       'devices: keep signing keys out of it.')
    validation.instance_of('delta_policy', delta_policy, repository.DeltaPolicy)
    rollout_percent = repository.validate_rollout_percent(rollout_percent)
    expiry = repository.validate_expiry(metadata_expiry, 'metadata_expiry')
    if 'root' in (metadata_expiry or {}):
      raise ConfigError('metadata_expiry names root, which a push does not sign; renew root with '
                        '`tfx-edge ota renew-root --root-expiry DURATION` and the offline root '
                        'key.')
    overrides = {role: repository.format_duration(expiry[role])
                 for role in (metadata_expiry or {})}
    if golden_split is not None and examples is None:
      raise ConfigError(f'golden_split={golden_split!r} is given without examples; wire the '
                        'examples the gate evaluated (examples=gate_examples.outputs['
                        '"gate_examples"]) or leave golden_split out.')
    golden_split = 'eval' if golden_split is None else golden_split
    validation.non_empty_str('golden_split', golden_split, 'a split of the examples')
    if not isinstance(require_approval, bool):
      raise ConfigError(f'require_approval={require_approval!r} is not accepted; it must be True '
                        'or False.')
    spec = OTAPusherSpec(
        model=model,
        model_blessing=model_blessing,
        evaluation=evaluation,
        regression_blessing=regression_blessing,
        examples=examples,
        golden_split=golden_split if examples is not None else None,
        repository=repository_dir,
        keys_dir=keys_dir,
        model_name=model_name,
        channel=channel,
        allowed_modes=json.dumps(list(allowed_modes)),
        delta_last_k=delta_policy.last_k,
        delta_max_ratio=float(delta_policy.max_ratio),
        min_runtime_version=min_runtime_version,
        rollout_percent=rollout_percent,
        require_approval=int(require_approval),
        metadata_expiry=json.dumps(overrides, sort_keys=True),
        keep_versions=keep_versions or 0,
        pushed_model=types.Channel(type=standard_artifacts.PushedModel))
    super().__init__(spec=spec)
