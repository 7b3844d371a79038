"""The device client (tfx_edge_device, in device/) with tfx-edge's exception classes.

The client itself lives in its own distribution, `device/` (package `tfx_edge_device`, which
installs on Python 3.9-3.13 without TFX or TensorFlow); this project installs it too. Its
ConfigError and NotPublishedError become the classes of the same names in components/errors.py;
a failed health check stays tfx_edge_device's HealthCheckError (the CLI's exit status 4).
"""
import functools

from tfx_edge_device import client as device_client
from tfx_edge_device import errors as device_errors
from tfx_edge_device import health

from components.common import releases
from components.errors import ConfigError
from components.errors import NotPublishedError

DEVICE_ID_FILE = device_client.DEVICE_ID_FILE
FetchResult = device_client.FetchResult
HealthCheckError = device_errors.HealthCheckError
RollbackError = device_errors.RollbackError
HEALTH_CHECK_MODES = health.MODES
# The selection rule of the shared layer, which the regression gate uses too (the device
# distribution's copy must agree: tests/ota/test_device_dist.py).
select_release = releases.select_release
in_rollout = releases.in_rollout
rollout_bucket = releases.rollout_bucket

_TRANSLATED = ((device_errors.ConfigError, ConfigError),
               (device_errors.NotPublishedError, NotPublishedError))


def _with_project_errors(function):
  @functools.wraps(function)
  def wrapper(*args, **kwargs):
    try:
      return function(*args, **kwargs)
    except (device_errors.ConfigError, device_errors.NotPublishedError) as e:
      ours = next(theirs for mine, theirs in _TRANSLATED if isinstance(e, mine))
      raise ours(str(e)) from None
  return wrapper


fetch = _with_project_errors(device_client.fetch)
rollback = _with_project_errors(device_client.rollback)
device_id_of = _with_project_errors(device_client.device_id_of)
validate_device_id = _with_project_errors(device_client.validate_device_id)
