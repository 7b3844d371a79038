"""What optimizations a model went through, carried from artifact to artifact.

Every tfx_edge_* custom property an optimizer records travels with the model through the next
optimizers and PTQConverter, so a later step can choose its scheme (QATTrainer) and a report
can show the whole chain for each TFLite model.
"""
import json
from typing import Any, Dict, List

from tfx import types

from components import spec_keys

# The steps an optimizer appends to a model's history (spec_keys.PROP_HISTORY).
PRUNE = 'prune'
CLUSTER = 'cluster'
QAT = 'qat'


def history_of(artifact: types.Artifact) -> List[str]:
  """The optimization steps recorded on a model artifact (empty for a Trainer's model)."""
  text = artifact.get_string_custom_property(spec_keys.PROP_HISTORY)
  return json.loads(text) if text else []


def carry_properties(source: types.Artifact, target: types.Artifact) -> None:
  """Copies every tfx_edge_* property of source onto target."""
  for name, value in source.mlmd_artifact.custom_properties.items():
    if name.startswith('tfx_edge_'):
      target.mlmd_artifact.custom_properties[name].CopyFrom(value)


def set_properties(artifact: types.Artifact, properties: Dict[str, Any]) -> None:
  """Sets custom properties by value type: int/bool, float, str, anything else as JSON."""
  for name, value in properties.items():
    if isinstance(value, (bool, int)):
      artifact.set_int_custom_property(name, int(value))
    elif isinstance(value, float):
      artifact.set_float_custom_property(name, value)
    elif isinstance(value, str):
      artifact.set_string_custom_property(name, value)
    else:
      artifact.set_string_custom_property(name, json.dumps(value, sort_keys=True))
