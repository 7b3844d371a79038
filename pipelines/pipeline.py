"""The one create_pipeline(...) that every runner (local, Beam, Kubeflow) uses."""
import os
from typing import List, Optional

from tfx import v1 as tfx
from tfx.proto import example_gen_pb2

from components import PTQConverter
from components import TFLitePusher
from components.gate import accuracy_gate_config
from components.ptq_converter import conversion
from pipelines import data

DEFAULT_RUN_FN = 'pipelines.digits_module.run_fn'

# Node ids, shared with the summary that reads the run back from ML Metadata.
EXAMPLE_GEN = 'ImportExampleGen'
TRAINER = 'Trainer'
PTQ_FLOAT32 = 'ptq_float32'
PTQ_INT8 = 'ptq_int8'
EVALUATOR_INT8 = 'evaluator_int8'
PUSHER_INT8 = 'pusher_int8'


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    push_destination: str,
    *,
    model_name: str = 'digits',
    run_fn: Optional[str] = DEFAULT_RUN_FN,
    module_file: Optional[str] = None,
    train_steps: int = 600,
    eval_steps: int = 10,
    label_key: str = data.LABEL_KEY,
    calibration_samples: int = 300,
    int8_io: str = conversion.IO_NATIVE,
    min_accuracy: float = 0.5,
    max_accuracy_drop: float = 0.01,
    beam_pipeline_args: Optional[List[str]] = None,
    metadata_connection_config=None,
    enable_cache: bool = False,
) -> tfx.dsl.Pipeline:
  """Trainer -> PTQConverter (float32 baseline, int8) -> Evaluator gate -> TFLitePusher.

  Args:
    pipeline_name: name in ML Metadata.
    pipeline_root: where artifacts are written (local path or URI).
    data_root: directory of tf.Example TFRecord files (ImportExampleGen's input_base).
    push_destination: directory the blessed int8 model is published to.
    model_name: name the model is published under.
    run_fn: import path of the Trainer's run_fn (works offline and in containers), or None to
      use `module_file`.
    module_file: path of a Trainer module file, used when run_fn is None.
    train_steps: Trainer training steps.
    eval_steps: Trainer evaluation steps.
    label_key: label feature (stratifies calibration and feeds the accuracy metric).
    calibration_samples: calibration examples sampled by Beam for int8.
    int8_io: input/output type of the int8 model: `native` (int8) or `float32`.
    min_accuracy: the gate's value threshold on int8 accuracy.
    max_accuracy_drop: the gate's change threshold: largest absolute accuracy drop vs float32.
    beam_pipeline_args: arguments for every Beam-powered component (ExampleGen, PTQConverter,
      Evaluator), for example a distributed runner's flags.
    metadata_connection_config: ML Metadata connection; the runner supplies it.
    enable_cache: reuse outputs of unchanged steps from earlier runs.

  Returns:
    The TFX pipeline.
  """
  if (run_fn is None) == (module_file is None):
    raise ValueError(f'give exactly one of run_fn={run_fn!r} and module_file={module_file!r}.')
  for name, value in (('train_steps', train_steps), ('eval_steps', eval_steps)):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ValueError(f'{name}={value!r} is not accepted; it must be a positive integer.')

  example_gen = tfx.components.ImportExampleGen(
      input_base=data_root,
      output_config=example_gen_pb2.Output(
          split_config=example_gen_pb2.SplitConfig(splits=[
              example_gen_pb2.SplitConfig.Split(name='train', hash_buckets=4),
              example_gen_pb2.SplitConfig.Split(name='eval', hash_buckets=1),
          ]))).with_id(EXAMPLE_GEN)
  examples = example_gen.outputs['examples']

  trainer_source = {'run_fn': run_fn} if run_fn else {'module_file': module_file}
  trainer = tfx.components.Trainer(
      examples=examples,
      train_args=tfx.proto.TrainArgs(num_steps=train_steps),
      eval_args=tfx.proto.EvalArgs(num_steps=eval_steps),
      **trainer_source).with_id(TRAINER)

  # TFMA cannot mix TFLite and SavedModel models in one evaluation: the baseline is float32 TFLite.
  ptq_float32 = PTQConverter(
      model=trainer.outputs['model'], mode=conversion.FLOAT32).with_id(PTQ_FLOAT32)
  ptq_int8 = PTQConverter(
      model=trainer.outputs['model'],
      examples=examples,
      mode=conversion.INT8,
      inference_io=int8_io,
      calibration_samples=calibration_samples,
      label_key=label_key).with_id(PTQ_INT8)

  evaluator = tfx.components.Evaluator(
      examples=examples,
      model=ptq_int8.outputs['tflite_model'],
      baseline_model=ptq_float32.outputs['tflite_model'],
      eval_config=accuracy_gate_config(label_key, min_accuracy, max_accuracy_drop)).with_id(
          EVALUATOR_INT8)

  pusher = TFLitePusher(
      model=ptq_int8.outputs['tflite_model'],
      model_blessing=evaluator.outputs['blessing'],
      evaluation=evaluator.outputs['evaluation'],
      push_destination=push_destination,
      model_name=model_name).with_id(PUSHER_INT8)

  return tfx.dsl.Pipeline(
      pipeline_name=pipeline_name,
      pipeline_root=pipeline_root,
      components=[example_gen, trainer, ptq_float32, ptq_int8, evaluator, pusher],
      enable_cache=enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args or [])


def demo_paths(output_dir: str) -> dict:
  """Where the demo keeps its data, artifacts, metadata and pushed models."""
  output_dir = os.path.abspath(output_dir)
  return {
      'data_root': os.path.join(output_dir, 'data'),
      'pipeline_root': os.path.join(output_dir, 'pipeline_root'),
      'metadata_path': os.path.join(output_dir, 'metadata.sqlite'),
      'push_destination': os.path.join(output_dir, 'pushed_models'),
  }
