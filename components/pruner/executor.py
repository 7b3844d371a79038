"""Pruner executor: prune, fine-tune, strip, verify, record."""
from absl import logging

from components import keys
from components.finetune import executor as finetune_executor
from components.pruner import pruning


class Executor(finetune_executor.OptimizerExecutor):
  """Runs pruning.prune / fine_tune / pruning.strip and records the sparsity reached."""

  STEP = 'prune'

  def optimize(self, model, data, fine_tuning, options, history, log_dir):
    config = pruning.PruningConfig(**options)
    layers = pruning.prunable_layers(model, config)
    wrapped = pruning.prune(model, config, fine_tuning.total_steps)
    metrics = finetune_executor.fine_tune(wrapped, data, fine_tuning, log_dir,
                                          pruning.callbacks(log_dir), name='Pruner')
    stripped = pruning.strip(wrapped)
    per_layer, overall = pruning.sparsity(stripped, layers)
    logging.info('Pruner: sparsity %.4f overall, per layer %s', overall, per_layer)
    if config.structure == pruning.TWO_FOUR:
      broken = pruning.layers_violating_2by4(stripped, layers)
      if broken:
        raise RuntimeError(f'Pruner: layers {broken} do not hold the 2:4 pattern after pruning.')
    return finetune_executor.OptimizationResult(stripped, {
        keys.PROP_SPARSITY: overall,
        keys.PROP_SPARSITY_PER_LAYER: per_layer,
        keys.PROP_SPARSITY_STRUCTURE: config.structure,
        keys.PROP_FINETUNE_VAL_ACCURACY: metrics.get('val_accuracy', float('nan')),
    })
