"""Fine-tuning that recovers: the best epoch kept, early stopping, BatchNorm re-estimation.

Real training of small models on scikit-learn's digits; each test breaks the model on purpose
(weights scrambled at a chosen epoch, stale BatchNorm statistics) and checks what is kept.
"""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from sklearn import datasets

from components.common.finetune import training
from components.common.finetune.config import FineTuneConfig


@pytest.fixture(scope='module')
def digits():
  data = datasets.load_digits()
  x = (data.data / 16.0).astype(np.float32)
  return x[:1400], data.target[:1400], x[1400:], data.target[1400:]


def _data(digits, train_x=None):
  x, y, x_eval, y_eval = digits
  x = x if train_x is None else train_x

  def train():
    return tf.data.Dataset.from_tensor_slices(({'pixels': x}, y)).shuffle(
        len(x), seed=0).repeat().batch(32)

  def evaluation():
    return tf.data.Dataset.from_tensor_slices(({'pixels': x_eval}, y_eval)).repeat().batch(64)
  return training.FineTuneData(train=train, eval=evaluation)


def _model(batch_norm=False):
  tf_keras.utils.set_random_seed(0)
  inputs = tf_keras.Input((64,), name='pixels')
  x = tf_keras.layers.Dense(32, name='hidden')(inputs)
  if batch_norm:
    x = tf_keras.layers.BatchNormalization(name='norm')(x)
  x = tf_keras.layers.Activation('relu')(x)
  return tf_keras.Model(inputs, tf_keras.layers.Dense(10, activation='softmax', name='out')(x))


def _train(model, digits):
  """Trains the model to about 0.9 eval accuracy."""
  training.fine_tune(model, _data(digits), FineTuneConfig(
      epochs=1, steps_per_epoch=150, eval_steps=5, learning_rate=0.01, lr_schedule='constant'),
                     None)


def _accuracy(model, digits):
  _, _, x_eval, y_eval = digits
  return float(np.mean(np.argmax(model.predict({'pixels': x_eval}, verbose=0), 1) == y_eval))


class _Scramble(tf_keras.callbacks.Callback):
  """Replaces the weights with noise at the start of epochs `from_epoch` and later.

  Those epochs then score at chance level on the eval split whatever the schedule does.
  """

  def __init__(self, from_epoch):
    super().__init__()
    self._from = from_epoch

  def on_epoch_begin(self, epoch, logs=None):
    if epoch >= self._from:
      rng = np.random.default_rng(epoch)
      self.model.set_weights([rng.normal(0, 3, w.shape).astype(w.dtype)
                              for w in self.model.get_weights()])


# Learning rate low enough that one epoch cannot recover from the scrambled weights.
_SLOW = dict(steps_per_epoch=25, eval_steps=5, learning_rate=1e-5, lr_schedule='constant')


def test_keeps_the_best_epoch_and_stops_when_the_eval_score_stops_improving(digits):
  model = _model()
  _train(model, digits)
  trained = _accuracy(model, digits)
  config = FineTuneConfig(epochs=6, early_stopping_patience=2, **_SLOW)

  metrics = training.fine_tune(model, _data(digits), config, None, [_Scramble(1)])

  assert trained > 0.8
  # Epoch 0 was the best; epochs 1 and 2 did not improve, so epochs 3-5 never ran.
  assert metrics['epochs_run'] == 3 and metrics['kept_epoch'] == 0
  assert _accuracy(model, digits) == pytest.approx(trained, abs=0.02)
  assert metrics['val_accuracy'] > 0.8


def test_without_keep_best_epoch_the_last_epoch_stays(digits):
  model = _model()
  _train(model, digits)
  config = FineTuneConfig(epochs=2, keep_best_epoch=False, early_stopping_patience=0, **_SLOW)

  metrics = training.fine_tune(model, _data(digits), config, None, [_Scramble(1)])

  assert metrics['epochs_run'] == 2 and metrics['kept_epoch'] == 1
  assert _accuracy(model, digits) < 0.5


def test_epochs_before_the_optimization_is_complete_are_never_kept(digits):
  """A Pruner's early epochs are less sparse: even when they score best, they do not count."""
  model = _model()
  _train(model, digits)
  config = FineTuneConfig(epochs=3, early_stopping_patience=1, **_SLOW)

  metrics = training.fine_tune(model, _data(digits), config, None, [_Scramble(1)],
                               first_complete_epoch=2)

  assert metrics['epochs_run'] == 3 and metrics['kept_epoch'] == 2
  assert _accuracy(model, digits) < 0.5


def test_batchnorm_statistics_are_re_estimated_and_kept_when_the_eval_score_improves(digits):
  model = _model(batch_norm=True)
  config = FineTuneConfig(epochs=1, steps_per_epoch=60, eval_steps=5, learning_rate=0.01,
                          batchnorm_batches=20)
  training.fine_tune(model, _data(digits), config, None)
  trained = _accuracy(model, digits)
  norm = model.get_layer('norm')
  # Stale statistics, as after weights moved under them.
  norm.moving_mean.assign(norm.moving_mean + 3.0)
  norm.moving_variance.assign(norm.moving_variance * 0.01)
  stale = _accuracy(model, digits)

  result = training.reestimate_batch_norm_if_better(model, _data(digits), config, 'test')

  assert stale < trained - 0.2
  assert result['kept'] and result['layers'] == 1 and result['batches'] == 20
  assert result['after'] > result['before'] + 0.2
  assert _accuracy(model, digits) == pytest.approx(trained, abs=0.03)
  assert norm.momentum == 0.99  # Restored after the re-estimation.


def test_batchnorm_statistics_that_score_worse_are_not_kept(digits):
  model = _model(batch_norm=True)
  config = FineTuneConfig(epochs=1, steps_per_epoch=60, eval_steps=5, learning_rate=0.01)
  training.fine_tune(model, _data(digits), config, None)
  before = [w.copy() for w in model.get_weights()]
  # Training batches unlike the data: re-estimated statistics would be wrong.
  hostile = np.random.default_rng(0).uniform(5, 10, digits[0].shape).astype(np.float32)

  result = training.reestimate_batch_norm_if_better(model, _data(digits, hostile), config,
                                                    'test')

  assert not result['kept'] and result['after'] < result['before']
  assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_no_batchnorm_or_zero_batches_means_no_re_estimation(digits):
  config = FineTuneConfig(epochs=1, steps_per_epoch=5, eval_steps=1)
  assert training.reestimate_batch_norm_if_better(_model(), _data(digits), config, 't') is None
  off = FineTuneConfig(epochs=1, steps_per_epoch=5, eval_steps=1, batchnorm_batches=0)
  assert training.reestimate_batch_norm_if_better(_model(True), _data(digits), off, 't') is None


@pytest.mark.parametrize('executor_module,config,expected', [
    ('components.pruner.executor', 'components.pruner.pruning:PruningConfig', (1e-3, 10)),
    ('components.clusterer.executor', 'components.clusterer.clustering:ClusteringConfig',
     (1e-3, 3)),
    ('components.qat_trainer.executor', 'components.qat_trainer.qat:QATConfig', (1e-4, 3)),
])
def test_each_optimizer_fine_tunes_with_its_own_learning_rate_and_epochs_unless_set(
    digits, tmp_path, executor_module, config, expected):
  import importlib
  executor = importlib.import_module(executor_module).Executor()
  module, name = config.split(':')
  options = getattr(importlib.import_module(module), name)()
  used, runs = {}, {}
  for given in ((None, None), (0.02, 2)):
    model = _model()
    _train(model, digits)
    result = executor.optimize(model, _data(digits), FineTuneConfig(
        epochs=given[1], steps_per_epoch=4, eval_steps=1, learning_rate=given[0]), options, [],
                               str(tmp_path))
    record = result.properties['tfx_edge_fine_tuning']
    used[given] = (record['learning_rate'], record['epochs'])
    runs[given] = record['epochs_run']

  assert used == {(None, None): expected, (0.02, 2): (0.02, 2)}
  assert runs[(0.02, 2)] <= 2 and runs[(None, None)] <= expected[1]
  if expected[1] == 10:
    # The Pruner's epochs before its ramp ends (80% of 40 steps: epoch 8) never stop it early:
    # Keras really ran its 10-epoch budget, not 3.
    assert runs[(None, None)] >= 9


def test_batchnorm_momentum_is_capped_while_fine_tuning_and_the_model_keeps_its_own(digits):
  x_train = digits[0]
  error = {}
  for cap in (0.9, None):
    model = _model(batch_norm=True)
    model.get_layer('norm').momentum = 0.999  # MobileNetV2's: a 1,000-step average.
    training.fine_tune(model, _data(digits), FineTuneConfig(
        epochs=1, steps_per_epoch=30, eval_steps=1, learning_rate=1e-5, lr_schedule='constant',
        keep_best_epoch=False, early_stopping_patience=0, batchnorm_momentum=cap), None)
    hidden = tf_keras.Model(model.input, model.get_layer('hidden').output)
    actual = hidden.predict({'pixels': x_train}, verbose=0).mean(axis=0)
    error[cap] = float(np.abs(model.get_layer('norm').moving_mean.numpy() - actual).mean())
    assert model.get_layer('norm').momentum == 0.999

  # 30 steps at 0.999 move the moving mean 3% of the way from its initial 0; at 0.9, 96%.
  assert error[0.9] < error[None] / 5
