"""The exceptions the device client raises; each message says what to change.

tfx-edge's own CLI (`tfx-edge ota fetch`) turns them into its classes of the same names
(components/errors.py).
"""


class DeviceError(Exception):
  """Base of every error the device client raises on purpose."""


class ConfigError(DeviceError, ValueError):
  """An argument is not accepted, or the device's own files cannot be read."""


class NotPublishedError(DeviceError, LookupError):
  """The repository has no release of the model for this device on the channel asked for."""


class HealthCheckError(DeviceError, RuntimeError):
  """The new model failed its health check on this device; the previous model stays.

  Attributes:
    status: the status the client wrote to the status file (a dict).
  """

  def __init__(self, message: str, status: dict):
    super().__init__(message)
    self.status = status


class RollbackError(DeviceError):
  """No previous model is kept to roll back to."""
