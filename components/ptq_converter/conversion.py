"""TFLite conversion for every PTQ mode. Plain logic: no TFX needed to use or test it.

The mode names are in components.common.modes, which the pushers and the CLI share.
"""
import re
from typing import Callable, Iterable, Mapping, Optional

import numpy as np
import tensorflow as tf

from components.common import modes
from components.common import tflite
from components.errors import ConfigError
from components.errors import ConversionError

# A representative dataset yields one dict per sample, keyed by model input name. TFLite may
# reorder inputs, so a positional list could feed the wrong tensor.
RepresentativeData = Callable[[], Iterable[Mapping[str, np.ndarray]]]


def convert(model: tf.keras.Model,
            mode: str,
            representative_data: Optional[RepresentativeData] = None,
            inference_io: str = modes.IO_NATIVE) -> bytes:
  """Converts a Keras 2 (tf_keras) model to a TFLite flatbuffer.

  Args:
    model: a built tf_keras Functional or Sequential model.
    mode: one of modes.MODES.
    representative_data: required for the calibrated modes (int8, int8_float_fallback,
      int16x8); a callable that returns an iterable of {input_name: array with batch dim 1}.
    inference_io: tensor type of the model's inputs and outputs (see modes.INFERENCE_IO).

  Returns:
    The serialized TFLite model.

  Raises:
    ConfigError: bad mode/inference_io, or missing representative data.
    ConversionError: the converter rejected the model for this mode, or (int8) left ops in
      float because they have no int8 kernel.
  """
  modes.validate_mode(mode, inference_io)
  if mode in modes.CALIBRATED_MODES and representative_data is None:
    raise ConfigError(f'mode={mode!r} needs representative_data (calibration samples).')

  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  if mode != modes.FLOAT32:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if mode == modes.FLOAT16:
    converter.target_spec.supported_types = [tf.float16]
  if mode in modes.CALIBRATED_MODES:
    converter.representative_dataset = representative_data
  if mode == modes.INT8:
    # Full integer: the converter fails instead of silently keeping float ops.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if inference_io in (modes.IO_NATIVE, modes.IO_INT8):
      converter.inference_input_type = tf.int8
      converter.inference_output_type = tf.int8
  elif mode == modes.INT16X8:
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    ]
    if inference_io == modes.IO_INT16:
      converter.inference_input_type = tf.int16
      converter.inference_output_type = tf.int16

  try:
    tflite_model = converter.convert()
  except Exception as e:  # The converter raises several unrelated types; wrap them all.
    raise ConversionError(_converter_failure(mode, str(e))) from e
  if mode == modes.INT8:
    # The converter does not fail on an op without an int8 kernel: it wraps the op in
    # DEQUANTIZE/QUANTIZE and leaves it in float, which an int8-only device cannot run.
    left_in_float = tflite.float_ops(tflite_model)
    if left_in_float:
      raise ConversionError(
          f'mode={mode!r}: {len(left_in_float)} op(s) have no int8 kernel and were left in float: '
          f'{", ".join(left_in_float)}. An int8-only model cannot contain them. Use '
          f'mode={modes.INT8_FLOAT_FALLBACK!r} to keep these ops in float (the others stay '
          'int8; in the pipeline: int8_mode and allowed_modes, or --int8-mode and '
          '--allowed-modes), or replace them in the model with ops that have int8 kernels.')
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
  if mode == modes.INT8:
    hint = f' Some ops have no int8 kernel; mode={modes.INT8_FLOAT_FALLBACK!r} keeps them in float.'
  return f'TFLite conversion in mode={mode!r} failed: {message}.{hint}'
