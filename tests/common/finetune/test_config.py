"""FineTuneConfig and the layer selection the optimizers share."""
import logging

import pytest
import tf_keras

from components import errors
from components.common.finetune import config as config_lib


@pytest.mark.parametrize('kwargs,message', [
    (dict(epochs=0), 'epochs=0 is not accepted; it must be a positive integer'),
    (dict(epochs=2.5), 'epochs=2.5 is not accepted; it must be a positive integer'),
    (dict(steps_per_epoch=-1), 'steps_per_epoch=-1 is not accepted'),
    (dict(batch_size=0), 'batch_size=0 is not accepted'),
    (dict(eval_steps=1.5), 'eval_steps=1.5 is not accepted'),
    (dict(learning_rate=0), 'learning_rate=0 is not accepted; it must be a positive finite'),
    (dict(optimizer='adamw'), "optimizer='adamw' is not accepted; accepted: adam, sgd, rmsprop"),
    (dict(loss='no_such_loss'), "loss='no_such_loss' is not a Keras loss name"),
    (dict(train_split=''), "train_split='' is not accepted; it must name a split of the "
     'examples'),
    (dict(lr_schedule='step'), "lr_schedule='step' is not accepted; accepted: constant, cosine"),
    (dict(warmup_fraction=1.0), r'warmup_fraction=1.0 is not accepted; it must lie in \[0, 1\)'),
    (dict(early_stopping_patience=-1), 'early_stopping_patience=-1 is not accepted; it must be an '
     'integer >= 0'),
    (dict(batchnorm_batches=2.5), 'batchnorm_batches=2.5 is not accepted'),
    (dict(batchnorm_momentum=1.0), r'batchnorm_momentum=1.0 is not accepted; it must lie in '
     r'\[0, 1\)'),
    (dict(learning_rate='fast'), "learning_rate='fast' is not accepted"),
    (dict(keep_best_epoch='yes'), "keep_best_epoch='yes' is not accepted; it must be True or "
     'False'),
])
def test_fine_tune_config_names_the_bad_value(kwargs, message):
  with pytest.raises(errors.ConfigError, match=message):
    config_lib.FineTuneConfig(**kwargs)


def test_fine_tune_config_makes_its_optimizer_and_counts_its_steps():
  config = config_lib.FineTuneConfig(epochs=3, steps_per_epoch=7, optimizer='sgd',
                                     learning_rate=0.05, lr_schedule='constant')

  optimizer = config.make_optimizer()

  assert config.total_steps == 21
  assert isinstance(optimizer, tf_keras.optimizers.SGD)
  assert float(optimizer.learning_rate) == pytest.approx(0.05)


def test_unset_epochs_and_learning_rate_take_the_component_s_own_and_set_ones_stay():
  unset = config_lib.FineTuneConfig(steps_per_epoch=7)
  mine = config_lib.FineTuneConfig(steps_per_epoch=7, epochs=2, learning_rate=0.05)

  assert unset.epochs is None and unset.learning_rate is None
  assert config_lib.FineTuneConfig.from_json(unset.to_json()) == unset
  filled = unset.with_defaults(config_lib.QAT_LEARNING_RATE, config_lib.PRUNING_EPOCHS)
  assert (filled.learning_rate, filled.epochs, filled.total_steps) == (1e-4, 10, 70)
  assert mine.with_defaults(1e-4, 10) == mine
  # Plain-logic callers that never fill them in train DEFAULT_EPOCHS.
  assert unset.total_steps == config_lib.DEFAULT_EPOCHS * 7


def test_the_cosine_schedule_warms_up_then_decays_to_zero_over_the_fine_tuning():
  config = config_lib.FineTuneConfig(epochs=2, steps_per_epoch=50, learning_rate=0.01)
  no_warmup = config_lib.FineTuneConfig(epochs=2, steps_per_epoch=50, learning_rate=0.01,
                                        warmup_fraction=0.0)

  schedule = config.make_optimizer()._learning_rate  # pylint: disable=protected-access

  assert config.warmup_steps == 10
  assert [float(schedule(step)) for step in (0, 5, 10, 55, 100, 150)] == pytest.approx(
      [0.0, 0.005, 0.01, 0.005, 0.0, 0.0], abs=1e-7)
  assert float(no_warmup.learning_rate_schedule()(0)) == pytest.approx(0.01)
  assert float(no_warmup.learning_rate_schedule()(50)) == pytest.approx(0.005)


def test_weighted_layers_skip_unweighted_and_matching_layers_and_log_the_skips(caplog):
  inputs = tf_keras.Input((8,), name='pixels')
  x = tf_keras.layers.Dense(4, name='dense_a')(inputs)
  x = tf_keras.layers.ReLU(name='relu')(x)
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(2, name='head')(x))

  with caplog.at_level(logging.INFO):
    chosen = config_lib.weighted_layers(model, '^head$', 'pruning')

  assert [layer.name for layer in chosen] == ['dense_a']
  assert "pruning: skipping layer 'head' (matches skip_layers)" in caplog.text
