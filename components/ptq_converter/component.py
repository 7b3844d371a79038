"""PTQConverter component: its contract and the checks that run when the pipeline is built."""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_beam_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components import keys
from components.ptq_converter import conversion
from components.ptq_converter import executor

DEFAULT_CALIBRATION_SAMPLES = 300


class PTQConverterSpec(types.ComponentSpec):
  """Inputs, outputs and parameters of PTQConverter."""
  PARAMETERS = {
      keys.MODE_KEY: ExecutionParameter(type=str),
      keys.INFERENCE_IO_KEY: ExecutionParameter(type=str),
      keys.CALIBRATION_SPLIT_KEY: ExecutionParameter(type=str),
      keys.CALIBRATION_SAMPLES_KEY: ExecutionParameter(type=int),
      keys.LABEL_KEY: ExecutionParameter(type=str, optional=True),
      keys.SEED_KEY: ExecutionParameter(type=int),
  }
  INPUTS = {
      keys.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      keys.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples, optional=True),
  }
  OUTPUTS = {
      keys.TFLITE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      keys.CALIBRATION_KEY: ChannelParameter(type=standard_artifacts.Examples),
  }


class PTQConverter(base_beam_component.BaseBeamComponent):
  """Converts a Keras model to TFLite with post-training quantization.

  For the calibrated modes (`int8`, `int8_float_fallback`, `int16x8`) a Beam pipeline samples
  `calibration_samples` examples from one split of `examples` (stratified by `label_key` when
  given), stores them as the `calibration` Examples artifact (split `calibration`) and feeds them
  to the converter as the representative dataset, keyed by model input name.

  Outputs:
    tflite_model: a Model artifact holding `Format-Serving/tflite` (where TFMA and the TFX
      Evaluator look) and `model.tflite`, with custom properties `tfx_edge_mode`,
      `tfx_edge_size_bytes`, `tfx_edge_input_dtypes`, `tfx_edge_output_dtypes`,
      `tfx_edge_calibration_count`, `tfx_edge_calibration_sha256` and `tfx_edge_model_sha256`.
    calibration: the sampled examples (empty for modes that need none).

  Example:
    ptq = PTQConverter(model=trainer.outputs['model'], examples=example_gen.outputs['examples'],
                       mode='int8', label_key='label').with_id('ptq_int8')
  """

  SPEC_CLASS = PTQConverterSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self,
               model: types.BaseChannel,
               examples: Optional[types.BaseChannel] = None,
               mode: str = conversion.INT8,
               inference_io: str = conversion.IO_NATIVE,
               calibration_split: str = 'train',
               calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
               label_key: Optional[str] = None,
               seed: int = 0):
    """Builds the component; bad values raise ValueError here, when the pipeline is built.

    Args:
      model: Model channel (a Trainer's output, or an optimizer's) holding a tf_keras SavedModel.
      examples: Examples channel to draw calibration data from; required for calibrated modes.
      mode: one of `float32` (the baseline for TFMA), `dynamic_range`, `float16`, `int8` (full
        integer), `int8_float_fallback` and `int16x8`.
      inference_io: input/output tensor type: `native` (int8 for `int8`, float otherwise),
        `float32`, `int8` (mode `int8` only) or `int16` (mode `int16x8` only).
      calibration_split: split of `examples` to sample from.
      calibration_samples: number of calibration examples (positive).
      label_key: feature to stratify the sample by (the label), or None for a plain sample.
      seed: changes which examples are sampled; the sample is deterministic for a given seed.
    """
    conversion.validate_mode(mode, inference_io)
    if isinstance(calibration_samples, bool) or not isinstance(calibration_samples, int) or (
        calibration_samples <= 0):
      raise ValueError(f'calibration_samples={calibration_samples!r} is not accepted; it must be '
                       'a positive integer.')
    if not calibration_split or not isinstance(calibration_split, str):
      raise ValueError(f'calibration_split={calibration_split!r} must name a split of examples, '
                       'for example "train".')
    if label_key is not None and (not isinstance(label_key, str) or not label_key):
      raise ValueError(f'label_key={label_key!r} must be a feature name or None.')
    if mode in conversion.CALIBRATED_MODES and examples is None:
      raise ValueError(f'mode={mode!r} calibrates activation ranges and needs examples=; pass '
                       'the Examples channel (for example ExampleGen\'s).')
    spec = PTQConverterSpec(
        model=model,
        examples=examples,
        mode=mode,
        inference_io=inference_io,
        calibration_split=calibration_split,
        calibration_samples=calibration_samples,
        label_key=label_key,
        seed=seed,
        tflite_model=types.Channel(type=standard_artifacts.Model),
        calibration=types.Channel(type=standard_artifacts.Examples))
    super().__init__(spec=spec)
