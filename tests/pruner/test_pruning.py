"""Pruning logic (components/pruner/pruning.py) on a small conv net: sparsity, schedules, 2:4."""
import logging

import numpy as np
import pytest

from components import errors
from components.common.finetune.config import FineTuneConfig
from components.common import tflite
from components.pruner import pruning
from tests.helpers import OPTIMIZATION_STEPS
from tests.helpers import conv_model
from tests.helpers import int8_of
from tests.helpers import prune_briefly


@pytest.mark.parametrize('schedule', ['polynomial', 'constant'])
def test_pruning_reaches_the_target_sparsity(tmp_path, schedule):
  config = pruning.PruningConfig(target_sparsity=0.75, schedule=schedule, begin=0, end=0.5,
                                 frequency=5)

  stripped, layers = prune_briefly(config, tmp_path)

  per_layer, overall = pruning.sparsity(stripped, layers)
  assert layers == ['conv_a', 'conv_b', 'dense_a', 'head']
  assert overall == pytest.approx(0.75, abs=0.02)
  assert all(v == pytest.approx(0.75, abs=0.05) for v in per_layer.values()), per_layer
  assert not any('prune_low_magnitude' in layer.name for layer in stripped.layers)


def test_pruning_polynomial_end_not_on_a_mask_update_still_reaches_the_target(tmp_path):
  # end=13 is not begin + k*frequency: without aligning, the last update would stop short.
  config = pruning.PruningConfig(target_sparsity=0.8, begin=0, end=13, frequency=5)

  stripped, layers = prune_briefly(config, tmp_path)

  assert pruning.sparsity(stripped, layers)[1] == pytest.approx(0.8, abs=0.02)


def test_pruning_skip_regex_leaves_matching_layers_dense(tmp_path):
  config = pruning.PruningConfig(target_sparsity=0.6, skip_layers='^head$')

  stripped, layers = prune_briefly(config, tmp_path)

  assert 'head' not in layers
  assert np.mean(stripped.get_layer('head').get_weights()[0] == 0) < 0.05
  assert pruning.sparsity(stripped, layers)[1] == pytest.approx(0.6, abs=0.02)


def test_two_four_pattern_holds_in_keras_weights_and_in_the_int8_tflite(tmp_path, caplog):
  config = pruning.PruningConfig(structure='2:4', schedule='constant', begin=0, end=-1)

  with caplog.at_level(logging.INFO, logger=pruning.__name__):
    stripped, layers = prune_briefly(config, tmp_path)

  # conv_a has 1 input channel and cannot hold 2:4; it is left dense (and logged).
  assert layers == ['conv_b', 'dense_a', 'head']
  assert ("pruning: layer 'conv_a' (Conv2D, kernel (3, 3, 1, 8)) cannot hold 2:4 sparsity"
          in caplog.text)
  assert not np.any(stripped.get_layer('conv_a').get_weights()[0] == 0)
  assert pruning.layers_violating_2by4(stripped, layers) == []
  assert pruning.sparsity(stripped, layers)[1] == pytest.approx(0.5)
  checked, broken = tflite.weights_violating_2by4(int8_of(stripped))
  assert len(checked) == 3 and broken == []


def test_two_four_checks_detect_an_unstructured_model(tmp_path):
  stripped, layers = prune_briefly(pruning.PruningConfig(target_sparsity=0.5), tmp_path)

  # Every layer that could hold 2:4 breaks it, in Keras and in the TFLite model.
  assert pruning.layers_violating_2by4(stripped, ['conv_b', 'dense_a', 'head']) == [
      'conv_b', 'dense_a', 'head']
  checked, broken = tflite.weights_violating_2by4(int8_of(stripped))
  assert len(checked) == 3 and broken == checked


@pytest.mark.parametrize('kwargs,message', [
    (dict(target_sparsity=0.0), r'target_sparsity=0.0 is not accepted; it must lie in \(0, 1\)'),
    (dict(target_sparsity=1.0), 'target_sparsity=1.0 is not accepted'),
    (dict(schedule='cubic'), "schedule='cubic' is not accepted; accepted: constant, polynomial"),
    (dict(structure='1:4'), "structure='1:4' is not accepted; accepted: unstructured, 2:4"),
    (dict(begin=0.5, end=0.4), 'end=0.4 must come after begin=0.5'),
    (dict(end=1.5), 'end=1.5 is a fraction of fine-tuning and must lie in'),
    (dict(frequency=0), 'frequency=0 must be a positive integer'),
    (dict(skip_layers='(unclosed'), r"skip_layers='\(unclosed' is not a valid regular"),
    (dict(initial_sparsity=0.6, target_sparsity=0.5), r'initial_sparsity=0.6 must lie in \[0'),
])
def test_pruning_config_names_the_bad_value(kwargs, message):
  with pytest.raises(errors.ConfigError, match=message):
    pruning.PruningConfig(**kwargs)


def test_pruning_schedule_that_cannot_fit_the_fine_tuning_is_rejected():
  with pytest.raises(errors.ConfigError, match='pruning begins at step 30 but fine-tuning has only '
                     '20 steps'):
    pruning.PruningConfig(begin=30, end=40).steps(OPTIMIZATION_STEPS)
  with pytest.raises(errors.ConfigError, match=r'pruning would end at step 2, not after its begin '
                     'step 2'):
    pruning.PruningConfig(begin=0.1, end=0.12).steps(OPTIMIZATION_STEPS)


def test_fractions_of_fine_tuning_resolve_to_steps():
  assert pruning.PruningConfig(begin=0.25, end=0.5).steps(OPTIMIZATION_STEPS) == (5, 10)
  assert pruning.PruningConfig(schedule='constant', begin=3, end=-1).steps(20) == (3, -1)


def test_the_first_complete_epoch_is_the_one_that_ends_at_the_target_sparsity():
  fine = FineTuneConfig(epochs=3, steps_per_epoch=10)
  # end 0.6 of 30 steps = 18, aligned down to the last mask update (15), in epoch 1.
  assert pruning.PruningConfig(end=0.6, frequency=5).first_complete_epoch(fine) == 1
  assert pruning.PruningConfig(end=0.3, frequency=3).first_complete_epoch(fine) == 0
  # Constant sparsity is at its target from its first update.
  assert pruning.PruningConfig(schedule='constant', begin=12, end=-1).first_complete_epoch(
      fine) == 1
  # A ramp to the very last step: the last epoch.
  assert pruning.PruningConfig(end=1.0, frequency=5).first_complete_epoch(fine) == 2
  # Epochs left unset count as DEFAULT_EPOCHS (3) in plain logic; the Pruner fills in its 10.
  unset = FineTuneConfig(steps_per_epoch=10)
  assert pruning.PruningConfig(end=1.0, frequency=5).first_complete_epoch(unset) == 2
  assert pruning.PruningConfig(end=1.0, frequency=5).first_complete_epoch(
      unset.with_defaults(1e-3, 10)) == 9


def test_a_model_with_nothing_to_prune_is_refused():
  with pytest.raises(errors.ConfigError, match="pruning: no layer of the model can be pruned with "
                     "this configuration \\(skip_layers='.', structure='unstructured'\\)"):
    pruning.prune(conv_model(), pruning.PruningConfig(skip_layers='.'), OPTIMIZATION_STEPS)


