"""TFLite conversion for every PTQ mode. Plain logic: no TFX needed to use or test it.

The mode names are in components.common.modes, which the pushers and the CLI share.
"""
import itertools
import re
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from absl import logging
import numpy as np
import tensorflow as tf
# The TFLite flatbuffer schema and its read/write helpers, to give integer inputs back.
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from components.common import model_io
from components.common import modes
from components.common import tflite
from components.errors import ConfigError
from components.errors import ConversionError

# A representative dataset yields one dict per sample, keyed by model input name. TFLite may
# reorder inputs, so a positional list could feed the wrong tensor.
RepresentativeData = Callable[[], Iterable[Mapping[str, np.ndarray]]]


def convert(model: Union[tf.keras.Model, str],
            mode: str,
            representative_data: Optional[RepresentativeData] = None,
            inference_io: str = modes.IO_NATIVE,
            per_tensor_weights: bool = False) -> bytes:
  """Converts a Keras 2 (tf_keras) model, or a SavedModel's serving signature, to TFLite.

  Args:
    model: a built tf_keras Functional or Sequential model, or the directory of a SavedModel
      with a `serving_default` signature (Keras 3, a tf.Module, a subclassed tf_keras model),
      converted from that signature: the TFLite inputs are then named after its input keys.
    mode: one of modes.MODES.
    representative_data: required for the calibrated modes (int8, int8_float_fallback,
      int16x8); a callable that returns an iterable of {input_name: array with batch dim 1}.
    inference_io: tensor type of the model's inputs and outputs (see modes.INFERENCE_IO).
    per_tensor_weights: one int8 scale per weight tensor instead of one per output channel. For
      a clustered model: its k shared values then stay k int8 values in the whole tensor
      (per-channel scales map each to a different int8 value in every channel).

  Returns:
    The serialized TFLite model.

  Raises:
    ConfigError: bad mode/inference_io, or missing representative data.
    ConversionError: the converter rejected the model for this mode, or (int8) left ops in
      float because they have no int8 kernel.
  """
  modes.validate_mode(mode, inference_io)
  if mode == modes.INT8_AUTO:
    raise ConfigError(f'mode={mode!r} chooses layers by measuring accuracy on labelled examples: '
                      'convert with components.ptq_converter.auto.convert_auto (PTQConverter '
                      'does, with its eval split), not with convert().')
  if mode in modes.CALIBRATED_MODES and representative_data is None:
    raise ConfigError(f'mode={mode!r} needs representative_data (calibration samples).')

  integer_inputs = {}
  if mode == modes.INT8 and not isinstance(model, str):
    model, representative_data, integer_inputs = _integer_inputs_as_float(
        model, representative_data)
  converter = _converter(model, mode)
  if mode != modes.FLOAT32:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if mode == modes.FLOAT16:
    converter.target_spec.supported_types = [tf.float16]
  if mode in modes.CALIBRATED_MODES:
    converter.representative_dataset = representative_data
  if per_tensor_weights:
    # The converter's only switch for it (private in TF 2.16; the QuantizationDebugger reads it).
    converter._experimental_disable_per_channel = True  # pylint: disable=protected-access
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
  if integer_inputs:
    tflite_model = _restore_integer_inputs(tflite_model, integer_inputs)
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


def convert_keeping_clusters(model: Union[tf.keras.Model, str], mode: str,
                             representative_data: Optional[RepresentativeData],
                             inference_io: str, clusters: int,
                             clustered_layers: List[str]) -> Tuple[bytes, Optional[Dict[str, int]]]:
  """Converts a clustered model so its k shared values stay k int8 values, where they can.

  Per-tensor int8 weights keep them, unless a BatchNormalization was folded into a clustered
  kernel: the converter multiplies each output channel by its own factor, so the shared values
  differ per channel and one scale per tensor cannot keep them. The model is then converted
  again with per-channel scales (at most k values in each channel).

  Args:
    model, mode, representative_data, inference_io: as for convert().
    clusters: the number of shared values in each clustered kernel.
    clustered_layers: the Keras layers whose kernels are clustered.

  Returns:
    (the TFLite model, {TFLite weight tensor: distinct int8 values} of the clustered kernels
    when per-tensor scales kept the clusters, else None).
  """
  per_tensor = convert(model, mode, representative_data, inference_io, per_tensor_weights=True)
  counts = {name: n for name, n in tflite.unique_int8_weights(per_tensor).items()
            if tflite.of_layers(name, clustered_layers)}
  spread = {name: n for name, n in counts.items() if n > clusters}
  if not spread:
    logging.info('per-tensor int8 weights keep the %d clusters: distinct values %s', clusters,
                 counts)
    return per_tensor, counts
  logging.info('%d clustered kernel(s) hold more than %d values once converted (BatchNormalization '
               'folded in rescales each channel): %s; keeping per-channel int8 scales.',
               len(spread), clusters, spread)
  return convert(model, mode, representative_data, inference_io), None


def converter_for(model: Union[tf.keras.Model, str]) -> tf.lite.TFLiteConverter:
  """A fresh converter of a tf_keras model or a SavedModel's serving signature (no options)."""
  return _converter(model, modes.FLOAT32)


def _converter(model: Union[tf.keras.Model, str], mode: str) -> tf.lite.TFLiteConverter:
  """The converter for a tf_keras model, or for the serving signature of a SavedModel directory."""
  if not isinstance(model, str):
    return tf.lite.TFLiteConverter.from_keras_model(model)
  try:
    # One signature, the one TFMA's TFLite extractor assumes (it strips its name from inputs).
    # The converted model then has only that signature, so a representative dataset keyed by
    # input name feeds it without naming the signature.
    return tf.lite.TFLiteConverter.from_saved_model(
        model, signature_keys=[model_io.SERVING_SIGNATURE])
  except Exception as e:  # Unreadable SavedModel, missing signature: several types.
    raise ConversionError(_converter_failure(mode, str(e))) from e


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


# --- int8 with integer inputs ------------------------------------------------------------------
#
# A model reads a count or an id as an integer input and casts it to float inside
# (`tf.cast(count, tf.float32)`), which TFLite writes as a CAST. TF 2.16's quantizer cannot make
# such a model int8-only when the cast feeds an op that needs one scale on all its inputs, such as
# the CONCATENATION that joins it to the float inputs: it drops the CAST output's calibrated
# range in favour of the CONCATENATION's (the "redundant statistics" pass), then never places a
# QUANTIZE after the CAST, whose result it does not quantize, so the CONCATENATION stays in float
# next to the CAST. (A cast that feeds an op with a scale of its own, a Dense, gets its QUANTIZE.)
# A QAT model fails outright: the CONCATENATION's trained range and the float input's disagree.
# Neither the converter's options nor its legacy quantizer (plain PTQ only) fix both.
#
# So an integer input that the model only casts to float is converted as what it is to the model,
# a float input: the converter quantizes it like any other input and every op after it is int8.
# The integer input is then put back in front of it in the flatbuffer: the device feeds the
# int64/int32 value itself, a CAST makes it float and a QUANTIZE (the model's own with float I/O)
# makes it int8. The check in tflite.float_ops counts that CAST as part of the input.

# Calibration samples on which the float-input twin must compute what the model computes.
_PROBE_SAMPLES = 16
# The integer input dtypes given back, as TFLite tensor types.
_TFLITE_TYPES = {tf.int64: schema.TensorType.INT64, tf.int32: schema.TensorType.INT32,
                 tf.int16: schema.TensorType.INT16, tf.int8: schema.TensorType.INT8,
                 tf.uint8: schema.TensorType.UINT8}


def _integer_inputs_as_float(
    model: tf.keras.Model, representative_data: RepresentativeData
) -> Tuple[tf.keras.Model, RepresentativeData, Dict[str, tf.DType]]:
  """The model with its cast-only integer inputs made float, for int8 conversion.

  Returns:
    (model to convert, its calibration data, {input name: integer dtype} to restore), or the
    model and data unchanged and {} when no integer input is only cast to float, or when the
    twin does not compute the same outputs on the calibration samples.
  """
  integer = {name: tf.as_dtype(tensor.dtype) for name, tensor in zip(model.input_names,
                                                                      model.inputs)
             if _only_cast_to_float(model, tensor)}
  if not integer:
    return model, representative_data, {}
  inputs = [
      tf.keras.Input(shape=tensor.shape[1:], batch_size=tensor.shape[0], name=name,
                     dtype=tf.float32 if name in integer else tensor.dtype)
      for name, tensor in zip(model.input_names, model.inputs)
  ]
  as_float = _float_samples(representative_data, integer)
  try:
    # The same layers (and weights) on the new inputs; a cast to float of a float is the identity.
    twin = tf.keras.models.clone_model(model, input_tensors=inputs,
                                       clone_function=lambda layer: layer)
    expected = _call(model, list(itertools.islice(representative_data(), _PROBE_SAMPLES)))
    got = _call(twin, list(itertools.islice(as_float(), _PROBE_SAMPLES)))
    same = all(np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(expected, got))
  except (TypeError, ValueError, tf.errors.OpError) as e:  # A layer that takes no float input.
    logging.warning('int8: the model cannot take integer inputs %s as floats (%s); converting '
                    'them as they are.', sorted(integer), e)
    return model, representative_data, {}
  if not same:
    logging.warning('int8: integer inputs %s give other outputs when fed as floats; converting '
                    'them as they are.', sorted(integer))
    return model, representative_data, {}
  logging.info('int8: integer inputs %s are converted as float inputs, then given back their '
               'dtype in front of a CAST and QUANTIZE.',
               {n: d.name for n, d in integer.items()})
  return twin, as_float, integer


def _only_cast_to_float(model: tf.keras.Model, tensor: tf.Tensor) -> bool:
  """True when every layer of the model that reads the integer input `tensor` casts it to float.

  A cast here: a layer without weights (a `tf.cast` op layer or a Lambda) that reads only integer
  model inputs and gives floats. An Embedding, a one-hot or an integer op reads it otherwise.
  """
  if tf.as_dtype(tensor.dtype) not in _TFLITE_TYPES:
    return False
  model_inputs = {id(t) for t in model.inputs}
  # The model's own nodes: a layer reused by another model (a clone) has nodes there too.
  readers = [node for layer in model.layers for node in layer.inbound_nodes
             if any(t is tensor for t in node.keras_inputs)]
  return bool(readers) and all(
      not node.layer.weights and
      all(id(t) in model_inputs and tf.as_dtype(t.dtype).is_integer for t in node.keras_inputs)
      and all(tf.as_dtype(t.dtype).is_floating for t in tf.nest.flatten(node.outputs))
      for node in readers)


def _float_samples(representative_data: RepresentativeData,
                   names: Mapping[str, tf.DType]) -> RepresentativeData:
  """The calibration samples with the named inputs as float32."""

  def generate():
    for sample in representative_data():
      yield {k: np.asarray(v, np.float32) if k in names else v for k, v in sample.items()}

  return generate


def _call(model: tf.keras.Model, samples: List[Mapping[str, np.ndarray]]) -> List[np.ndarray]:
  """The model's outputs (flat) on the samples stacked into one batch."""
  batch = [np.concatenate([s[name] for s in samples]) for name in model.input_names]
  outputs = model(batch[0] if len(batch) == 1 else batch, training=False)
  return [np.asarray(o) for o in tf.nest.flatten(outputs)]


def _restore_integer_inputs(tflite_model: bytes, integer: Mapping[str, tf.DType]) -> bytes:
  """The TFLite model with the named float-converted inputs given back their integer dtype.

  Each such input tensor (int8 with a scale, or float32 read by a QUANTIZE) gets a new integer
  input tensor of the same name and shape in front of it, read by a CAST to float32, followed for
  an int8 tensor by a QUANTIZE to that tensor's scale. The signature points at the new tensor.
  """
  flat = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite_model))
  subgraph = flat.subgraphs[0]
  keys = {m.name.decode(): m for m in flat.signatureDefs[0].inputs}

  def opcode(code):
    for i, known in enumerate(flat.operatorCodes):
      if max(known.builtinCode, known.deprecatedBuiltinCode) == code:
        return i
    new = schema.OperatorCodeT()
    new.builtinCode = new.deprecatedBuiltinCode = code  # Both below 127: both fields hold it.
    new.version = 1
    flat.operatorCodes.append(new)
    return len(flat.operatorCodes) - 1

  def tensor_like(like, tensor_type, name):
    flat.buffers.append(schema.BufferT())  # An input has an empty buffer of its own.
    new = schema.TensorT()
    new.shape, new.shapeSignature, new.hasRank = like.shape, like.shapeSignature, like.hasRank
    new.type, new.name, new.buffer = tensor_type, name, len(flat.buffers) - 1
    subgraph.tensors.append(new)
    return len(subgraph.tensors) - 1

  def operator(code, source, target):
    new = schema.OperatorT()
    new.opcodeIndex, new.inputs, new.outputs = opcode(code), [source], [target]
    return new

  prepended = []
  for name, dtype in integer.items():
    index = keys[name].tensorIndex
    converted = subgraph.tensors[index]
    tensor_name = converted.name
    value = tensor_like(converted, _TFLITE_TYPES[dtype], tensor_name)
    if converted.type == schema.TensorType.FLOAT32:
      converted.name = tensor_name + b'_float'
      prepended.append(operator(schema.BuiltinOperator.CAST, value, index))
    else:  # int8 I/O: the converter quantized the input; quantize the cast value to its scale.
      converted.name = tensor_name + b'_int8'
      as_float = tensor_like(converted, schema.TensorType.FLOAT32, tensor_name + b'_float')
      prepended += [operator(schema.BuiltinOperator.CAST, value, as_float),
                    operator(schema.BuiltinOperator.QUANTIZE, as_float, index)]
    subgraph.inputs = [value if i == index else i for i in subgraph.inputs]
    keys[name].tensorIndex = value
  subgraph.operators[:0] = prepended
  return bytes(flatbuffer_utils.convert_object_to_bytearray(flat))
