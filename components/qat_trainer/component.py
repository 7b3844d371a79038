"""QATTrainer component: quantization-aware training on the pipeline's Examples."""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import executor_spec

from components.common.finetune.component import OptimizerComponent
from components.common.finetune.config import FineTuneConfig
from components.qat_trainer import executor
from components.qat_trainer.qat import QATConfig


class QATTrainer(OptimizerComponent):
  """Trains with fake quantization (quantize_model), so int8 conversion uses learned ranges.

  The scheme (default 8-bit, prune-preserving, cluster-preserving or both) is chosen from the
  incoming model's `tfx_edge_history` unless set. Layers tfmot cannot quantize fail the run
  before training unless `QATConfig(allow_float_layers=True)`. The output converts with
  PTQConverter(mode='int8') to an int8-only model. Outputs `optimized_model` with
  `tfx_edge_qat_scheme`, `tfx_edge_float_layers` and `tfx_edge_history` (+ "qat").
  """

  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
  CONFIG_CLASS = QATConfig
  CONFIG_ARGUMENT = 'qat'

  def __init__(self,
               model: types.BaseChannel,
               examples: types.BaseChannel,
               input_fn: Optional[str] = None,
               module_file: Optional[str] = None,
               qat: Optional[QATConfig] = None,
               fine_tuning: Optional[FineTuneConfig] = None,
               record_failure: bool = False):
    """Builds the component; bad values raise ConfigError here, when the pipeline is built.

    Args:
      model: Model channel holding a tf_keras SavedModel.
      examples: Examples with the fine-tuning splits.
      input_fn: import path of the module's input_fn.
      module_file: path of a module file with `input_fn`, instead of input_fn.
      qat: scheme, skipped layers, whether unsupported layers may stay float (default
        QATConfig()).
      fine_tuning: epochs, steps, batch size, learning rate, optimizer.
      record_failure: record a failure of this step on its output and let the run go on with
        the other variants, instead of stopping it (components.common.failures).
    """
    super().__init__(model, examples, input_fn, module_file, qat, fine_tuning,
                     record_failure)
