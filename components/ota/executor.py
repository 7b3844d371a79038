"""OTAPusher executor: the TFLitePusher's gating, publishing into the TUF repository."""
import json
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
from tfx import types
from tfx.types import artifact_utils
from tfx_edge_device import health

from components import spec_keys
from components.errors import PublishError
from components.common import examples_io
from components.common import tflite
from components.ota import golden
from components.ota import repository
from components.pusher import executor as pusher_executor


class Executor(pusher_executor.Executor):
  """Publishes a blessed model as a signed TUF target (with delta patches and a golden record)."""

  NAME = 'OTAPusher'
  _examples: List[types.Artifact] = []  # Do() sets the `examples` input of the run.

  def publish(self, name: str, tflite_model: bytes, metadata: Dict[str, Any],
              exec_properties: Dict[str, Any]) -> pusher_executor.PublishResult:
    repo_dir = exec_properties[spec_keys.OTA_REPOSITORY_KEY]
    # .get: pipelines compiled before expiry was a parameter sign with the default periods.
    expiry = json.loads(exec_properties.get(spec_keys.OTA_METADATA_EXPIRY_KEY) or '{}')
    repo = repository.OTARepository(
        repo_dir, exec_properties[spec_keys.OTA_KEYS_DIR_KEY],
        repository.DeltaPolicy(exec_properties[spec_keys.OTA_DELTA_LAST_K_KEY],
                               exec_properties[spec_keys.OTA_DELTA_MAX_RATIO_KEY]),
        repository.validate_expiry(expiry, 'metadata_expiry'),
        # .get: pipelines compiled before keep_versions existed keep the default retention.
        keep_versions=exec_properties.get(spec_keys.OTA_KEEP_VERSIONS_KEY,
                                          repository.DEFAULT_KEEP_VERSIONS) or None)
    info = dict(metadata, tensors=tflite.io_specs(tflite_model),
                min_runtime_version=exec_properties[spec_keys.OTA_MIN_RUNTIME_KEY])
    channel = exec_properties[spec_keys.OTA_CHANNEL_KEY]
    # What the device's health check runs before switching to the model: an input (the first
    # example of the gate's eval split when the examples are wired, else a deterministic one),
    # the output LiteRT computes on it here, and a tolerance (tfx_edge_device/health.py).
    inputs, golden_source = self._golden_inputs(tflite_model, exec_properties)
    try:
      golden_bytes = health.record_bytes(health.golden_record(tflite_model, inputs))
    except (ValueError, RuntimeError) as e:  # LiteRT's errors for a model it cannot run.
      raise PublishError(f'{self.NAME}: the golden record of {name!r} (the input and output the '
                         f'device health check runs) cannot be computed with LiteRT: {e}. '
                         'Nothing was published.') from e
    info['golden_input'] = golden_source
    before = {(r.version, r.channel) for r in repo.releases(name)}
    # .get: pipelines compiled before these parameters existed publish live, to every device.
    release = repo.publish(
        name, tflite_model, channel, info,
        rollout_percent=exec_properties.get(spec_keys.OTA_ROLLOUT_PERCENT_KEY) or
        repository.FULL_ROLLOUT,
        require_approval=bool(exec_properties.get(spec_keys.OTA_REQUIRE_APPROVAL_KEY)),
        by=self.NAME, golden=golden_bytes, gated_by=metadata.get('gated_by'))
    created = (release.version, release.channel) not in before
    reason = refusal = ''
    if release.state == repository.PENDING:
      reason = (f'{"pushed" if created else "already published"} as a pending release: no '
                'device installs it until `tfx-edge ota approve --repo '
                f'{repo_dir} --keys DIR --name {name} --version {release.version} --by WHO`')
    elif release.state != repository.LIVE:
      refusal = (f'this model is already the latest release on {channel}, version '
                 f'{release.version}, and it was {release.state}: it is not published again')
    return pusher_executor.PublishResult(
        release.version, release.path, created=created, reason=reason, refusal=refusal,
        properties={spec_keys.PROP_RELEASE_STATE: release.state,
                    spec_keys.PROP_ROLLOUT_PERCENT: release.rollout_percent,
                    spec_keys.PROP_GOLDEN_INPUT: json.dumps(golden_source, sort_keys=True)})

  def _golden_inputs(self, tflite_model: bytes, exec_properties: Dict[str, Any]
                     ) -> Tuple[Optional[List[Any]], Dict[str, Any]]:
    """The golden input (None: health's deterministic one) and the record of where it came from.

    Raises:
      DataError: the examples lack the split, the split is empty, or its first example cannot
        feed the model (before anything is published).
    """
    if not self._examples:
      return None, golden.DETERMINISTIC
    examples = artifact_utils.get_single_instance(self._examples)
    split = exec_properties.get(spec_keys.OTA_GOLDEN_SPLIT_KEY) or 'eval'
    pattern = examples_io.split_file_pattern(examples, split, spec_keys.OTA_GOLDEN_SPLIT_KEY)
    examples_io.check_split_not_empty(examples, split, spec_keys.OTA_GOLDEN_SPLIT_KEY)
    [record] = examples_io.read_records(pattern, limit=1)
    source = f'{self.NAME}: split {split!r} of Examples artifact {examples.uri}'
    inputs = golden.inputs_from_example(tflite_model, record, source)
    logging.info('%s: the golden input is the first example of %s.', self.NAME, source)
    return inputs, golden.source_record(examples.uri, split)

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    # publish() is called with what the pusher's gating passes; the golden input's examples
    # are this pusher's own input.
    self._examples = input_dict.get(spec_keys.EXAMPLES_KEY) or []
    super().Do(input_dict, output_dict, exec_properties)
