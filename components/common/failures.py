"""Failed variants: a step that records its failure on its output instead of stopping the run.

TFX stops the whole DAG when an executor raises. In a pipeline that builds several variants, one
variant's optimizer or conversion failing (tfmot refusing a layer, the converter refusing an op)
must not sink the others. So a step asked to (`record_failure=True`, which create_pipeline sets
when it builds more than one variant) catches the failure of its own work, writes
`tfx_edge_failed` = 1 and `tfx_edge_failure_reason` on its output artifact, and ends normally.
Every later step of that variant (the next optimizer, PTQConverter, the gate's Evaluator,
DeviceBenchmarker) sees the marker, does no work and passes it on; the gate's blessing of a
failed variant is a refusal, and VariantSelector ranks the other variants and lists the failure
with its reason.

What is never recorded: a DataError (the Examples every variant shares do not fit the model, so
every variant would fail alike and the message names the data to fix), and anything wrong with a
parameter, which raises ConfigError when the pipeline is built. A step that is not asked to record
raises as before, also when the model it is given is a failed variant.

No TFX needed beyond the artifact API; the readers (benchmarker, selector, summary) import it.
"""
from components import spec_keys
from components.errors import DataError

# Reasons travel in ML Metadata and the selection report: the first part of a long TF message
# says what went wrong, the rest is graph detail.
MAX_REASON_CHARS = 1500


def describe(step: str, error: BaseException) -> str:
  """The reason recorded for `error` raised by `step` (for example 'QATTrainer')."""
  text = ' '.join(str(error).split()) or '(no message)'
  if len(text) > MAX_REASON_CHARS:
    text = text[:MAX_REASON_CHARS] + ' [...]'
  return f'{step} failed: {type(error).__name__}: {text}'


def recordable(error: BaseException) -> bool:
  """Whether a step that records failures may record `error` (see the module docstring)."""
  return isinstance(error, Exception) and not isinstance(error, DataError)


def mark_failed(artifact, reason: str) -> None:
  """Marks an output artifact as a failed variant, with the reason in words."""
  artifact.set_int_custom_property(spec_keys.PROP_FAILED, 1)
  artifact.set_string_custom_property(spec_keys.PROP_FAILURE_REASON, reason)


def failure_of(artifact) -> str:
  """The failure reason recorded on an artifact, or '' when it is not a failed variant.

  Works on a TFX Artifact and on an ML Metadata Artifact proto (what the summary reads).
  """
  if artifact is None:
    return ''
  if hasattr(artifact, 'get_int_custom_property'):
    if not artifact.get_int_custom_property(spec_keys.PROP_FAILED):
      return ''
    return artifact.get_string_custom_property(spec_keys.PROP_FAILURE_REASON) or 'failed'
  props = artifact.custom_properties
  if spec_keys.PROP_FAILED not in props or not props[spec_keys.PROP_FAILED].int_value:
    return ''
  reason = props.get(spec_keys.PROP_FAILURE_REASON)
  return (reason.string_value if reason is not None else '') or 'failed'


def input_failed_error(step: str, uri: str, reason: str) -> str:
  """The message of a step that does not record failures and is given a failed variant."""
  return (f'{step}: the model {uri} is a failed variant ({reason}); there is nothing to '
          'work on. Build this step with record_failure=True to pass the failure on instead.')
