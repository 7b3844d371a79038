"""The executor skeleton every optimizer shares: load, fine-tune on Examples, record, save.

A subclass sets STEP and CONFIG_CLASS and implements `optimize`; everything else (reloading the
model, the user's input_fn, the data, TensorBoard logs, carrying the model's history forward,
saving) happens here once.
"""
import abc
import dataclasses
import json
import re
from typing import Any, Dict, List, Optional, Type

from absl import logging
import tensorflow as tf
import tf_keras
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components import spec_keys
from components.common import examples_io
from components.common import failures
from components.common import lineage
from components.common import model_io
from components.common import user_code
from components.common.finetune import config as finetune_config
from components.common.finetune.config import BINARY_CROSSENTROPY
from components.common.finetune.config import FineTuneConfig
from components.common.finetune.config import OptimizationConfig
from components.common.finetune.config import SPARSE_CATEGORICAL
from components.common.finetune.training import FineTuneData
from components.errors import DataError
from components.errors import OptimizationError


# The component each step belongs to, as messages and failure reasons name it.
_COMPONENT_NAMES = {lineage.PRUNE: 'Pruner', lineage.CLUSTER: 'Clusterer',
                    lineage.QAT: 'QATTrainer'}


@dataclasses.dataclass
class OptimizationResult:
  """What `optimize` returns: the model to save and the custom properties to record."""
  model: tf_keras.Model
  properties: Dict[str, Any]


class OptimizerExecutor(base_executor.BaseExecutor, abc.ABC):
  """Shared Do(); subclasses set STEP and CONFIG_CLASS and implement optimize()."""

  STEP = ''  # What the model's history records (components.common.lineage).
  CONFIG_CLASS: Type[OptimizationConfig] = OptimizationConfig
  # The learning rate and epochs of FineTuneConfig(learning_rate=None, epochs=None) for this
  # optimizer.
  DEFAULT_LEARNING_RATE = finetune_config.DEFAULT_LEARNING_RATE
  DEFAULT_EPOCHS = finetune_config.DEFAULT_EPOCHS

  @classmethod
  def with_defaults(cls, fine_tuning: FineTuneConfig) -> FineTuneConfig:
    """`fine_tuning` with this optimizer's learning rate and epochs where it sets none."""
    return fine_tuning.with_defaults(cls.DEFAULT_LEARNING_RATE, cls.DEFAULT_EPOCHS)

  def optimize(self, model: tf_keras.Model, data: FineTuneData, fine_tuning: FineTuneConfig,
               config: OptimizationConfig, history: List[str],
               log_dir: str) -> OptimizationResult:
    """Applies the optimization, fine-tunes, strips training wrappers, returns the model.

    Fine-tunes with this optimizer's DEFAULT_LEARNING_RATE and DEFAULT_EPOCHS where
    `fine_tuning` sets none.
    """
    return self.apply(model, data, self.with_defaults(fine_tuning), config, history, log_dir)

  @abc.abstractmethod
  def apply(self, model: tf_keras.Model, data: FineTuneData, fine_tuning: FineTuneConfig,
            config: OptimizationConfig, history: List[str], log_dir: str) -> OptimizationResult:
    """optimize() with the learning rate and epochs set: the work each optimizer does its way.

    Call optimize(), not this: here `fine_tuning.learning_rate` and `epochs` must be set.
    """

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    source = artifact_utils.get_single_instance(input_dict[spec_keys.MODEL_KEY])
    output = artifact_utils.get_single_instance(output_dict[spec_keys.OPTIMIZED_MODEL_KEY])
    record = bool(exec_properties.get(spec_keys.RECORD_FAILURE_KEY))
    name = _COMPONENT_NAMES.get(self.STEP, type(self).__name__)
    upstream = failures.failure_of(source)
    if upstream:
      if not record:
        raise OptimizationError(failures.input_failed_error(name, source.uri, upstream))
      # An earlier step of this variant failed: pass the failure on without work.
      lineage.carry_properties(source, output)
      logging.warning('%s: %s is a failed variant (%s); passed on without work.', name,
                      source.uri, upstream)
      return
    try:
      self._optimize(source, input_dict, output, output_dict, exec_properties)
    except Exception as e:  # pylint: disable=broad-except
      if not record or not failures.recordable(e):
        raise
      # Only this variant fails; the run goes on with the others (components.common.failures).
      reason = failures.describe(name, e)
      lineage.carry_properties(source, output)
      failures.mark_failed(output, reason)
      logging.warning('%s: recorded as a failed variant, the run goes on: %s', name, reason)

  def _optimize(self, source: types.Artifact, input_dict: Dict[str, List[types.Artifact]],
                output: types.Artifact, output_dict: Dict[str, List[types.Artifact]],
                exec_properties: Dict[str, Any]) -> None:
    """Load, fine-tune, record and save: the work whose failure a variant may record."""
    examples = input_dict[spec_keys.EXAMPLES_KEY]
    model_run = artifact_utils.get_single_instance(output_dict[spec_keys.MODEL_RUN_KEY])
    fine_tuning = FineTuneConfig.from_json(exec_properties[spec_keys.FINE_TUNING_KEY])
    config = self.CONFIG_CLASS.from_json(exec_properties[spec_keys.OPTIMIZATION_KEY])

    model = model_io.load_keras_model(source.uri)
    history = lineage.history_of(source)
    data = self._data(examples, exec_properties, fine_tuning, model)
    tf_keras.utils.set_random_seed(0)
    try:
      result = self.optimize(model, data, fine_tuning, config, history, model_run.uri)
    except tf.errors.InvalidArgumentError as e:
      error = _label_error(e, examples[0].uri, _label_range(fine_tuning, model))
      if error is None:
        raise
      raise error from None  # The TF error adds only graph node names to the message.

    lineage.carry_properties(source, output)
    lineage.set_properties(output, result.properties)
    output.set_string_custom_property(spec_keys.PROP_HISTORY, json.dumps(history + [self.STEP]))
    model_io.save_keras_model(result.model, model_io.serving_model_dir(output.uri))
    logging.info('%s: saved %s to %s with %s.', type(self).__name__, self.STEP, output.uri,
                 result.properties)

  @staticmethod
  def _data(examples: List[types.Artifact], exec_properties: Dict[str, Any],
            fine_tuning: FineTuneConfig, model: tf_keras.Model) -> FineTuneData:
    """The user's input_fn on the train and eval splits, checked against the model.

    Everything that can be checked before training is: the splits exist and hold examples, and
    input_fn gives every model input with a dtype and shape it accepts. Labels are checked as
    the batches stream (see _check_labels).
    """
    for name in ('train_split', 'eval_split'):
      split, parameter = getattr(fine_tuning, name), f'fine_tuning.{name}'
      examples_io.split_file_pattern(examples[0], split, parameter)  # Names a missing split.
      examples_io.check_split_not_empty(examples[0], split, parameter)
    bound = user_code.bind_input_fn(exec_properties, examples,
                                    [fine_tuning.train_split, fine_tuning.eval_split])
    labels = _label_range(fine_tuning, model)

    def dataset(split):
      data = bound.dataset(split, fine_tuning.batch_size)
      return _check_labels(data, labels, split) if labels else data

    for split in (fine_tuning.train_split, fine_tuning.eval_split):
      _check_inputs(model, dataset(split).element_spec,
                    f'Examples artifact {examples[0].uri}, split {split!r}')
    return FineTuneData(train=lambda: dataset(fine_tuning.train_split),
                        eval=lambda: dataset(fine_tuning.eval_split))


# Marks the assertion a dataset fails with when a label is outside what the loss accepts.
_BAD_LABEL = 'tfx_edge: labels outside the model classes'


@dataclasses.dataclass(frozen=True)
class _LabelRange:
  """The labels a loss accepts, [0, highest], and what to say about the others."""
  highest: int
  explanation: str


def _label_range(fine_tuning: FineTuneConfig, model: tf_keras.Model) -> Optional[_LabelRange]:
  """The labels the fine-tuning loss accepts, when it reads them as classes; else None."""
  loss = fine_tuning.loss_for(model)
  name = loss if isinstance(loss, str) else type(loss).__name__
  classes = model_io.num_classes(model)
  if name in (SPARSE_CATEGORICAL, 'SparseCategoricalCrossentropy') and classes:
    return _LabelRange(classes - 1, (
        f"outside the model's {classes} classes [0, {classes - 1}] (it has {classes} output "
        'units); fine-tuning stopped at the first batch holding them. Labels must be class '
        'indices into the model output: renumber them (for example from 1-based to 0-based) or '
        'give the model an output unit per class.'))
  if name in (BINARY_CROSSENTROPY, 'BinaryCrossentropy'):
    return _LabelRange(1, (
        f'outside [0, 1], which {BINARY_CROSSENTROPY} on sigmoid outputs (or logits) needs (0 '
        'for the negative class, 1 for the positive, per output unit); fine-tuning stopped at '
        'the first batch holding them. Map the labels to 0/1, or give the model an output unit '
        f'per class and set FineTuneConfig(loss={SPARSE_CATEGORICAL!r}).'))
  return None


def _check_labels(dataset: tf.data.Dataset, labels: _LabelRange,
                  split: str) -> tf.data.Dataset:
  """The dataset, failing at the first batch that has a label outside [0, labels.highest].

  Keras would not stop on such a label: on CPU the loss fails with an error that names neither
  the data nor the model, and on GPU it silently gives NaN (or, for binary cross-entropy, trains
  on nonsense). The check runs in the input pipeline so it costs no extra pass over the data.
  """
  def check(features, label, *rest):
    bad = tf.boolean_mask(label, (label < 0) | (label > labels.highest))
    assertion = tf.debugging.Assert(tf.size(bad) == 0, [_BAD_LABEL, split, bad], summarize=5)
    with tf.control_dependencies([assertion]):
      return (features, tf.identity(label), *rest)

  return dataset.map(check)


def _label_error(error: tf.errors.InvalidArgumentError, examples_uri: str,
                 labels: Optional[_LabelRange]) -> Optional[DataError]:
  """The clear error for a failed _check_labels assertion, or None for any other error."""
  found = re.search(re.escape(_BAD_LABEL) + r'\] \[(.*?)\] \[(.*?)\]', error.message)
  if not found or not labels:
    return None
  split, printed = found.groups()
  values = dict.fromkeys(printed.replace('...', ' ').split())  # TF prints `1 2 3...`.
  return DataError(f'Examples artifact {examples_uri}, split {split!r}: label values '
                   f'{", ".join(values)} are {labels.explanation}')


def _check_inputs(model: tf_keras.Model, element_spec: Any, where: str) -> None:
  """Raises DataError when input_fn's features do not fit the model inputs (before training).

  Args:
    model: the model to fine-tune.
    element_spec: the element_spec of input_fn's dataset, (features, labels[, weights]).
    where: the artifact and split, for the message.
  """
  features = element_spec[0] if isinstance(element_spec, tuple) else element_spec
  if not isinstance(features, dict):
    if len(model.inputs) != 1:
      return  # Keras matches a list of tensors by position and reports a mismatch itself.
    features = {model.input_names[0]: features}
  for name, tensor in zip(model.input_names, model.inputs):
    expected = f'{tf.as_dtype(tensor.dtype).name} of shape {tensor.shape}'
    if name not in features:
      raise DataError(
          f'{where}: input_fn gives no feature {name!r}, which model input {name!r} reads '
          f'(expected {expected}); it gives {sorted(features)}. Model inputs are named after the '
          'features they read: rename the input or the feature.')
    got = features[name]
    wanted_dtype = tf.as_dtype(tensor.dtype)
    # Keras casts one numeric type to another, never a string to a number or back.
    dtype_ok = got.dtype == wanted_dtype or (got.dtype != tf.string and wanted_dtype != tf.string)
    if not dtype_ok or not got.shape.is_compatible_with(tensor.shape):
      raise DataError(
          f'{where}: feature {name!r} from input_fn is {got.dtype.name} of shape {got.shape}, '
          f'but model input {name!r} expects {expected} (None: any size). Make input_fn parse '
          'the feature as the model expects, or fine-tune with Examples made for this model.')
