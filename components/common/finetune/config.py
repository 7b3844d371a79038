"""Fine-tuning configuration and the checks shared by Pruner, Clusterer and QATTrainer.

Plain logic: no TFX needed.
"""
import dataclasses
import logging
from typing import List, Optional, Union

import tf_keras

from components.common import tasks
from components.common import validation
from components.common.config import JsonConfig
from components.errors import ConfigError

_LOG = logging.getLogger(__name__)

OPTIMIZERS = ('adam', 'sgd', 'rmsprop')
CONSTANT, COSINE = 'constant', 'cosine'
LR_SCHEDULES = (CONSTANT, COSINE)
AUTO_LOSS = 'auto'  # The loss follows the model's output (see FineTuneConfig.loss_for).
SPARSE_CATEGORICAL = 'sparse_categorical_crossentropy'
BINARY_CROSSENTROPY = 'binary_crossentropy'
# Not a Keras loss name: binary cross-entropy on a logit (from_logits=True), for task
# binary_logits, whose output cannot be told from a regression's.
BINARY_CROSSENTROPY_FROM_LOGITS = 'binary_crossentropy_from_logits'
# The learning rates of FineTuneConfig(learning_rate=None), the default. The Pruner and Clusterer
# move weights far from the trained ones (to zero, to a shared value) and need big steps to
# recover; QAT starts from a trained (or pruned and fine-tuned) model that only has to adapt to
# rounding, and big steps undo that training (measured on MobileNetV2, 3 epochs: int8 -5.8
# points against float32 at 1e-3, -0.6 at 1e-4; docs/benchmarks.md).
DEFAULT_LEARNING_RATE = 1e-3
QAT_LEARNING_RATE = 1e-4
# The epochs of FineTuneConfig(epochs=None), the default. The Pruner ramps sparsity up over most
# of its steps and only the epochs after the ramp can recover: on MobileNetV2, 3 epochs left
# pruned 50% at -9.7 points against float32 and 10 epochs at -1.1, while QAT and clustering
# stop improving after 1-3 epochs (early stopping ends them there whatever the budget).
DEFAULT_EPOCHS = 3
PRUNING_EPOCHS = 10
_LOSS_OF_TASK = {tasks.MULTICLASS: SPARSE_CATEGORICAL, tasks.BINARY: BINARY_CROSSENTROPY,
                 tasks.MULTILABEL: BINARY_CROSSENTROPY, tasks.REGRESSION: 'mean_squared_error'}


@dataclasses.dataclass(frozen=True)
class FineTuneConfig(JsonConfig):
  """How an optimizer fine-tunes the model on the pipeline's Examples.

  Attributes:
    epochs: passes of `steps_per_epoch` batches, or None (the default) for the component's own:
      PRUNING_EPOCHS (10) for the Pruner, DEFAULT_EPOCHS (3) for the Clusterer and QATTrainer.
    steps_per_epoch: batches per epoch (the user's input_fn repeats indefinitely).
    batch_size: examples per batch, passed to the user's input_fn.
    learning_rate: the optimizer's (peak) learning rate, or None (the default) for the
      component's own: DEFAULT_LEARNING_RATE (1e-3) for the Pruner and Clusterer,
      QAT_LEARNING_RATE (1e-4) for QATTrainer.
    optimizer: one of OPTIMIZERS.
    loss: a Keras loss name, or `auto` (the default) for the one the model's output calls for:
      sparse categorical cross-entropy for 2+ units (from logits when they are linear), binary
      cross-entropy for sigmoid units (one, or one per label), mean squared error for a linear
      regression output; or `binary_crossentropy_from_logits` for linear units that are binary
      logits (what create_pipeline sets for task='binary_logits' and 'multilabel_logits').
    train_split: split to fine-tune on.
    eval_split: split to validate on after each epoch.
    eval_steps: validation batches per epoch.
    lr_schedule: `cosine` (the default): a linear warm-up from 0 to `learning_rate` over
      `warmup_fraction` of the steps, then a cosine decay to 0; or `constant`.
    warmup_fraction: share of the steps spent warming up, in [0, 1) (cosine only).
    keep_best_epoch: at the end, keep the weights of the epoch with the best eval-split accuracy
      (mean absolute error for a regression) instead of the last epoch's. Only epochs in which
      the optimization is complete count (a Pruner's epochs after its schedule reached the
      target sparsity).
    early_stopping_patience: stop after this many epochs without a better eval-split score
      (counted as for keep_best_epoch); 0 never stops early.
    batchnorm_batches: after pruning or clustering, re-estimate BatchNormalization moving
      statistics from this many training batches (the weights moved under them); the new
      statistics are kept only when the eval split does not score worse. 0 turns it off.
    batchnorm_momentum: while fine-tuning, BatchNormalization layers whose momentum is higher
      use this one (the model keeps its own afterwards), so their moving statistics follow the
      moving weights within an epoch and each epoch's eval score (which picks the epoch kept)
      is measured with current statistics. None keeps the model's momentum (MobileNetV2's
      0.999 averages over about 1,000 steps: longer than the default fine-tuning).
  """
  epochs: Optional[int] = None
  steps_per_epoch: int = 50
  batch_size: int = 32
  learning_rate: Optional[float] = None
  optimizer: str = 'adam'
  loss: str = AUTO_LOSS
  train_split: str = 'train'
  eval_split: str = 'eval'
  eval_steps: int = 10
  lr_schedule: str = COSINE
  warmup_fraction: float = 0.1
  keep_best_epoch: bool = True
  early_stopping_patience: int = 2
  batchnorm_batches: int = 20
  batchnorm_momentum: Optional[float] = 0.9

  def __post_init__(self):
    for name in ('steps_per_epoch', 'batch_size', 'eval_steps'):
      validation.positive_int(name, getattr(self, name))
    if self.epochs is not None:
      validation.positive_int('epochs', self.epochs)
    for name in ('early_stopping_patience', 'batchnorm_batches'):
      validation.non_negative_int(name, getattr(self, name))
    validation.boolean('keep_best_epoch', self.keep_best_epoch)
    if self.lr_schedule not in LR_SCHEDULES:
      raise ConfigError(f'lr_schedule={self.lr_schedule!r} is not accepted; accepted: '
                        f'{", ".join(LR_SCHEDULES)}.')
    validation.fraction('warmup_fraction', self.warmup_fraction, high_open=True)
    if self.batchnorm_momentum is not None:
      validation.fraction('batchnorm_momentum', self.batchnorm_momentum, high_open=True)
    if self.learning_rate is not None:
      validation.positive_number('learning_rate', self.learning_rate)
    if self.optimizer not in OPTIMIZERS:
      raise ConfigError(f'optimizer={self.optimizer!r} is not accepted; accepted: '
                        f'{", ".join(OPTIMIZERS)}.')
    if self.loss not in (AUTO_LOSS, BINARY_CROSSENTROPY_FROM_LOGITS):
      try:
        tf_keras.losses.get(self.loss)
      except (ValueError, TypeError) as e:
        raise ConfigError(f'loss={self.loss!r} is not a Keras loss name, for example '
                          f'"{SPARSE_CATEGORICAL}", nor {AUTO_LOSS!r} or '
                          f'{BINARY_CROSSENTROPY_FROM_LOGITS!r}.') from e
    for name in ('train_split', 'eval_split'):
      validation.non_empty_str(name, getattr(self, name), 'a split of the examples')

  def with_defaults(self, learning_rate: float, epochs: int) -> 'FineTuneConfig':
    """This config, with a component's own learning rate and epochs where it sets none."""
    return dataclasses.replace(
        self, learning_rate=learning_rate if self.learning_rate is None else self.learning_rate,
        epochs=epochs if self.epochs is None else self.epochs)

  @property
  def total_steps(self) -> int:
    # A component fills in its own epochs first (with_defaults); plain-logic callers that leave
    # them unset get DEFAULT_EPOCHS, as learning_rate_schedule gives DEFAULT_LEARNING_RATE.
    return (DEFAULT_EPOCHS if self.epochs is None else self.epochs) * self.steps_per_epoch

  def loss_for(self, model: tf_keras.Model) -> Union[str, tf_keras.losses.Loss]:
    """The loss to compile with: the configured one, or the one the model's output calls for."""
    if self.loss == BINARY_CROSSENTROPY_FROM_LOGITS:
      return tf_keras.losses.BinaryCrossentropy(from_logits=True)
    if self.loss != AUTO_LOSS:
      return self.loss
    output = model_output(model)
    task = tasks.infer(output)
    if task == tasks.MULTICLASS and output.activation == 'linear':
      return tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return _LOSS_OF_TASK[task]

  @property
  def warmup_steps(self) -> int:
    return int(self.total_steps * self.warmup_fraction) if self.lr_schedule == COSINE else 0

  def learning_rate_schedule(self) -> Union[float,
                                            tf_keras.optimizers.schedules.LearningRateSchedule]:
    """The learning rate, or its schedule over `total_steps` optimizer steps."""
    rate = DEFAULT_LEARNING_RATE if self.learning_rate is None else self.learning_rate
    if self.lr_schedule == CONSTANT:
      return rate
    warmup = self.warmup_steps
    # Keras' CosineDecay warms up linearly from initial_learning_rate to warmup_target, then
    # decays from warmup_target; without warm-up it decays from initial_learning_rate.
    return tf_keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else rate,
        decay_steps=max(self.total_steps - warmup, 1),
        warmup_target=rate if warmup else None, warmup_steps=warmup)

  def make_optimizer(self) -> tf_keras.optimizers.Optimizer:
    return {
        'adam': tf_keras.optimizers.Adam,
        'sgd': tf_keras.optimizers.SGD,
        'rmsprop': tf_keras.optimizers.RMSprop,
    }[self.optimizer](learning_rate=self.learning_rate_schedule())


class OptimizationConfig(JsonConfig):
  """Base of PruningConfig, ClusteringConfig and QATConfig (frozen dataclasses)."""

  def check_fits(self, fine_tuning: FineTuneConfig) -> None:
    """Raises ConfigError when this config cannot work within `fine_tuning` (default: it can)."""


def fine_tuning_or_default(value: Optional[FineTuneConfig]) -> FineTuneConfig:
  """The given FineTuneConfig, or the default one for None."""
  if value is None:
    return FineTuneConfig()
  return validation.instance_of('fine_tuning', value, FineTuneConfig)


def weighted_layers(model: tf_keras.Model, skip_layers: Optional[str],
                    what: str) -> List[tf_keras.layers.Layer]:
  """Layers with trainable weights whose names do not match skip_layers (skips are logged)."""
  skip = validation.regex('skip_layers', skip_layers)
  chosen = []
  for layer in model.layers:
    if not layer.trainable_weights:
      continue
    if skip and skip.search(layer.name):
      _LOG.info('%s: skipping layer %r (matches skip_layers)', what, layer.name)
      continue
    chosen.append(layer)
  return chosen


def model_output(model: tf_keras.Model) -> tasks.Output:
  """The single output of a Keras model: units and activation (through tfmot's wrappers).

  Raises:
    ConfigError: the model has several outputs, for which no loss is picked automatically.
  """
  if len(model.outputs) != 1:
    raise ConfigError(f'the model has {len(model.outputs)} outputs {model.output_names}; set '
                      'FineTuneConfig(loss=...) to the loss that fits them.')
  layer = model.get_layer(model.output_names[0])
  while not hasattr(layer, 'activation') and hasattr(layer, 'layer'):
    layer = layer.layer  # A tfmot wrapper (pruning, clustering, QAT) around the real layer.
  activation = getattr(layer, 'activation', None)
  if isinstance(layer, tf_keras.layers.Softmax):
    name = 'softmax'
  else:
    # QAT wraps the activation too; its real function is `.activation` on the wrapper.
    name = getattr(getattr(activation, 'activation', activation), '__name__', 'linear')
  return tasks.Output(units=model.outputs[0].shape[-1], activation=name)
