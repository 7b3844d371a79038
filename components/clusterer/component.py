"""Clusterer component: weight clustering with fine-tuning on the pipeline's Examples."""
import dataclasses
from typing import Optional

from tfx import types
from tfx.dsl.components.base import executor_spec

from components.clusterer import executor
from components.clusterer.clustering import ClusteringConfig
from components.finetune import component as finetune_component
from components.finetune.config import FineTuneConfig


class ClustererSpec(types.ComponentSpec):
  PARAMETERS = finetune_component.PARAMETERS
  INPUTS = finetune_component.INPUTS
  OUTPUTS = finetune_component.OUTPUTS


class Clusterer(finetune_component.OptimizerComponent):
  """Clusters a Keras model's weights (cluster_weights), fine-tunes, and strips the wrappers.

  After a Pruner, sparsity is preserved unless `ClusteringConfig(preserve_sparsity=False)`.
  Outputs `optimized_model` with `tfx_edge_number_of_clusters`,
  `tfx_edge_unique_weights_per_layer` and `tfx_edge_history` (+ "cluster"), and `model_run`.
  """

  SPEC_CLASS = ClustererSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self,
               model: types.BaseChannel,
               examples: types.BaseChannel,
               input_fn: Optional[str] = None,
               module_file: Optional[str] = None,
               clustering: Optional[ClusteringConfig] = None,
               fine_tuning: Optional[FineTuneConfig] = None):
    """Builds the component; bad values raise ValueError here, when the pipeline is built.

    Args:
      model: Model channel holding a tf_keras SavedModel.
      examples: Examples with the fine-tuning splits.
      input_fn: import path of the module's input_fn.
      module_file: path of a module file with `input_fn`, instead of input_fn.
      clustering: clusters, centroid init, per-channel, sparsity preservation, skips.
      fine_tuning: epochs, steps, batch size, learning rate, optimizer.
    """
    clustering = clustering or ClusteringConfig()
    super().__init__(model, examples, input_fn, module_file, fine_tuning,
                     dataclasses.asdict(clustering))
