"""FineTuneConfig's loss for a binary logit output, which `auto` cannot tell from a regression."""
import tf_keras

from components.common.finetune.config import FineTuneConfig


def test_binary_crossentropy_from_logits_is_accepted_and_made_from_logits():
  inputs = tf_keras.Input((3,))
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(1)(inputs))

  loss = FineTuneConfig(loss='binary_crossentropy_from_logits').loss_for(model)

  assert isinstance(loss, tf_keras.losses.BinaryCrossentropy)
  assert loss.get_config()['from_logits'] is True
  assert FineTuneConfig().loss_for(model) == 'mean_squared_error'  # What `auto` must assume.
