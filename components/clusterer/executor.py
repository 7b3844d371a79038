"""Clusterer executor: cluster, fine-tune, strip, record."""
from absl import logging

from components import keys
from components.clusterer import clustering
from components.finetune import executor as finetune_executor


class Executor(finetune_executor.OptimizerExecutor):
  """Runs clustering.cluster / fine_tune / clustering.strip and records unique weights."""

  STEP = 'cluster'

  def optimize(self, model, data, fine_tuning, options, history, log_dir):
    config = clustering.ClusteringConfig(**options)
    preserve = config.preserve_sparsity
    if preserve is None:
      preserve = 'prune' in history
    layers = clustering.clusterable_layers(model, config)
    wrapped = clustering.cluster(model, config, preserve)
    metrics = finetune_executor.fine_tune(wrapped, data, fine_tuning, log_dir, name='Clusterer')
    stripped = clustering.strip(wrapped)
    unique = clustering.unique_weights(stripped, layers)
    logging.info('Clusterer: %d clusters (preserve_sparsity=%s), unique weights per layer %s',
                 config.number_of_clusters, preserve, unique)
    return finetune_executor.OptimizationResult(stripped, {
        keys.PROP_CLUSTERS: config.number_of_clusters,
        keys.PROP_UNIQUE_WEIGHTS: unique,
        keys.PROP_CLUSTER_PRESERVE_SPARSITY: preserve,
        keys.PROP_FINETUNE_VAL_ACCURACY: metrics.get('val_accuracy', float('nan')),
    })
