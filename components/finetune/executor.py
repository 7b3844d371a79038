"""The executor skeleton every optimizer shares: load, fine-tune on Examples, record, save.

A subclass implements `optimize`; everything else (reloading the model, the user's input_fn,
the data, TensorBoard logs, carrying the model's history forward, saving) happens here once.
"""
import abc
import dataclasses
import json
from typing import Any, Callable, Dict, List, Optional

from absl import logging
import tensorflow as tf
import tf_keras
from tfx import types
from tfx.components.trainer import fn_args_utils
from tfx.components.util import udf_utils
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components import keys
from components import lineage
from components import model_io
from components.finetune import config as config_lib


@dataclasses.dataclass
class FineTuneData:
  """The user's input_fn bound to the pipeline's Examples."""
  train: Callable[[], tf.data.Dataset]
  eval: Callable[[], tf.data.Dataset]


@dataclasses.dataclass
class OptimizationResult:
  """What `optimize` returns: the model to save and the custom properties to record."""
  model: tf_keras.Model
  properties: Dict[str, Any]


class ProgressLogger(tf_keras.callbacks.Callback):
  """Logs fine-tuning progress every `every` steps, so long runs show they are alive."""

  def __init__(self, total_steps: int, every: int = 25, name: str = 'fine-tuning'):
    super().__init__()
    self._total, self._every, self._name, self._step = total_steps, every, name, 0

  def on_train_batch_end(self, batch, logs=None):
    self._step += 1
    if self._step % self._every == 0 or self._step == self._total:
      shown = ' '.join(f'{k}={v:.4f}' for k, v in (logs or {}).items())
      logging.info('%s: step %d/%d %s', self._name, self._step, self._total, shown)


def fine_tune(model: tf_keras.Model, data: FineTuneData, fine_tuning: config_lib.FineTuneConfig,
              log_dir: str, callbacks: Optional[List[tf_keras.callbacks.Callback]] = None,
              name: str = 'fine-tuning') -> Dict[str, float]:
  """Compiles and fits `model` on the train split, validating on eval; returns final metrics."""
  model.compile(optimizer=fine_tuning.make_optimizer(), loss=fine_tuning.loss,
                metrics=['accuracy'])
  history = model.fit(
      data.train(),
      epochs=fine_tuning.epochs,
      steps_per_epoch=fine_tuning.steps_per_epoch,
      validation_data=data.eval(),
      validation_steps=fine_tuning.eval_steps,
      callbacks=list(callbacks or []) + [
          tf_keras.callbacks.TensorBoard(log_dir=log_dir),
          ProgressLogger(fine_tuning.total_steps, name=name)
      ],
      verbose=0)
  return {k: float(v[-1]) for k, v in history.history.items()}


class OptimizerExecutor(base_executor.BaseExecutor, abc.ABC):
  """Shared Do(); subclasses set STEP and implement optimize()."""

  STEP = ''

  @abc.abstractmethod
  def optimize(self, model: tf_keras.Model, data: FineTuneData,
               fine_tuning: config_lib.FineTuneConfig, options: Dict[str, Any],
               history: List[str], log_dir: str) -> OptimizationResult:
    """Applies the optimization, fine-tunes, strips training wrappers, returns the model."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    source = artifact_utils.get_single_instance(input_dict[keys.MODEL_KEY])
    examples = input_dict[keys.EXAMPLES_KEY]
    output = artifact_utils.get_single_instance(output_dict[keys.OPTIMIZED_MODEL_KEY])
    model_run = artifact_utils.get_single_instance(output_dict[keys.MODEL_RUN_KEY])
    fine_tuning = config_lib.FineTuneConfig.from_json(exec_properties[keys.FINE_TUNING_KEY])
    options = json.loads(exec_properties[keys.OPTIMIZATION_KEY])

    model = model_io.load_keras_model(source.uri)
    history = lineage.history_of(source)
    data = self._data(examples, exec_properties, fine_tuning)
    tf_keras.utils.set_random_seed(0)
    result = self.optimize(model, data, fine_tuning, options, history, model_run.uri)

    lineage.carry_properties(source, output)
    lineage.set_properties(output, result.properties)
    output.set_string_custom_property(keys.PROP_HISTORY, json.dumps(history + [self.STEP]))
    model_io.save_keras_model(result.model, model_io.serving_model_dir(output.uri))
    logging.info('%s: saved %s to %s with %s.', type(self).__name__, self.STEP, output.uri,
                 result.properties)

  @staticmethod
  def _data(examples: List[types.Artifact], exec_properties: Dict[str, Any],
            fine_tuning: config_lib.FineTuneConfig) -> FineTuneData:
    splits = artifact_utils.decode_split_names(examples[0].split_names)
    for name in ('train_split', 'eval_split'):
      split = getattr(fine_tuning, name)
      if split not in splits:
        raise ValueError(f'Examples artifact {examples[0].uri} has no split {split!r} '
                         f'(fine_tuning.{name}); its splits are {splits}.')
    input_fn = udf_utils.get_fn(
        {k: exec_properties.get(k) for k in (keys.MODULE_FILE_KEY, keys.INPUT_FN_KEY)},
        keys.INPUT_FN_KEY)
    # TFX's own helper turns Examples into the file patterns and DataAccessor a Trainer gets.
    fn_args = fn_args_utils.get_common_fn_args(
        {keys.EXAMPLES_KEY: examples}, {
            'train_args': json.dumps({'splits': [fine_tuning.train_split]}),
            'eval_args': json.dumps({'splits': [fine_tuning.eval_split]}),
        })
    return FineTuneData(
        train=lambda: input_fn(fn_args.train_files, fn_args.data_accessor,
                               fine_tuning.batch_size),
        eval=lambda: input_fn(fn_args.eval_files, fn_args.data_accessor, fine_tuning.batch_size))
