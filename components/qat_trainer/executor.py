"""QATTrainer executor: check the layers, annotate, apply the scheme, fine-tune, record."""
from absl import logging

from components import spec_keys
from components.common import lineage
from components.common.finetune import config as finetune_config
from components.common.finetune import executor as finetune_executor
from components.common.finetune import training
from components.qat_trainer import qat


class Executor(finetune_executor.OptimizerExecutor):
  """Runs qat.plan (before any training) / qat.quantize / fine_tune."""

  STEP = lineage.QAT
  CONFIG_CLASS = qat.QATConfig
  DEFAULT_LEARNING_RATE = finetune_config.QAT_LEARNING_RATE

  def apply(self, model, data, fine_tuning, config, history, log_dir):
    scheme = qat.choose_scheme(config.scheme, history)
    quantized, floats = qat.plan(model, config)
    logging.info('QATTrainer: scheme %s (history %s); float layers %s', scheme, history, floats)
    qat_model = qat.quantize(model, config, scheme, quantized)
    metrics = training.fine_tune(qat_model, data, fine_tuning, log_dir, name='QATTrainer')
    return finetune_executor.OptimizationResult(qat_model, {
        spec_keys.PROP_QAT_SCHEME: scheme,
        spec_keys.PROP_FLOAT_LAYERS: floats,
        spec_keys.PROP_FOLDED_BATCHNORM: qat.folded_batchnorm(model, quantized),
        spec_keys.PROP_FINETUNE_VAL_ACCURACY: metrics.get('val_accuracy', float('nan')),
        spec_keys.PROP_FINE_TUNING: training.record(metrics, None, fine_tuning),
    })
