"""Inspecting TFLite models with the LiteRT interpreter: ops, tensors, I/O, sizes.

Imports only numpy, and LiteRT when a function needs an interpreter, so the CLI and the
measurement process can use it without TensorFlow.
"""
import dataclasses
import gzip
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from components.common import tasks
from components.errors import DataError

# Ops that only convert at the edges of int8 parts (and at a float model boundary).
_CONVERSION_OPS = ('QUANTIZE', 'DEQUANTIZE')
# Ops whose second input is a weight kernel stored [C_OUT, ..., C_IN].
_KERNEL_OPS = ('CONV_2D', 'FULLY_CONNECTED')
# The prefix a SavedModel conversion gives input names, which TFMA strips (feature_name).
_TFMA_PREFIX = 'serving_default_'


def interpreter(tflite_model: bytes):
  """A LiteRT interpreter of the model, for inspection (no delegate, so nothing is logged).

  LiteRT's Interpreter replaces tf.lite.Interpreter, which is deprecated.
  """
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  return litert.Interpreter(
      model_content=tflite_model,
      experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def ops(tflite_model: bytes) -> List[Dict[str, Any]]:
  """The model's ops in execution order: dicts with op_name, inputs and outputs (tensor indices)."""
  # LiteRT lists ops only through this private method.
  return interpreter(tflite_model)._get_ops_details()  # pylint: disable=protected-access


def gzip_size(data: bytes) -> int:
  """Bytes of `data` after gzip -9: what an over-the-air download of the model costs."""
  return len(gzip.compress(data, 9, mtime=0))


def float_ops(tflite_model: bytes) -> List[str]:
  """Ops of a TFLite model that compute in float, as `OP (output tensor name)`.

  QUANTIZE and DEQUANTIZE are not counted: they only convert at the edges of int8 parts (and at
  the model boundary when its inputs and outputs are float). Nor is a CAST that reads an integer
  model input: it is part of that input (see `integer_inputs`).
  """
  interp = interpreter(tflite_model)
  tensors = {d['index']: d for d in interp.get_tensor_details()}
  integer = {d['index'] for d in interp.get_input_details() if _is_integer_input(d)}
  found = []
  for op in interp._get_ops_details():  # pylint: disable=protected-access
    if op['op_name'] in _CONVERSION_OPS:
      continue
    if op['op_name'] == 'CAST' and len(op['inputs']) and set(op['inputs']) <= integer:
      # An integer input (a count, an id) is a number to the model: it reaches the int8 ops as a
      # CAST to float and a QUANTIZE, the conversion a float input gets before it is fed as
      # int8. No int8 op can do it (a CAST to int8 copies values; it does not scale them), so
      # the CAST belongs to the input, as the QUANTIZE does, and not to the model's math.
      continue
    used = [tensors[i] for i in [*op['inputs'], *op['outputs']] if i in tensors]
    if any(np.issubdtype(np.dtype(t['dtype']), np.floating) for t in used):
      output = tensors.get(op['outputs'][0]) if len(op['outputs']) else None
      found.append(f'{op["op_name"]} ({output["name"]})' if output else op['op_name'])
  return found


def _is_integer_input(detail: Dict[str, Any]) -> bool:
  """True for an input tensor holding integers as such: integer dtype and no quantization scale.

  An int8 input that stands for a float input (int8 I/O) has a scale; an int64 count has none.
  """
  return (np.issubdtype(np.dtype(detail['dtype']), np.integer) and
          not detail['quantization'][0])


def feature_name(tflite_input_name: str) -> str:
  """The tf.Example feature TFMA feeds a TFLite input from.

  TFMA strips the 'serving_default_' prefix a SavedModel conversion adds and the ':N' suffix
  (tflite_predict_extractor's _get_input_name_from_input_detail); the same rule here, for the
  gate's schema and the golden input of a release alike.
  """
  if tflite_input_name.startswith(_TFMA_PREFIX):
    tflite_input_name = tflite_input_name[len(_TFMA_PREFIX):]
  return tflite_input_name.split(':')[0]


def device_input(values: Any, scales: Any, zero_points: Any, dtype: Any) -> np.ndarray:
  """Values for a model input as a device feeds them: quantized inputs rounded and saturated.

  A quantized (int8/int16) input gets round(x / scale + zero_point), clipped to its type's range,
  where TFMA's extractor truncates and wraps around; an integer input without a scale (an id, a
  count) and a float input are cast to the input's dtype. The gate's extractors, int8_auto and the
  golden input of a release (components/ota/golden.py) all feed inputs through here.

  Args:
    values: the float (or integer) values of one input, any shape.
    scales: the input's quantization scales (empty when it is not quantized).
    zero_points: its zero points.
    dtype: the input tensor's dtype.
  """
  dtype = np.dtype(dtype)
  scales, zero_points = np.asarray(scales), np.asarray(zero_points)
  if not np.issubdtype(dtype, np.integer) or scales.size == 0 or zero_points.size == 0 or (
      not scales.any()):
    return np.asarray(values).astype(dtype, copy=False)
  limits = np.iinfo(dtype)
  return np.clip(np.round(np.asarray(values) / scales + zero_points), limits.min,
                 limits.max).astype(dtype)


def integer_inputs(tflite_model: bytes) -> Dict[str, str]:
  """{input tensor name: dtype} of the model inputs that take integers as such (int64, int32).

  These keep their dtype whatever the inference I/O type: a device feeds them the integers
  themselves, not quantized values.
  """
  return {d['name']: np.dtype(d['dtype']).name
          for d in interpreter(tflite_model).get_input_details() if _is_integer_input(d)}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  """What a device needs to know about one input or output tensor."""
  name: str
  dtype: str
  shape: List[int]
  scale: float
  zero_point: int


def io_details(tflite_model: bytes) -> Dict[str, List[TensorInfo]]:
  """Returns {'inputs': [...], 'outputs': [...]} tensor descriptions of a TFLite model."""
  interp = interpreter(tflite_model)

  def describe(details):
    return [
        TensorInfo(
            name=d['name'],
            dtype=np.dtype(d['dtype']).name,
            shape=[int(x) for x in d['shape_signature']],
            scale=float(d['quantization'][0]),
            zero_point=int(d['quantization'][1])) for d in details
    ]

  return {
      'inputs': describe(interp.get_input_details()),
      'outputs': describe(interp.get_output_details()),
  }


def io_specs(tflite_model: bytes) -> Dict[str, List[Dict[str, Any]]]:
  """io_details as plain dicts, for JSON (the OTA target's custom info)."""
  return {k: [dataclasses.asdict(t) for t in v] for k, v in io_details(tflite_model).items()}


# Activations a TFLite model computes as a separate op at its output.
_ACTIVATION_OPS = {'LOGISTIC': 'sigmoid', 'SOFTMAX': 'softmax', 'TANH': 'tanh', 'RELU': 'relu',
                   'RELU6': 'relu6'}


def output(tflite_model: bytes) -> tasks.Output:
  """The model's single output: its units (last dimension) and the activation producing it.

  Read from the graph, past the QUANTIZE/DEQUANTIZE ops at the model boundary, so it describes
  every model the same way: Keras 2 or 3, a plain SavedModel, float or int8.

  Raises:
    DataError: the model has more than one output (the gate measures one).
  """
  interp = interpreter(tflite_model)
  details = interp.get_output_details()
  if len(details) != 1:
    raise DataError(f'the model has {len(details)} outputs '
                    f'({", ".join(d["name"] for d in details)}); the gate measures one output.')
  producers = {t: op for op in interp._get_ops_details() for t in op['outputs']}  # pylint: disable=protected-access
  tensor = details[0]['index']
  op = producers.get(tensor)
  while op is not None and op['op_name'] in _CONVERSION_OPS:
    op = producers.get(op['inputs'][0])
  activation = _ACTIVATION_OPS.get(op['op_name'], 'linear') if op is not None else 'linear'
  shape = details[0]['shape_signature']
  return tasks.Output(units=int(shape[-1]) if len(shape) else 1, activation=activation)


def tensor_dtypes(tflite_model: bytes) -> Dict[str, str]:
  """Maps every tensor of a TFLite model to its dtype name (weights and activations)."""
  return {d['name']: np.dtype(d['dtype']).name
          for d in interpreter(tflite_model).get_tensor_details()}


def unique_int8_weights(tflite_model: bytes) -> Dict[str, int]:
  """{op: distinct int8 values of its weights} for every CONV_2D, DEPTHWISE_CONV_2D and
  FULLY_CONNECTED op whose weights are int8 (what a clustered layer's kernel becomes).

  An op is named by its output tensor, which carries the Keras layer's name
  (`model/conv/BiasAdd;model/conv/Conv2D`); the weight constants themselves are often named
  `tfl.pseudo_qconst`.
  """
  interp = interpreter(tflite_model)
  interp.allocate_tensors()
  details = {d['index']: d for d in interp.get_tensor_details()}
  counts = {}
  for op in interp._get_ops_details():  # pylint: disable=protected-access
    if op['op_name'] not in _KERNEL_OPS + ('DEPTHWISE_CONV_2D',):
      continue
    weights = details[op['inputs'][1]]
    if weights['dtype'] == np.int8:
      counts[details[op['outputs'][0]]['name']] = int(
          np.unique(interp.get_tensor(weights['index'])).size)
  return counts


def of_layers(tensor_name: str, layers: Sequence[str]) -> bool:
  """Whether a TFLite op's output tensor belongs to one of the Keras `layers`.

  The converter names an op's output after the layer scope (`model/conv_1/BiasAdd;...`), so a
  layer `conv_1` appears as a `/conv_1/` path component; `conv_10` does not match it.
  """
  return any(f'/{layer}/' in f'/{tensor_name}' for layer in layers)


def weights_violating_2by4(tflite_model: bytes,
                           layers: Optional[Sequence[str]] = None) -> Tuple[List[str], List[str]]:
  """(checked, violating) weight tensors of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED ops.

  TFLite stores these kernels as [C_OUT, ..., C_IN] (a depthwise kernel as [1, H, W, C]), so
  2:4 runs along the last axis. Kernels whose last axis is not a multiple of 4 cannot hold the
  pattern and are not checked.

  Args:
    tflite_model: the model.
    layers: the Keras layers that were pruned to 2:4: only their ops are checked (a layer
      skipped by `skip_layers` is dense). None checks every CONV_2D and FULLY_CONNECTED op.
  """
  # tfmot's own check, the one its m_by_n pruning guarantees (imported here: it loads TF).
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_model_optimization.python.core.sparsity.keras import pruning_utils  # pylint: disable=g-import-not-at-top
  interp = interpreter(tflite_model)
  interp.allocate_tensors()
  names = {d['index']: d['name'] for d in interp.get_tensor_details()}
  kernel_ops = _KERNEL_OPS if layers is None else _KERNEL_OPS + ('DEPTHWISE_CONV_2D',)
  checked, violating = [], []
  for op in interp._get_ops_details():  # pylint: disable=protected-access
    if op['op_name'] not in kernel_ops:
      continue
    if layers is not None and not of_layers(names[op['outputs'][0]], layers):
      continue
    weights = interp.get_tensor(op['inputs'][1])
    if weights.shape[-1] % 4:
      continue
    checked.append(names[op['inputs'][1]])
    if not pruning_utils.is_pruned_m_by_n(tf.constant(weights), (2, 4), last_channel='C_IN'):
      violating.append(names[op['inputs'][1]])
  return checked, violating
