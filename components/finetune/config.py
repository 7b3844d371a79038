"""Fine-tuning configuration and the checks shared by Pruner, Clusterer and QATTrainer.

Plain logic: no TFX needed.
"""
import dataclasses
import json
import logging
import re
from typing import List, Optional

import tf_keras

_LOG = logging.getLogger(__name__)

OPTIMIZERS = ('adam', 'sgd', 'rmsprop')
_IMPORT_PATH_RE = re.compile(r'^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$')


def _positive_int(name, value):
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(f'{name}={value!r} is not accepted; it must be a positive integer.')


def _positive_float(name, value):
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or (
      value != value or value == float('inf')):
    raise ValueError(f'{name}={value!r} is not accepted; it must be a positive finite number.')


@dataclasses.dataclass(frozen=True)
class FineTuneConfig:
  """How an optimizer fine-tunes the model on the pipeline's Examples.

  Attributes:
    epochs: passes of `steps_per_epoch` batches.
    steps_per_epoch: batches per epoch (the user's input_fn repeats indefinitely).
    batch_size: examples per batch, passed to the user's input_fn.
    learning_rate: optimizer learning rate.
    optimizer: one of OPTIMIZERS.
    loss: a Keras loss name, for example `sparse_categorical_crossentropy`.
    train_split: split to fine-tune on.
    eval_split: split to validate on after each epoch.
    eval_steps: validation batches per epoch.
  """
  epochs: int = 3
  steps_per_epoch: int = 50
  batch_size: int = 32
  learning_rate: float = 1e-3
  optimizer: str = 'adam'
  loss: str = 'sparse_categorical_crossentropy'
  train_split: str = 'train'
  eval_split: str = 'eval'
  eval_steps: int = 10

  def __post_init__(self):
    for name in ('epochs', 'steps_per_epoch', 'batch_size', 'eval_steps'):
      _positive_int(name, getattr(self, name))
    _positive_float('learning_rate', self.learning_rate)
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f'optimizer={self.optimizer!r} is not accepted; accepted: '
                       f'{", ".join(OPTIMIZERS)}.')
    try:
      tf_keras.losses.get(self.loss)
    except (ValueError, TypeError) as e:
      raise ValueError(f'loss={self.loss!r} is not a Keras loss name, for example '
                       '"sparse_categorical_crossentropy".') from e
    for name in ('train_split', 'eval_split'):
      if not isinstance(getattr(self, name), str) or not getattr(self, name):
        raise ValueError(f'{name}={getattr(self, name)!r} must name a split of examples.')

  @property
  def total_steps(self) -> int:
    return self.epochs * self.steps_per_epoch

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'FineTuneConfig':
    return cls(**json.loads(text))

  def make_optimizer(self) -> tf_keras.optimizers.Optimizer:
    return {
        'adam': tf_keras.optimizers.Adam,
        'sgd': tf_keras.optimizers.SGD,
        'rmsprop': tf_keras.optimizers.RMSprop,
    }[self.optimizer](learning_rate=self.learning_rate)


def fine_tuning_or_default(value: Optional[FineTuneConfig]) -> FineTuneConfig:
  """The given FineTuneConfig, or the default one for None."""
  if value is None:
    return FineTuneConfig()
  if not isinstance(value, FineTuneConfig):
    raise ValueError(f'fine_tuning={value!r} must be a FineTuneConfig.')
  return value


def validate_input_fn_source(input_fn: Optional[str], module_file: Optional[str]) -> None:
  """Exactly one of an import path (`pkg.module.input_fn`) or a module file must be given."""
  if (input_fn is None) == (module_file is None):
    raise ValueError(f'give exactly one of input_fn={input_fn!r} (an import path such as '
                     '"pipelines.digits_module.input_fn") and module_file={module_file!r}.')
  if input_fn is not None and not _IMPORT_PATH_RE.match(input_fn):
    raise ValueError(f'input_fn={input_fn!r} is not an import path like '
                     '"my_package.my_module.input_fn".')


def compile_skip_regex(name: str, pattern: Optional[str]) -> Optional[re.Pattern]:
  """Compiles a layer-name regex, naming the parameter when it is malformed."""
  if pattern is None:
    return None
  try:
    return re.compile(pattern)
  except (re.error, TypeError) as e:
    raise ValueError(f'{name}={pattern!r} is not a valid regular expression: {e}.') from e


def weighted_layers(model: tf_keras.Model, skip_layers: Optional[str],
                    what: str) -> List[tf_keras.layers.Layer]:
  """Layers with trainable weights whose names do not match skip_layers (skips are logged)."""
  skip = compile_skip_regex('skip_layers', skip_layers)
  chosen = []
  for layer in model.layers:
    if not layer.trainable_weights:
      continue
    if skip and skip.search(layer.name):
      _LOG.info('%s: skipping layer %r (matches skip_layers)', what, layer.name)
      continue
    chosen.append(layer)
  return chosen
