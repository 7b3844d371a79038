"""TFLite conversion for every PTQ mode. Plain logic: no TFX needed to use or test it."""
import dataclasses
import logging
import re
from typing import Callable, Dict, Iterable, List, Mapping, Optional

import numpy as np
import tensorflow as tf

_LOG = logging.getLogger(__name__)

FLOAT32 = 'float32'
DYNAMIC_RANGE = 'dynamic_range'
FLOAT16 = 'float16'
INT8 = 'int8'
INT8_FLOAT_FALLBACK = 'int8_float_fallback'
INT16X8 = 'int16x8'

MODES = (FLOAT32, DYNAMIC_RANGE, FLOAT16, INT8, INT8_FLOAT_FALLBACK, INT16X8)
# Modes whose activation ranges come from a representative (calibration) dataset.
CALIBRATED_MODES = frozenset({INT8, INT8_FLOAT_FALLBACK, INT16X8})

# Input/output tensor types a caller may ask for. `native` keeps what the mode gives by default:
# float I/O everywhere except `int8`, whose default is int8 I/O (an int8-only model).
IO_NATIVE = 'native'
IO_FLOAT32 = 'float32'
IO_INT8 = 'int8'
IO_INT16 = 'int16'
INFERENCE_IO = (IO_NATIVE, IO_FLOAT32, IO_INT8, IO_INT16)
_IO_ALLOWED = {
    FLOAT32: {IO_NATIVE, IO_FLOAT32},
    DYNAMIC_RANGE: {IO_NATIVE, IO_FLOAT32},
    FLOAT16: {IO_NATIVE, IO_FLOAT32},
    INT8: {IO_NATIVE, IO_INT8, IO_FLOAT32},
    INT8_FLOAT_FALLBACK: {IO_NATIVE, IO_FLOAT32},
    INT16X8: {IO_NATIVE, IO_FLOAT32, IO_INT16},
}

# A representative dataset yields one dict per sample, keyed by model input name. TFLite may
# reorder inputs, so a positional list could feed the wrong tensor.
RepresentativeData = Callable[[], Iterable[Mapping[str, np.ndarray]]]


class ConversionError(RuntimeError):
  """The TFLite converter rejected the model; the message says what to change."""


def validate_mode(mode: str, inference_io: str = IO_NATIVE) -> None:
  """Raises ValueError naming the bad value and the accepted ones.

  Args:
    mode: one of MODES.
    inference_io: one of INFERENCE_IO, and allowed for `mode`.
  """
  if mode not in MODES:
    raise ValueError(f'mode={mode!r} is not a PTQ mode; accepted: {", ".join(MODES)}.')
  if inference_io not in INFERENCE_IO:
    raise ValueError(
        f'inference_io={inference_io!r} is not accepted; accepted: {", ".join(INFERENCE_IO)}.')
  if inference_io not in _IO_ALLOWED[mode]:
    raise ValueError(
        f'inference_io={inference_io!r} is not available for mode={mode!r}; accepted for this '
        f'mode: {", ".join(sorted(_IO_ALLOWED[mode]))}.')


def convert(model: tf.keras.Model,
            mode: str,
            representative_data: Optional[RepresentativeData] = None,
            inference_io: str = IO_NATIVE) -> bytes:
  """Converts a Keras 2 (tf_keras) model to a TFLite flatbuffer.

  Args:
    model: a built tf_keras Functional or Sequential model.
    mode: one of MODES.
    representative_data: required for the calibrated modes (int8, int8_float_fallback,
      int16x8); a callable that returns an iterable of {input_name: array with batch dim 1}.
    inference_io: tensor type of the model's inputs and outputs (see INFERENCE_IO).

  Returns:
    The serialized TFLite model.

  Raises:
    ValueError: bad mode/inference_io, or missing representative data.
    ConversionError: the converter rejected the model for this mode, or (int8) left ops in
      float because they have no int8 kernel.
  """
  validate_mode(mode, inference_io)
  if mode in CALIBRATED_MODES and representative_data is None:
    raise ValueError(f'mode={mode!r} needs representative_data (calibration samples).')

  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  if mode != FLOAT32:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if mode == FLOAT16:
    converter.target_spec.supported_types = [tf.float16]
  if mode in CALIBRATED_MODES:
    converter.representative_dataset = representative_data
  if mode == INT8:
    # Full integer: the converter fails instead of silently keeping float ops.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if inference_io in (IO_NATIVE, IO_INT8):
      converter.inference_input_type = tf.int8
      converter.inference_output_type = tf.int8
  elif mode == INT16X8:
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    ]
    if inference_io == IO_INT16:
      converter.inference_input_type = tf.int16
      converter.inference_output_type = tf.int16

  try:
    tflite_model = converter.convert()
  except Exception as e:  # The converter raises several unrelated types; wrap them all.
    raise ConversionError(_converter_failure(mode, str(e))) from e
  if mode == INT8:
    # The converter does not fail on an op without an int8 kernel: it wraps the op in
    # DEQUANTIZE/QUANTIZE and leaves it in float, which an int8-only device cannot run.
    left_in_float = float_ops(tflite_model)
    if left_in_float:
      raise ConversionError(
          f'mode={mode!r}: {len(left_in_float)} op(s) have no int8 kernel and were left in float: '
          f'{", ".join(left_in_float)}. An int8-only model cannot contain them. Use '
          f'mode={INT8_FLOAT_FALLBACK!r} to keep these ops in float (the others stay int8), or '
          'replace them in the model with ops that have int8 kernels.')
  return tflite_model


def _converter_failure(mode: str, message: str) -> str:
  """A converter error message rewritten to say what to change; the original is kept at the end."""
  select_ops = re.search(r'TF Select ops: ([^\n]+)', message)
  if select_ops:
    return (f'TFLite conversion in mode={mode!r} failed: the model uses TensorFlow ops with no '
            f'TFLite builtin kernel: {select_ops.group(1).strip()}. No mode converts them (TF '
            'Select ops are not enabled, and int8_float_fallback does not help); replace them in '
            f'the model with TFLite builtin ops. Converter message: {message}')
  hint = ''
  if mode == INT8:
    hint = f' Some ops have no int8 kernel; mode={INT8_FLOAT_FALLBACK!r} keeps them in float.'
  return f'TFLite conversion in mode={mode!r} failed: {message}.{hint}'


def float_ops(tflite_model: bytes) -> List[str]:
  """Ops of a TFLite model that compute in float, as `OP (output tensor name)`.

  QUANTIZE and DEQUANTIZE are not counted: they only convert at the edges of int8 parts (and at
  the model boundary when its inputs and outputs are float).
  """
  interpreter = _interpreter(tflite_model)
  tensors = {d['index']: d for d in interpreter.get_tensor_details()}
  found = []
  # LiteRT lists ops only through this private method (pruning.py reads kernels the same way).
  for op in interpreter._get_ops_details():  # pylint: disable=protected-access
    if op['op_name'] in ('QUANTIZE', 'DEQUANTIZE'):
      continue
    used = [tensors[i] for i in [*op['inputs'], *op['outputs']] if i in tensors]
    if any(np.issubdtype(np.dtype(t['dtype']), np.floating) for t in used):
      output = tensors.get(op['outputs'][0]) if len(op['outputs']) else None
      found.append(f'{op["op_name"]} ({output["name"]})' if output else op['op_name'])
  return found


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  """What a device needs to know about one input or output tensor."""
  name: str
  dtype: str
  shape: List[int]
  scale: float
  zero_point: int


def _interpreter(tflite_model: bytes):
  # LiteRT replaces tf.lite.Interpreter, which is deprecated.
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  return Interpreter(model_content=tflite_model)


def io_details(tflite_model: bytes) -> Dict[str, List[TensorInfo]]:
  """Returns {'inputs': [...], 'outputs': [...]} tensor descriptions of a TFLite model."""
  interpreter = _interpreter(tflite_model)

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
      'inputs': describe(interpreter.get_input_details()),
      'outputs': describe(interpreter.get_output_details()),
  }


def tensor_dtypes(tflite_model: bytes) -> Dict[str, str]:
  """Maps every tensor of a TFLite model to its dtype name (weights and activations)."""
  interpreter = _interpreter(tflite_model)
  return {d['name']: np.dtype(d['dtype']).name for d in interpreter.get_tensor_details()}
