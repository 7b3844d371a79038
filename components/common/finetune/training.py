"""Fine-tuning a tf_keras model on any tf.data input. Plain logic: no TFX.

The optimizer executors bind the user's input_fn to the pipeline's Examples and call fine_tune;
the benchmark suite calls it on in-memory data, so both train the same way.
"""
import contextlib
import dataclasses
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from absl import logging
import tensorflow as tf
import tf_keras

from components.common.finetune import config
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


def _is_regression(loss: Any) -> bool:
  return isinstance(loss, str) and loss in ('mean_squared_error', 'mse', 'mae',
                                            'mean_absolute_error', 'huber_loss')


def _compile(model: tf_keras.Model, fine_tuning: FineTuneConfig, run_eagerly: bool = False) -> str:
  """Compiles `model` for fine-tuning; returns the eval-split metric to watch (`val_...`)."""
  loss = fine_tuning.loss_for(model)
  # Keras picks the accuracy that fits the loss (sparse categorical or binary); a regression
  # reports its mean absolute error instead.
  metric = 'mae' if _is_regression(loss) else 'accuracy'
  model.compile(optimizer=fine_tuning.make_optimizer(), loss=loss, metrics=[metric],
                run_eagerly=run_eagerly)
  return f'val_{metric}'


def fine_tune(model: tf_keras.Model, data: FineTuneData, fine_tuning: FineTuneConfig,
              log_dir: Optional[str], callbacks: Optional[List[tf_keras.callbacks.Callback]] = None,
              name: str = 'fine-tuning', run_eagerly: bool = False,
              first_complete_epoch: int = 0) -> Dict[str, float]:
  """Compiles and fits `model` on the train split, validating on eval; returns its metrics.

  Args:
    model: the (wrapped) model to train.
    data: the train and eval datasets.
    fine_tuning: epochs, steps, optimizer, loss, learning-rate schedule, best-epoch keeping.
    log_dir: TensorBoard log directory, or None for no TensorBoard logs.
    callbacks: more callbacks (pruning needs its step counter).
    name: what the progress log lines say.
    run_eagerly: train without tracing the step (some models trace too slowly).
    first_complete_epoch: the first epoch (from 0) whose weights hold the whole optimization;
      earlier epochs are never kept nor count towards early stopping (a Pruner's epochs before
      its schedule reaches the target sparsity).

  Returns:
    The metrics of the epoch whose weights the model holds at the end (the best one with
    keep_best_epoch, else the last), for example `val_accuracy`, plus `epochs_run` and
    `kept_epoch` (from 0).
  """
  # A component has set its own learning rate and epochs; plain-logic callers get the defaults.
  fine_tuning = fine_tuning.with_defaults(config.DEFAULT_LEARNING_RATE, config.DEFAULT_EPOCHS)
  monitor = _compile(model, fine_tuning, run_eagerly)
  callbacks = [*(callbacks or []), ProgressLogger(fine_tuning.total_steps, name=name)]
  first = min(first_complete_epoch, fine_tuning.epochs - 1)
  best = None
  if fine_tuning.keep_best_epoch or fine_tuning.early_stopping_patience:
    # Keras' own: restores the best weights at the end of training, also without stopping.
    best = tf_keras.callbacks.EarlyStopping(
        monitor=monitor, mode='auto', start_from_epoch=first,
        patience=fine_tuning.early_stopping_patience or fine_tuning.epochs,
        restore_best_weights=fine_tuning.keep_best_epoch)
    callbacks.append(best)
  if log_dir:
    callbacks.append(tf_keras.callbacks.TensorBoard(log_dir=log_dir))
  with _batchnorm_momentum_at_most(model, fine_tuning.batchnorm_momentum):
    history = model.fit(
        data.train(),
        epochs=fine_tuning.epochs,
        steps_per_epoch=fine_tuning.steps_per_epoch,
        validation_data=data.eval(),
        validation_steps=fine_tuning.eval_steps,
        callbacks=callbacks,
        verbose=0)
  epochs_run = len(history.epoch)
  kept = epochs_run - 1
  if best is not None and fine_tuning.keep_best_epoch and best.best_weights is not None:
    kept = best.best_epoch
  if epochs_run < fine_tuning.epochs:
    logging.info('%s: stopped early after epoch %d of %d (%s did not improve for %d epochs).',
                 name, epochs_run, fine_tuning.epochs, monitor,
                 fine_tuning.early_stopping_patience)
  if kept != epochs_run - 1:
    logging.info('%s: kept the weights of epoch %d (%s %.4f), not of the last (%.4f).', name,
                 kept + 1, monitor, history.history[monitor][kept], history.history[monitor][-1])
  metrics = {k: float(v[kept]) for k, v in history.history.items()}
  metrics.update(epochs_run=epochs_run, kept_epoch=kept)
  return metrics


@contextlib.contextmanager
def _batchnorm_momentum_at_most(model: tf_keras.Model, momentum: Optional[float]):
  """Caps the momentum of the model's trainable BatchNormalization layers while in the block.

  fit() traces its train step on entry, and the traced step reads the momentum then, so the
  model's own value can be given back as soon as training ends.
  """
  norms = [] if momentum is None else [
      layer for layer in _batch_norms(model) if layer.momentum > momentum]
  saved = [layer.momentum for layer in norms]
  if norms:
    logging.info('fine-tuning: BatchNormalization momentum %s -> %s in %d layers while training.',
                 sorted(set(saved)), momentum, len(norms))
  for layer in norms:
    layer.momentum = momentum
  try:
    yield
  finally:
    for layer, value in zip(norms, saved):
      layer.momentum = value


def record(metrics: Dict[str, float], batchnorm: Optional[Dict[str, Any]],
           fine_tuning: FineTuneConfig) -> Dict[str, Any]:
  """What an optimizer records of its fine-tuning (spec_keys.PROP_FINE_TUNING)."""
  return {'epochs': fine_tuning.epochs, 'epochs_run': int(metrics['epochs_run']),
          'kept_epoch': int(metrics['kept_epoch']), 'learning_rate': fine_tuning.learning_rate,
          'batchnorm_reestimation': batchnorm}


def _batch_norms(model: tf_keras.Model) -> List[tf_keras.layers.BatchNormalization]:
  """The BatchNormalization layers that train (a frozen one stays as the user froze it)."""
  return [layer for layer in model.submodules
          if isinstance(layer, tf_keras.layers.BatchNormalization) and layer.trainable]


def reestimate_batch_norm(model: tf_keras.Model, batches: Iterable[Any]) -> int:
  """Sets BatchNorm moving statistics to the mean of the batch statistics over `batches`.

  The weights moved under the statistics during pruning or clustering, and the moving averages
  (momentum 0.99) lag them; a TFLite file folds the moving statistics into its convs, so stale
  ones cost accuracy on the device. Like torch.optim.swa_utils.update_bn, the model runs in
  training mode (dropout included) with the momentum set so that the moving value is the running
  mean of the batch values.

  Args:
    model: a plain (stripped) Keras model.
    batches: input batches (the features only), as the model takes them.

  Returns:
    The number of batches used (0 when the model has no trainable BatchNormalization).
  """
  norms = _batch_norms(model)
  if not norms:
    return 0
  saved = [layer.momentum for layer in norms]
  count = 0
  try:
    for count, features in enumerate(batches, start=1):
      for layer in norms:
        layer.momentum = (count - 1) / count  # 0 for the first batch: it replaces the old value.
      model(features, training=True)
  finally:
    for layer, momentum in zip(norms, saved):
      layer.momentum = momentum
  return count


def reestimate_batch_norm_if_better(model: tf_keras.Model, data: FineTuneData,
                                    fine_tuning: FineTuneConfig,
                                    name: str) -> Optional[Dict[str, Any]]:
  """Re-estimates BatchNorm statistics on training batches, kept only if eval does not worsen.

  Both scores come from the same `eval_steps` eval batches, so the comparison is like for like.

  Returns:
    What was measured (`layers`, `batches`, `before`, `after`, `kept`), or None when off or the
    model has no trainable BatchNormalization.
  """
  norms = _batch_norms(model)
  if not fine_tuning.batchnorm_batches or not norms:
    return None
  evaluation = list(data.eval().take(fine_tuning.eval_steps))
  saved = model.get_weights()
  before, metric = _score(model, fine_tuning, evaluation)
  used = reestimate_batch_norm(model, (batch[0] for batch in
                                       data.train().take(fine_tuning.batchnorm_batches)))
  after, _ = _score(model, fine_tuning, evaluation)
  lower_is_better = metric != 'accuracy'
  kept = after <= before if lower_is_better else after >= before
  if not kept:
    model.set_weights(saved)
  logging.info('%s: BatchNorm statistics of %d layers re-estimated on %d batches: eval %s %.4f '
               '-> %.4f, %s.', name, len(norms), used, metric, before, after,
               'kept' if kept else 'worse, old statistics kept')
  return {'layers': len(norms), 'batches': used, 'metric': metric, 'before': before,
          'after': after, 'kept': kept}


def _score(model: tf_keras.Model, fine_tuning: FineTuneConfig,
           batches: List[Any]) -> Tuple[float, str]:
  """(score, metric name) of `model` on `batches`, with the metric fine-tuning watches."""
  # A copy is compiled, so the saved model keeps no training configuration from this check.
  copy = tf_keras.models.clone_model(model)
  copy.set_weights(model.get_weights())
  metric = _compile(copy, fine_tuning)[len('val_'):]
  scores = {}
  for batch in batches:
    scores = copy.test_on_batch(batch[0], batch[1],
                                sample_weight=batch[2] if len(batch) > 2 else None,
                                reset_metrics=False, return_dict=True)
  return float(scores[metric]), metric
