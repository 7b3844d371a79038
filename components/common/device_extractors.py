"""TFMA extractors that feed a TFLite model as a device does, and predict a batch at a time fast.

TFMA's TFLite extractor quantizes a float feature for an int8 input by truncation (`astype`:
no rounding, no saturation), so a value just below a step lands one step low and a value beyond
the calibrated range wraps around to the other end. A device rounds to the nearest step and
saturates. On the breast-cancer test models this moved the int8 accuracy by one example in 113 to
169, enough to refuse a model that is as accurate as its baseline on the device. The gate must
measure what the device will compute, so its Evaluators take their extractors from here
(`custom_extractors`, the TFX Evaluator's user-function hook, through `module_path`). They
also feed an int32 model input, which TFMA alone cannot (tf.Example holds int64 values only).

The gate's DoFn (DevicePredictionDoFn) also runs the model as the DeviceBenchmarker and LiteRT on
a phone do, with LiteRT's default op resolver (XNNPACK on the ops it supports), where TFMA
forces its builtin kernels; and it builds each batch's input with one reshape instead of a
reshape and a copy per example, and resizes and re-allocates the interpreter only when the batch
size changes. docs/accuracy_gate.md ("Fast device predictions") gives the measured speed and
why XNNPACK's int8 results are the ones the gate must use.
"""
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis import constants
from tensorflow_model_analysis.api import types as tfma_types
from tensorflow_model_analysis.extractors import tflite_predict_extractor
from tensorflow_model_analysis.utils import util as tfma_util

from components.common import tflite

# What the Evaluator's module_path names.
MODULE_PATH = __name__
# XNNPACK threads per interpreter. Beam already runs one DoFn per worker (thread or process),
# and a batch of a small model is too little work to split: with 2 threads the digits models
# took 18.8 (float32) and 5.8 (int8) us per example on batches of 256, against 0.15 and 0.13.
NUM_THREADS = 1
# LiteRT's default resolver: builtin ops with the XNNPACK delegate, as LiteRT runs on a device.
DEVICE_OP_RESOLVER = tf.lite.experimental.OpResolverType.AUTO


class DeviceQuantizationDoFn(tflite_predict_extractor.TFLitePredictionDoFn):
  """TFMA's TFLite prediction DoFn: int8 inputs rounded and saturated as on a device, integer
  inputs cast to the input's dtype. TFMA's builtin kernels and per-example input assembly."""

  def _quantize(self, tensor: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
                dtype: np.dtype) -> np.ndarray:
    # Integer inputs too: tf.Example holds int64 only, and LiteRT refuses int64 values for an
    # int32 input, which TFMA would feed unconverted.
    return tflite.device_input(tensor, scale, zero_point, dtype)


class DevicePredictionDoFn(DeviceQuantizationDoFn):
  """DeviceQuantizationDoFn with LiteRT's default kernels (XNNPACK) and whole-batch inputs.

  Inputs are quantized and outputs dequantized exactly as in DeviceQuantizationDoFn, and the
  predictions are stored under the same keys. A batch whose model inputs are not a dense array
  of batch x the input's shape (a missing or ragged feature, bytes) goes through TFMA's own
  per-example assembly with the same interpreters. A model whose batch dimension is fixed to 1
  (shape signature [1, ...]) is invoked one example at a time, never resized.
  """
  # The kernels: LiteRT's default resolver (XNNPACK), as devices and DeviceBenchmarker run the
  # model. Tests set TFMA's BUILTIN_WITHOUT_DEFAULT_DELEGATES to compare with its extractor.
  OP_RESOLVER = DEVICE_OP_RESOLVER

  def setup(self):
    # TFLitePredictionDoFn.setup would build builtin-kernel interpreters; load the models
    # (its parent's setup) and build the device's instead, once per DoFn instance.
    super(tflite_predict_extractor.TFLitePredictionDoFn, self).setup()
    self._interpreters = {}
    self._inputs: Dict[str, List[Dict[str, Any]]] = {}
    self._outputs: Dict[str, List[Dict[str, Any]]] = {}
    self._batch: Dict[str, Optional[int]] = {}
    for name, model in self._loaded_models.items():
      interpreter = self._make_interpreter(
          model_content=model.contents, experimental_op_resolver_type=self.OP_RESOLVER,
          num_threads=NUM_THREADS)
      self._interpreters[name] = interpreter
      self._inputs[name] = interpreter.get_input_details()
      self._outputs[name] = interpreter.get_output_details()
      self._batch[name] = None  # Not allocated yet.

  def _dense_inputs(self, model_name: str, features: Dict[str, Any],
                    batch_size: int) -> Optional[List[np.ndarray]]:
    """Each model input of the batch as one array, or None when a feature is not dense (or
    the model's batch dimension is fixed to more than one example)."""
    arrays = []
    for detail in self._inputs[model_name]:
      values = features.get(self._get_input_name_from_input_detail(detail))
      shape = (batch_size, *detail['shape_signature'][1:])
      fixed_batch = detail['shape_signature'][0]
      if (not isinstance(values, np.ndarray) or values.dtype == object or -1 in shape[1:] or
          fixed_batch not in (-1, 1) or values.size != np.prod(shape)):
        return None
      arrays.append(values.reshape(shape))
    return arrays

  def _resize(self, model_name: str, batch_size: int) -> None:
    if self._batch[model_name] == batch_size:
      return
    interpreter = self._interpreters[model_name]
    for detail in self._inputs[model_name]:
      interpreter.resize_tensor_input(detail['index'], [batch_size, *detail['shape'][1:]],
                                      strict=True)
    interpreter.allocate_tensors()
    self._batch[model_name] = batch_size

  def _predict(self, model_name: str, arrays: List[np.ndarray]) -> Dict[str, np.ndarray]:
    """{output name: dequantized output} of the model on a batch of model inputs."""
    interpreter = self._interpreters[model_name]
    details = self._inputs[model_name]
    batch_size = arrays[0].shape[0]
    quantized = [self._quantize(array, d['quantization_parameters']['scales'],
                                d['quantization_parameters']['zero_points'], d['dtype'])
                 for d, array in zip(details, arrays)]
    resizable = all(d['shape_signature'][0] == -1 for d in details)
    # A fixed batch dimension (a model converted with batch 1): one example per invocation.
    chunks = [(0, batch_size)] if resizable else [(i, i + 1) for i in range(batch_size)]
    self._resize(model_name, batch_size if resizable else int(details[0]['shape'][0]))
    parts = {d['name']: [] for d in self._outputs[model_name]}
    for start, stop in chunks:
      for d, array in zip(details, quantized):
        interpreter.set_tensor(d['index'], array[start:stop])
      interpreter.invoke()
      for d in self._outputs[model_name]:
        parts[d['name']].append(interpreter.get_tensor(d['index']))
    outputs = {}
    for d in self._outputs[model_name]:
      raw = parts[d['name']][0] if len(parts[d['name']]) == 1 else np.concatenate(
          parts[d['name']])
      params = d['quantization_parameters']
      outputs[d['name']] = self._post_process_result(
          self._dequantize(raw, params['scales'], params['zero_points']))
    return outputs

  def _batch_reducible_process(self, element: tfma_types.Extracts) -> List[tfma_types.Extracts]:
    features = element[constants.FEATURES_KEY]
    batch_size = tfma_util.batch_size(features)
    specs = self._eval_config.model_specs
    predictions = {}
    for spec in specs:
      model_name = spec.name if len(specs) > 1 else ''
      if model_name not in self._loaded_models:
        raise ValueError(f'model for "{spec.name}" not found: eval_config={self._eval_config}')
      arrays = self._dense_inputs(model_name, features, batch_size)
      if arrays is None:
        # TFMA's per-example assembly (defaults for missing values) resizes the interpreters
        # on its own: forget the sizes set here.
        self._batch = dict.fromkeys(self._batch)
        return super()._batch_reducible_process(element)
      outputs = self._predict(model_name, arrays)
      for value in outputs.values():
        if tfma_util.batch_size(value) != batch_size:
          raise ValueError('Did not get the expected number of results.')
      predictions[spec.name] = next(iter(outputs.values())) if len(outputs) == 1 else outputs
    result = dict(element)
    if len(specs) == 1:
      result[constants.PREDICTIONS_KEY] = next(iter(predictions.values()))
    else:
      result[constants.PREDICTIONS_KEY] = dict(element.get(constants.PREDICTIONS_KEY) or {},
                                               **predictions)
    return [result]


def extractors_with(eval_shared_model: Any, eval_config: Any, tensor_adapter_config: Any,
                    do_fn: Any) -> list:
  """TFMA's default extractors for TFLite models, predicting with do_fn (a prediction DoFn)."""
  return tfma.default_extractors(
      eval_shared_model=eval_shared_model,
      eval_config=eval_config,
      tensor_adapter_config=tensor_adapter_config,
      custom_predict_extractor=tflite_predict_extractor.TFLitePredictExtractor(
          eval_config=eval_config, eval_shared_model=eval_shared_model, do_fn=do_fn))


def custom_extractors(eval_shared_model: Any, eval_config: Any,
                      tensor_adapter_config: Any) -> list:
  """TFMA's default extractors for TFLite models, predicting with DevicePredictionDoFn.

  The TFX Evaluator calls this (by name) from the module given as its `module_path`.
  """
  return extractors_with(eval_shared_model, eval_config, tensor_adapter_config,
                         DevicePredictionDoFn)


def reference_extractors(eval_shared_model: Any, eval_config: Any,
                         tensor_adapter_config: Any) -> list:
  """The gate before DevicePredictionDoFn: TFMA's builtin kernels, inputs rounded as on a
  device (DeviceQuantizationDoFn). Kept to compare against (tests, benchmarks/data_scale.py)."""
  return extractors_with(eval_shared_model, eval_config, tensor_adapter_config,
                         DeviceQuantizationDoFn)
