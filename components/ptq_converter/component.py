"""PTQConverter component: its contract and the checks that run when the pipeline is built."""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_beam_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components import spec_keys
from components.common import modes
from components.common import user_code
from components.common import validation
from components.errors import ConfigError
from components.ptq_converter import auto
from components.ptq_converter import executor
from components.ptq_converter.calibration import DEFAULT_CALIBRATION_SAMPLES


class PTQConverterSpec(types.ComponentSpec):
  """Inputs, outputs and parameters of PTQConverter."""
  PARAMETERS = {
      spec_keys.MODE_KEY: ExecutionParameter(type=str),
      spec_keys.INFERENCE_IO_KEY: ExecutionParameter(type=str),
      spec_keys.CALIBRATION_SPLIT_KEY: ExecutionParameter(type=str),
      spec_keys.CALIBRATION_SAMPLES_KEY: ExecutionParameter(type=int),
      spec_keys.LABEL_KEY: ExecutionParameter(type=str, optional=True),
      spec_keys.SEED_KEY: ExecutionParameter(type=int),
      spec_keys.INPUT_FN_KEY: ExecutionParameter(type=str, optional=True),
      spec_keys.MODULE_FILE_KEY: ExecutionParameter(type=str, optional=True),
      spec_keys.RECORD_FAILURE_KEY: ExecutionParameter(type=int, optional=True),
      spec_keys.INT8_AUTO_KEY: ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      spec_keys.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      spec_keys.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples, optional=True),
  }
  OUTPUTS = {
      spec_keys.TFLITE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      spec_keys.CALIBRATION_KEY: ChannelParameter(type=standard_artifacts.Examples),
  }


class PTQConverter(base_beam_component.BaseBeamComponent):
  """Converts a Keras model to TFLite with post-training quantization.

  For the calibrated modes (`int8`, `int8_float_fallback`, `int16x8`) a Beam pipeline samples
  `calibration_samples` examples from one split of `examples` (stratified by `label_key` when
  given) and stores them as the `calibration` Examples artifact (split `calibration`). The
  converter reads them through the module's `input_fn` when one is given (`input_fn=` or
  `module_file=`, as for the Trainer), so it sees the inputs the model saw in training: missing
  values filled, casts and crosses applied. Without one, each example is parsed by model input
  name. The arrays are the representative dataset, keyed by model input name.

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
               mode: str = modes.INT8,
               inference_io: str = modes.IO_NATIVE,
               calibration_split: str = 'train',
               calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
               label_key: Optional[str] = None,
               seed: int = 0,
               input_fn: Optional[str] = None,
               module_file: Optional[str] = None,
               record_failure: bool = False,
               int8_auto: Optional[auto.AutoConfig] = None):
    """Builds the component; bad values raise ConfigError here, when the pipeline is built.

    Args:
      model: Model channel (a Trainer's output, or an optimizer's) holding a tf_keras SavedModel.
      examples: Examples channel to draw calibration data from; required for calibrated modes.
      mode: one of `float32` (the baseline for TFMA), `dynamic_range`, `float16`, `int8` (full
        integer), `int8_float_fallback`, `int16x8` and `int8_auto` (int8 with the fewest layers
        in float that keep the accuracy).
      inference_io: input/output tensor type: `native` (int8 for `int8`, float otherwise),
        `float32`, `int8` (mode `int8` only) or `int16` (mode `int16x8` only).
      calibration_split: split of `examples` to sample from.
      calibration_samples: number of calibration examples (positive).
      label_key: feature to stratify the sample by (the label), or None for a plain sample.
      seed: changes which examples are sampled; the sample is deterministic for a given seed.
      input_fn: import path of the module's input_fn, which reads the calibration sample (the
        same function the Trainer and the optimizers use); recommended whenever the examples
        can lack a feature or the model's inputs are not the raw features.
      module_file: path of a module file with `input_fn`, instead of input_fn.
      record_failure: for a variant among others: a failed conversion is recorded on the output
        (`tfx_edge_failed`, `tfx_edge_failure_reason`) and the run goes on, and a failed variant
        is passed on without work (components.common.failures). Off for the float32 baseline.
      int8_auto: options of mode `int8_auto` (auto.AutoConfig: max_drop, fallback_budget,
        eval_split, eval_examples, task); defaults when None. That mode measures the accuracy
        on the labelled `eval_split` of `examples` and keeps the fewest layers in float that
        hold it within `max_drop` of float32; it needs `label_key`.
    """
    modes.validate_mode(mode, inference_io)
    validation.positive_int('calibration_samples', calibration_samples)
    validation.non_empty_str('calibration_split', calibration_split,
                             'a split of examples, for example "train"')
    if label_key is not None:
      validation.non_empty_str('label_key', label_key, 'a feature (or be None)')
    user_code.validate_input_fn_source(input_fn, module_file, required=False)
    if mode in modes.CALIBRATED_MODES and examples is None:
      raise ConfigError(f'mode={mode!r} calibrates activation ranges and needs examples=; pass '
                       'the Examples channel (for example ExampleGen\'s).')
    if int8_auto is not None and mode != modes.INT8_AUTO:
      raise ConfigError(f'int8_auto= options apply to mode={modes.INT8_AUTO!r} only, not '
                        f'mode={mode!r}.')
    if int8_auto is not None and not isinstance(int8_auto, auto.AutoConfig):
      raise ConfigError(f'int8_auto={int8_auto!r} is not accepted: give an '
                        'components.ptq_converter.auto.AutoConfig.')
    if mode == modes.INT8_AUTO:
      int8_auto = int8_auto or auto.AutoConfig()
      if label_key is None:
        raise ConfigError(f'mode={modes.INT8_AUTO!r} measures accuracy on labelled examples and '
                          'needs label_key= (the label feature).')
    spec = PTQConverterSpec(
        model=model,
        examples=examples,
        mode=mode,
        inference_io=inference_io,
        calibration_split=calibration_split,
        calibration_samples=calibration_samples,
        label_key=label_key,
        seed=seed,
        input_fn=input_fn,
        module_file=module_file,
        record_failure=int(validation.boolean('record_failure', record_failure)),
        int8_auto=int8_auto.to_json() if int8_auto else None,
        tflite_model=types.Channel(type=standard_artifacts.Model),
        calibration=types.Channel(type=standard_artifacts.Examples))
    super().__init__(spec=spec)
