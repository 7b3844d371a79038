"""TFMA extractors that feed a TFLite model as a device does: inputs quantized and typed.

TFMA's TFLite extractor quantizes a float feature for an int8 input by truncation (`astype`:
no rounding, no saturation), so a value just below a step lands one step low and a value beyond
the calibrated range wraps around to the other end. A device rounds to the nearest step and
saturates. On the breast-cancer test models this moved the int8 accuracy by one example in 113 to
169, enough to refuse a model that is as accurate as its baseline on the device. The gate must
measure what the device will compute, so its Evaluators take their extractors from here
(`custom_extractors`, the TFX Evaluator's user-function hook, through `module_path`). They
also feed an int32 model input, which TFMA alone cannot (tf.Example holds int64 values only).
"""
from typing import Any

import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.extractors import tflite_predict_extractor

# What the Evaluator's module_path names.
MODULE_PATH = __name__


class DeviceQuantizationDoFn(tflite_predict_extractor.TFLitePredictionDoFn):
  """TFMA's TFLite prediction DoFn: int8 inputs rounded and saturated as on a device, integer
  inputs cast to the input's dtype."""

  def _quantize(self, tensor: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
                dtype: np.dtype) -> np.ndarray:
    if not np.issubdtype(dtype, np.integer):
      return tensor  # A float input: fed as is, as TFMA does.
    if scale.size == 0 or zero_point.size == 0:
      # An integer model input (an id, a count): tf.Example holds int64 only, and LiteRT
      # refuses int64 values for an int32 input, which TFMA would feed unconverted.
      return np.asarray(tensor).astype(dtype)
    limits = np.iinfo(dtype)
    return np.clip(np.round(tensor / scale + zero_point), limits.min, limits.max).astype(dtype)


def custom_extractors(eval_shared_model: Any, eval_config: Any,
                      tensor_adapter_config: Any) -> list:
  """TFMA's default extractors for TFLite models, predicting with DeviceQuantizationDoFn.

  The TFX Evaluator calls this (by name) from the module given as its `module_path`.
  """
  return tfma.default_extractors(
      eval_shared_model=eval_shared_model,
      eval_config=eval_config,
      tensor_adapter_config=tensor_adapter_config,
      custom_predict_extractor=tflite_predict_extractor.TFLitePredictExtractor(
          eval_config=eval_config, eval_shared_model=eval_shared_model,
          do_fn=DeviceQuantizationDoFn))
