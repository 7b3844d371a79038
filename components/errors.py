"""The exceptions tfx-edge raises: one base class, and one class per kind of failure.

What is known when the pipeline is built (a bad parameter) raises `ConfigError`, a `ValueError`,
from a component's constructor. What only a run can find raises a run-time class under the same
base. Classes that replace a built-in type keep it as a second base (`DataError` is also a
`ValueError`, `ConversionError` a `RuntimeError`), so code that catches the built-in keeps working.

Plain Python: the device-side client and the CLI import this without TensorFlow or TFX.
"""


class TfxEdgeError(Exception):
  """Base of every error tfx-edge raises on purpose; the message says what to change."""


class ConfigError(TfxEdgeError, ValueError):
  """A parameter is not accepted; raised when the pipeline is built (or the CLI parses)."""


class DataError(TfxEdgeError, ValueError):
  """Examples do not fit the model: a missing or mistyped feature, a bad label, an empty split."""


class ModelLoadError(TfxEdgeError, ValueError):
  """A Model artifact holds no model the components can use."""


class OptimizationError(TfxEdgeError, RuntimeError):
  """An optimization did not produce what it promises (for example a broken 2:4 pattern)."""


class ConversionError(TfxEdgeError, RuntimeError):
  """The TFLite converter rejected the model, or left ops the mode does not allow."""


class MeasurementError(TfxEdgeError, RuntimeError):
  """A model could not be measured (not a TFLite file, interpreter crash, timeout)."""


class PublishError(TfxEdgeError, RuntimeError):
  """A model could not be published; what was published before stays as it was."""


class PublishConflictError(PublishError):
  """Other publishers kept taking the next metadata version; nothing of this push was published."""


class OTARepositoryError(TfxEdgeError):
  """The OTA repository is not in a state for this operation (not initialized, already there)."""


class SigningKeyError(TfxEdgeError, ValueError):
  """A signing-key file is unreadable or not the key the repository trusts (never echoes it)."""


class NotPublishedError(TfxEdgeError, LookupError):
  """The OTA repository has no release of the model on the channel asked for."""


class ReleaseStateError(TfxEdgeError):
  """An OTA release is not in the state a change needs (approving a release that is not pending,
  shrinking a rollout, promoting a halted release); nothing was changed."""
