"""Clusterer executor: cluster, fine-tune, strip, record."""
from absl import logging

from components import spec_keys
from components.clusterer import clustering
from components.common import lineage
from components.common.finetune import executor as finetune_executor
from components.common.finetune import training


class Executor(finetune_executor.OptimizerExecutor):
  """Runs clustering.cluster / fine_tune / clustering.strip and records unique weights."""

  STEP = lineage.CLUSTER
  CONFIG_CLASS = clustering.ClusteringConfig

  def apply(self, model, data, fine_tuning, config, history, log_dir):
    preserve = config.preserve_sparsity
    if preserve is None:
      preserve = lineage.PRUNE in history
    layers, too_small = clustering.clusterable_layers(model, config, preserve)
    wrapped = clustering.cluster(model, config, preserve)
    metrics = training.fine_tune(wrapped, data, fine_tuning, log_dir, name='Clusterer')
    stripped = clustering.strip(wrapped)
    batchnorm = training.reestimate_batch_norm_if_better(stripped, data, fine_tuning, 'Clusterer')
    unique = clustering.unique_weights(stripped, layers)
    logging.info('Clusterer: %d clusters (preserve_sparsity=%s), unique weights per layer %s',
                 config.number_of_clusters, preserve, unique)
    return finetune_executor.OptimizationResult(stripped, {
        spec_keys.PROP_CLUSTERS: config.number_of_clusters,
        spec_keys.PROP_UNIQUE_WEIGHTS: unique,
        spec_keys.PROP_CLUSTER_PRESERVE_SPARSITY: preserve,
        spec_keys.PROP_UNCLUSTERED_LAYERS: too_small,
        spec_keys.PROP_FINETUNE_VAL_ACCURACY: metrics.get('val_accuracy', float('nan')),
        spec_keys.PROP_FINE_TUNING: training.record(metrics, batchnorm, fine_tuning),
    })
