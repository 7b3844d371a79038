"""Pruning logic on tf_keras models (tensorflow-model-optimization). No TFX needed.

Verb pairs as in tfmot: `prune` wraps the layers, `strip` removes the wrappers after fine-tuning.
"""
import dataclasses
import logging
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
# Not re-exported by tfmot's public API, but the library's own helpers for these checks.
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_utils
import tf_keras

from components import spec_keys
from components.common import depthwise
from components.common import validation
from components.common.finetune.config import FineTuneConfig
from components.common.finetune.config import OptimizationConfig
from components.common.finetune.config import weighted_layers
from components.errors import ConfigError

_LOG = logging.getLogger(__name__)

CONSTANT = 'constant'
POLYNOMIAL = 'polynomial'
SCHEDULES = (CONSTANT, POLYNOMIAL)
UNSTRUCTURED = spec_keys.UNSTRUCTURED
TWO_FOUR = spec_keys.TWO_FOUR
STRUCTURES = (UNSTRUCTURED, TWO_FOUR)
# tfmot applies m:n sparsity to these layer types (along the input-channel axis), and to a
# DepthwiseConv2D kernel through OptimizableDepthwiseConv2D when its depth_multiplier is 1 (its
# channels are then the last axis of the TFLite kernel, as for these).
_M_BY_N_LAYERS = (tf_keras.layers.Conv2D, tf_keras.layers.Dense)

Step = Union[int, float]


def _is_fraction(value: Step) -> bool:
  return isinstance(value, float)


@dataclasses.dataclass(frozen=True)
class PruningConfig(OptimizationConfig):
  """What to prune and how fast.

  Attributes:
    target_sparsity: final fraction of zero weights per pruned layer, in (0, 1). Ignored for
      2:4, which is always 50%.
    schedule: `polynomial` (sparsity ramps from `initial_sparsity` to the target between begin
      and end) or `constant` (the target from `begin` on).
    initial_sparsity: polynomial schedule start, in [0, target_sparsity).
    begin: first pruning step: an int step, or a float fraction of fine-tuning in [0, 1).
    end: last pruning step (same forms), after begin; -1 with constant means "to the end".
    frequency: steps between mask updates.
    structure: `unstructured` or `2:4` (two zeros in every four consecutive input-channel
      weights, which sparse kernels accelerate).
    skip_layers: regex; layers whose name matches are not pruned.
  """
  target_sparsity: float = 0.5
  schedule: str = POLYNOMIAL
  initial_sparsity: float = 0.0
  begin: Step = 0.0
  end: Step = 0.8
  frequency: int = 10
  structure: str = UNSTRUCTURED
  skip_layers: Optional[str] = None

  def __post_init__(self):
    t = self.target_sparsity
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1:
      raise ConfigError(f'target_sparsity={t!r} is not accepted; it must lie in (0, 1), for '
                       'example 0.8 for 80% zeros.')
    if self.schedule not in SCHEDULES:
      raise ConfigError(f'schedule={self.schedule!r} is not accepted; accepted: '
                       f'{", ".join(SCHEDULES)}.')
    if not 0 <= self.initial_sparsity < t:
      raise ConfigError(f'initial_sparsity={self.initial_sparsity!r} must lie in [0, '
                       f'target_sparsity={t}).')
    if self.structure not in STRUCTURES:
      raise ConfigError(f'structure={self.structure!r} is not accepted; accepted: '
                       f'{", ".join(STRUCTURES)}.')
    if isinstance(self.frequency, bool) or not isinstance(self.frequency, int) or (
        self.frequency <= 0):
      raise ConfigError(f'frequency={self.frequency!r} must be a positive integer.')
    for name in ('begin', 'end'):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f'{name}={value!r} must be an int step or a float fraction.')
      if _is_fraction(value) and not 0 <= value <= 1:
        raise ConfigError(f'{name}={value!r} is a fraction of fine-tuning and must lie in [0, 1].')
      if not _is_fraction(value) and value < 0 and not (name == 'end' and value == -1):
        raise ConfigError(f'{name}={value!r} must be a step >= 0 (end may be -1).')
    if _is_fraction(self.begin) == _is_fraction(self.end) and self.end != -1 and (
        self.end <= self.begin):
      raise ConfigError(f'end={self.end!r} must come after begin={self.begin!r}.')
    validation.regex('skip_layers', self.skip_layers)

  def check_fits(self, fine_tuning: FineTuneConfig) -> None:
    """Raises ConfigError when the schedule cannot run within the fine-tuning steps."""
    self.steps(fine_tuning.total_steps)

  def steps(self, total_steps: int) -> Tuple[int, int]:
    """(begin_step, end_step) for a fine-tuning run of total_steps."""
    def resolve(value):
      return int(round(value * total_steps)) if _is_fraction(value) else int(value)

    begin, end = resolve(self.begin), resolve(self.end)
    if end != -1 and end <= begin:
      raise ConfigError(f'pruning would end at step {end}, not after its begin step {begin}, in '
                       f'{total_steps} fine-tuning steps; lengthen fine-tuning or move begin/end.')
    if begin >= total_steps:
      raise ConfigError(f'pruning begins at step {begin} but fine-tuning has only {total_steps} '
                       'steps.')
    return begin, end

  def make_schedule(self, total_steps: int) -> tfmot.sparsity.keras.PruningSchedule:
    begin, end = self.steps(total_steps)
    target = 0.5 if self.structure == TWO_FOUR else self.target_sparsity
    if self.schedule == CONSTANT:
      return tfmot.sparsity.keras.ConstantSparsity(target, begin, end, self.frequency)
    end = total_steps if end == -1 else end
    # tfmot updates masks only at begin + k * frequency <= end: align end to such a step, or the
    # last update happens before the ramp reaches the target.
    frequency = min(self.frequency, end - begin)
    end = begin + (end - begin) // frequency * frequency
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=self.initial_sparsity, final_sparsity=target, begin_step=begin,
        end_step=end, frequency=frequency)

  def first_complete_epoch(self, fine_tuning: FineTuneConfig) -> int:
    """The first fine-tuning epoch (from 0) that ends with the masks at the target sparsity.

    The mask update at global step s happens in batch s, in epoch s // steps_per_epoch; a
    constant schedule is at its target from its first update, a polynomial one at its last.
    Fine-tuning never keeps an earlier epoch's weights (they are less sparse).
    """
    schedule = self.make_schedule(fine_tuning.total_steps)
    step = schedule.begin_step if self.schedule == CONSTANT else schedule.end_step
    # total_steps, not epochs: a config whose epochs are unset counts DEFAULT_EPOCHS.
    epochs = fine_tuning.total_steps // fine_tuning.steps_per_epoch
    return min(step // fine_tuning.steps_per_epoch, epochs - 1)


def prunable_layers(model: tf_keras.Model, config: PruningConfig) -> List[str]:
  """Names of the layers `prune` will wrap, after skips and structure limits (logged)."""
  names = []
  for layer in weighted_layers(model, config.skip_layers, 'pruning'):
    registry = prune_registry.PruneRegistry
    if not depthwise.is_depthwise(layer) and (
        not registry.supports(layer) or depthwise.listed_without_weights(registry, layer)):
      _LOG.info('pruning: layer %r (%s) is not prunable; left dense', layer.name,
                type(layer).__name__)
      continue
    if config.structure == TWO_FOUR:
      kernel = layer.get_weights()[0]
      fits = (layer.depth_multiplier == 1 if depthwise.is_depthwise(layer) else
              isinstance(layer, _M_BY_N_LAYERS))
      if not fits or kernel.shape[-2] % 4:
        _LOG.info('pruning: layer %r (%s, kernel %s) cannot hold 2:4 sparsity (needs a Conv2D, '
                  'Dense or DepthwiseConv2D with depth_multiplier 1 whose input channels are a '
                  'multiple of 4); left dense', layer.name, type(layer).__name__, kernel.shape)
        continue
    names.append(layer.name)
  return names


def prune(model: tf_keras.Model, config: PruningConfig, total_steps: int) -> tf_keras.Model:
  """Wraps the prunable layers with prune_low_magnitude; fine-tune the result with callbacks()."""
  chosen = set(prunable_layers(model, config))
  if not chosen:
    raise ConfigError('pruning: no layer of the model can be pruned with this configuration '
                     f'(skip_layers={config.skip_layers!r}, structure={config.structure!r}).')
  schedule = config.make_schedule(total_steps)
  m_by_n = (2, 4) if config.structure == TWO_FOUR else None

  def wrap(layer):
    if layer.name in chosen:
      # A DepthwiseConv2D becomes its twin that tells tfmot to prune the depthwise kernel.
      return tfmot.sparsity.keras.prune_low_magnitude(
          depthwise.optimizable(layer), pruning_schedule=schedule, sparsity_m_by_n=m_by_n)
    return layer  # Reusing the layer keeps its trained weights.

  return tf_keras.models.clone_model(model, clone_function=wrap)


def callbacks(log_dir: str) -> List[tf_keras.callbacks.Callback]:
  """The callbacks pruning needs during fit: the step counter, and TensorBoard summaries."""
  return [tfmot.sparsity.keras.UpdatePruningStep(),
          tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir)]


def strip(model: tf_keras.Model) -> tf_keras.Model:
  """Removes the pruning wrappers, keeping the zeros (depthwise layers plain again)."""
  return depthwise.restore(tfmot.sparsity.keras.strip_pruning(model))


def sparsity(model: tf_keras.Model, layer_names: List[str]) -> Tuple[Dict[str, float], float]:
  """({layer: fraction of zero kernel weights}, overall fraction) over the named layers."""
  per_layer, zeros, total = {}, 0, 0
  for name in layer_names:
    kernel = model.get_layer(name).get_weights()[0]
    per_layer[name] = float(np.mean(kernel == 0))
    zeros += int(np.sum(kernel == 0))
    total += kernel.size
  return per_layer, (zeros / total if total else 0.0)


def layers_violating_2by4(model: tf_keras.Model, layer_names: List[str]) -> List[str]:
  """Named layers whose kernels break 2:4 (TF layout: input channels on axis -2)."""
  return [
      name for name in layer_names if not pruning_utils.is_pruned_m_by_n(
          tf.constant(model.get_layer(name).get_weights()[0]), (2, 4), last_channel='C_OUT')
  ]
