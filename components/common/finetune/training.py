"""Fine-tuning a tf_keras model on any tf.data input. Plain logic: no TFX.

The optimizer executors bind the user's input_fn to the pipeline's Examples and call fine_tune;
the benchmark suite calls it on in-memory data, so both train the same way.
"""
import dataclasses
from typing import Callable, Dict, List, Optional

from absl import logging
import tensorflow as tf
import tf_keras

from components.common.finetune.config import FineTuneConfig


@dataclasses.dataclass
class FineTuneData:
  """The user's input_fn bound to the pipeline's Examples."""
  train: Callable[[], tf.data.Dataset]
  eval: Callable[[], tf.data.Dataset]


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


def fine_tune(model: tf_keras.Model, data: FineTuneData, fine_tuning: FineTuneConfig,
              log_dir: Optional[str], callbacks: Optional[List[tf_keras.callbacks.Callback]] = None,
              name: str = 'fine-tuning', run_eagerly: bool = False) -> Dict[str, float]:
  """Compiles and fits `model` on the train split, validating on eval; returns final metrics.

  Args:
    model: the (wrapped) model to train.
    data: the train and eval datasets.
    fine_tuning: epochs, steps, optimizer, loss.
    log_dir: TensorBoard log directory, or None for no TensorBoard logs.
    callbacks: more callbacks (pruning needs its step counter).
    name: what the progress log lines say.
    run_eagerly: train without tracing the step (some models trace too slowly).

  Returns:
    The last epoch's metrics, for example `val_accuracy`.
  """
  loss = fine_tuning.loss_for(model)
  # Keras picks the accuracy that fits the loss (sparse categorical or binary); a regression
  # reports its mean absolute error instead.
  regression = isinstance(loss, str) and loss in ('mean_squared_error', 'mse', 'mae',
                                                    'mean_absolute_error', 'huber_loss')
  model.compile(optimizer=fine_tuning.make_optimizer(), loss=loss,
                metrics=['mae' if regression else 'accuracy'], run_eagerly=run_eagerly)
  callbacks = [*(callbacks or []), ProgressLogger(fine_tuning.total_steps, name=name)]
  if log_dir:
    callbacks.append(tf_keras.callbacks.TensorBoard(log_dir=log_dir))
  history = model.fit(
      data.train(),
      epochs=fine_tuning.epochs,
      steps_per_epoch=fine_tuning.steps_per_epoch,
      validation_data=data.eval(),
      validation_steps=fine_tuning.eval_steps,
      callbacks=callbacks,
      verbose=0)
  return {k: float(v[-1]) for k, v in history.history.items()}


