"""FineTuneConfig and the layer selection the optimizers share."""
import logging

import pytest
import tf_keras

from components import errors
from components.common.finetune import config as config_lib


@pytest.mark.parametrize('kwargs,message', [
    (dict(epochs=0), 'epochs=0 is not accepted; it must be a positive integer'),
    (dict(steps_per_epoch=-1), 'steps_per_epoch=-1 is not accepted'),
    (dict(batch_size=0), 'batch_size=0 is not accepted'),
    (dict(eval_steps=1.5), 'eval_steps=1.5 is not accepted'),
    (dict(learning_rate=0), 'learning_rate=0 is not accepted; it must be a positive finite'),
    (dict(optimizer='adamw'), "optimizer='adamw' is not accepted; accepted: adam, sgd, rmsprop"),
    (dict(loss='no_such_loss'), "loss='no_such_loss' is not a Keras loss name"),
    (dict(train_split=''), "train_split='' is not accepted; it must name a split of the "
     'examples'),
])
def test_fine_tune_config_names_the_bad_value(kwargs, message):
  with pytest.raises(errors.ConfigError, match=message):
    config_lib.FineTuneConfig(**kwargs)


def test_fine_tune_config_makes_its_optimizer_and_counts_its_steps():
  config = config_lib.FineTuneConfig(epochs=3, steps_per_epoch=7, optimizer='sgd',
                                     learning_rate=0.05)

  optimizer = config.make_optimizer()

  assert config.total_steps == 21
  assert isinstance(optimizer, tf_keras.optimizers.SGD)
  assert float(optimizer.learning_rate) == pytest.approx(0.05)


def test_weighted_layers_skip_unweighted_and_matching_layers_and_log_the_skips(caplog):
  inputs = tf_keras.Input((8,), name='pixels')
  x = tf_keras.layers.Dense(4, name='dense_a')(inputs)
  x = tf_keras.layers.ReLU(name='relu')(x)
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(2, name='head')(x))

  with caplog.at_level(logging.INFO):
    chosen = config_lib.weighted_layers(model, '^head$', 'pruning')

  assert [layer.name for layer in chosen] == ['dense_a']
  assert "pruning: skipping layer 'head' (matches skip_layers)" in caplog.text
