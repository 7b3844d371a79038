"""OTAPusher executor: the TFLitePusher's gating, publishing into the TUF repository."""
from typing import Any, Dict

from components import keys
from components.ota import repository
from components.pusher import executor as pusher_executor
from components.pusher import publisher


class Executor(pusher_executor.Executor):
  """Publishes a blessed model as a signed TUF target (with delta patches)."""

  NAME = 'OTAPusher'

  def publish(self, name: str, tflite_model: bytes, metadata: Dict[str, Any],
              exec_properties: Dict[str, Any]) -> publisher.PublishResult:
    from components.ptq_converter import conversion  # pylint: disable=g-import-not-at-top
    repo = repository.OTARepository(
        exec_properties[keys.OTA_REPOSITORY_KEY], exec_properties[keys.OTA_KEYS_DIR_KEY],
        repository.DeltaPolicy(exec_properties[keys.OTA_DELTA_LAST_K_KEY],
                               exec_properties[keys.OTA_DELTA_MAX_RATIO_KEY]))
    info = dict(metadata)
    info['tensors'] = {k: [t.__dict__ for t in v]
                       for k, v in conversion.io_details(tflite_model).items()}
    info['min_runtime_version'] = exec_properties[keys.OTA_MIN_RUNTIME_KEY]
    before = {r.version for r in repo.releases(name)}
    release = repo.publish(name, tflite_model, exec_properties[keys.OTA_CHANNEL_KEY], info)
    return publisher.PublishResult(release.version, release.path,
                                   created=release.version not in before)
