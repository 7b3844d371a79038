"""The golden input of a release: an evaluation example, fed to the model as the gate feeds it.

A device's health check (tfx_edge_device/health.py) runs the golden record's input through the
new model and compares the output with the one signed next to it. A deterministic input (uniform
noise) proves that the model loads and computes what the publisher computed, but noise can sit
where a model's layers saturate, so a wrong kernel on the device may leave its output unchanged.
An example from the data the model was evaluated on exercises the paths the model really uses.

The example is the first one of a split (in file-name order: the same on every run of the same
data) of the examples the gate evaluated, usually GateExamplesGen's `gate_examples`, whose
examples hold every model input, missing values filled as the model's input_fn fills them.
Each TFLite input reads the feature TFMA would feed it (tflite.feature_name),
quantized as a device quantizes it (tflite.device_input).
"""
import math
from typing import Any, Dict, List

import numpy as np
import tensorflow as tf

from components.common import tflite
from components.errors import DataError


def source_record(examples_uri: str, split: str) -> Dict[str, Any]:
  """What the target's custom info records about the golden input it was given."""
  return {'source': 'examples', 'examples': examples_uri, 'split': split, 'index': 0}


DETERMINISTIC = {'source': 'deterministic', 'seed': 0}  # health.golden_record's default input.


def inputs_from_example(tflite_model: bytes, record: bytes, source: str) -> List[np.ndarray]:
  """One array per model input (in the interpreter's input order) from one tf.Example.

  Args:
    tflite_model: the model's bytes.
    record: a serialized tf.Example holding a feature for each model input.
    source: where the example comes from, for messages.

  Raises:
    DataError: the example lacks a model input's feature, holds bytes for it, or holds a number
      of values that does not fit the input's shape.
  """
  features = tf.train.Example.FromString(record).features.feature
  arrays = []
  for detail in tflite.interpreter(tflite_model).get_input_details():
    name = tflite.feature_name(detail['name'])
    if name not in features:
      raise DataError(
          f'{source}: the golden example has no feature {name!r} for the model input '
          f'{detail["name"]!r}; its features are {sorted(features)}. Wire the examples the gate '
          'evaluated (GateExamplesGen\'s gate_examples), which hold every model input.')
    kind = features[name].WhichOneof('kind')
    if kind not in ('float_list', 'int64_list'):
      raise DataError(f'{source}: feature {name!r} of the golden example holds {kind or "nothing"}'
                      f'; the model input {detail["name"]!r} takes numbers.')
    values = np.asarray(getattr(features[name], kind).value)
    shape = [1, *(int(x) for x in detail['shape_signature'][1:])]
    known = math.prod(x for x in shape if x != -1)
    if shape.count(-1) > 1 or (-1 not in shape and values.size != known) or (
        -1 in shape and (not values.size or values.size % known)):
      raise DataError(f'{source}: feature {name!r} of the golden example has {values.size} '
                      f'values, which do not fill the model input {detail["name"]!r} of shape '
                      f'{list(detail["shape_signature"])} for one example.')
    params = detail['quantization_parameters']
    arrays.append(tflite.device_input(values.reshape(shape), params['scales'],
                                      params['zero_points'], detail['dtype']))
  return arrays
