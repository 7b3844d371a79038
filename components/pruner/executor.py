"""Pruner executor: prune, fine-tune, strip, verify, record."""
from absl import logging

from components import spec_keys
from components.common import lineage
from components.common.finetune import config as finetune_config
from components.common.finetune import executor as finetune_executor
from components.common.finetune import training
from components.errors import OptimizationError
from components.pruner import pruning


class Executor(finetune_executor.OptimizerExecutor):
  """Runs pruning.prune / fine_tune / pruning.strip and records the sparsity reached."""

  STEP = lineage.PRUNE
  CONFIG_CLASS = pruning.PruningConfig
  DEFAULT_EPOCHS = finetune_config.PRUNING_EPOCHS

  def apply(self, model, data, fine_tuning, config, history, log_dir):
    layers = pruning.prunable_layers(model, config)
    wrapped = pruning.prune(model, config, fine_tuning.total_steps)
    metrics = training.fine_tune(wrapped, data, fine_tuning, log_dir,
                                 pruning.callbacks(log_dir), name='Pruner',
                                 first_complete_epoch=config.first_complete_epoch(fine_tuning))
    stripped = pruning.strip(wrapped)
    batchnorm = training.reestimate_batch_norm_if_better(stripped, data, fine_tuning, 'Pruner')
    per_layer, overall = pruning.sparsity(stripped, layers)
    logging.info('Pruner: sparsity %.4f overall, per layer %s', overall, per_layer)
    if config.structure == pruning.TWO_FOUR:
      broken = pruning.layers_violating_2by4(stripped, layers)
      if broken:
        raise OptimizationError(
            f'Pruner: layers {broken} do not hold the 2:4 pattern after pruning.')
    return finetune_executor.OptimizationResult(stripped, {
        spec_keys.PROP_SPARSITY: overall,
        spec_keys.PROP_SPARSITY_PER_LAYER: per_layer,
        spec_keys.PROP_SPARSITY_STRUCTURE: config.structure,
        spec_keys.PROP_FINETUNE_VAL_ACCURACY: metrics.get('val_accuracy', float('nan')),
        spec_keys.PROP_FINE_TUNING: training.record(metrics, batchnorm, fine_tuning),
    })
