"""Pruner component: magnitude pruning with fine-tuning on the pipeline's Examples."""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import executor_spec

from components.common.finetune.component import OptimizerComponent
from components.common.finetune.config import FineTuneConfig
from components.pruner import executor
from components.pruner.pruning import PruningConfig


class Pruner(OptimizerComponent):
  """Prunes a Keras model (prune_low_magnitude), fine-tunes it, and strips the wrappers.

  Outputs `optimized_model` (a Model that PTQConverter or another optimizer accepts) with custom
  properties `tfx_edge_sparsity` (overall), `tfx_edge_sparsity_per_layer`,
  `tfx_edge_sparsity_structure` and `tfx_edge_history` (+ "prune"); and `model_run` with the
  TensorBoard logs (including pruning summaries). For 2:4 the executor fails if any pruned
  layer's kernel breaks the pattern.

  Example:
    pruner = Pruner(model=trainer.outputs['model'], examples=example_gen.outputs['examples'],
                    input_fn='pipelines.digits_module.input_fn',
                    pruning=PruningConfig(target_sparsity=0.8),
                    fine_tuning=FineTuneConfig(epochs=2, steps_per_epoch=50))
  """

  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
  CONFIG_CLASS = PruningConfig
  CONFIG_ARGUMENT = 'pruning'

  def __init__(self,
               model: types.BaseChannel,
               examples: types.BaseChannel,
               input_fn: Optional[str] = None,
               module_file: Optional[str] = None,
               pruning: Optional[PruningConfig] = None,
               fine_tuning: Optional[FineTuneConfig] = None,
               record_failure: bool = False):
    """Builds the component; bad values raise ConfigError here, when the pipeline is built.

    Args:
      model: Model channel holding a tf_keras SavedModel (a Trainer's or another optimizer's).
      examples: Examples with the fine-tuning splits.
      input_fn: import path of the module's input_fn (see the module-file contract).
      module_file: path of a module file with `input_fn`, instead of input_fn.
      pruning: what to prune and how (default: 50%, polynomial schedule). Its schedule must fit
        the fine-tuning steps.
      fine_tuning: epochs, steps, batch size, learning rate, optimizer.
      record_failure: record a failure of this step on its output and let the run go on with
        the other variants, instead of stopping it (components.common.failures).
    """
    super().__init__(model, examples, input_fn, module_file, pruning, fine_tuning,
                     record_failure)
