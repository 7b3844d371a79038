"""Clusterer component: weight clustering with fine-tuning on the pipeline's Examples."""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import executor_spec

from components.clusterer import executor
from components.clusterer.clustering import ClusteringConfig
from components.common.finetune.component import OptimizerComponent
from components.common.finetune.config import FineTuneConfig


class Clusterer(OptimizerComponent):
  """Clusters a Keras model's weights (cluster_weights), fine-tunes, and strips the wrappers.

  After a Pruner, sparsity is preserved unless `ClusteringConfig(preserve_sparsity=False)`.
  Outputs `optimized_model` with `tfx_edge_number_of_clusters`,
  `tfx_edge_unique_weights_per_layer` and `tfx_edge_history` (+ "cluster"), and `model_run`.
  """

  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
  CONFIG_CLASS = ClusteringConfig
  CONFIG_ARGUMENT = 'clustering'

  def __init__(self,
               model: types.BaseChannel,
               examples: types.BaseChannel,
               input_fn: Optional[str] = None,
               module_file: Optional[str] = None,
               clustering: Optional[ClusteringConfig] = None,
               fine_tuning: Optional[FineTuneConfig] = None,
               record_failure: bool = False):
    """Builds the component; bad values raise ConfigError here, when the pipeline is built.

    Args:
      model: Model channel holding a tf_keras SavedModel.
      examples: Examples with the fine-tuning splits.
      input_fn: import path of the module's input_fn.
      module_file: path of a module file with `input_fn`, instead of input_fn.
      clustering: clusters, centroid init, per-channel, sparsity preservation, skips (default
        ClusteringConfig()).
      fine_tuning: epochs, steps, batch size, learning rate, optimizer.
      record_failure: record a failure of this step on its output and let the run go on with
        the other variants, instead of stopping it (components.common.failures).
    """
    super().__init__(model, examples, input_fn, module_file, clustering, fine_tuning,
                     record_failure)
