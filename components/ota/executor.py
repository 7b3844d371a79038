"""OTAPusher executor: the TFLitePusher's gating, publishing into the TUF repository."""
from typing import Any, Dict

from components import spec_keys
from components.common import tflite
from components.ota import repository
from components.pusher import executor as pusher_executor


class Executor(pusher_executor.Executor):
  """Publishes a blessed model as a signed TUF target (with delta patches)."""

  NAME = 'OTAPusher'

  def publish(self, name: str, tflite_model: bytes, metadata: Dict[str, Any],
              exec_properties: Dict[str, Any]) -> pusher_executor.PublishResult:
    repo = repository.OTARepository(
        exec_properties[spec_keys.OTA_REPOSITORY_KEY], exec_properties[spec_keys.OTA_KEYS_DIR_KEY],
        repository.DeltaPolicy(exec_properties[spec_keys.OTA_DELTA_LAST_K_KEY],
                               exec_properties[spec_keys.OTA_DELTA_MAX_RATIO_KEY]))
    info = dict(metadata, tensors=tflite.io_specs(tflite_model),
                min_runtime_version=exec_properties[spec_keys.OTA_MIN_RUNTIME_KEY])
    before = {r.version for r in repo.releases(name)}
    release = repo.publish(name, tflite_model, exec_properties[spec_keys.OTA_CHANNEL_KEY], info)
    return pusher_executor.PublishResult(release.version, release.path,
                                         created=release.version not in before)
