"""QATTrainer executor: check the layers, annotate, apply the scheme, fine-tune, record."""
from absl import logging

from components import keys
from components.finetune import executor as finetune_executor
from components.qat_trainer import qat


class Executor(finetune_executor.OptimizerExecutor):
  """Runs qat.plan (before any training) / qat.quantize / fine_tune."""

  STEP = 'qat'

  def optimize(self, model, data, fine_tuning, options, history, log_dir):
    config = qat.QATConfig(**options)
    scheme = qat.choose_scheme(config.scheme, history)
    quantized, floats = qat.plan(model, config)
    logging.info('QATTrainer: scheme %s (history %s); float layers %s', scheme, history, floats)
    qat_model = qat.quantize(model, config, scheme, quantized)
    metrics = finetune_executor.fine_tune(qat_model, data, fine_tuning, log_dir, name='QATTrainer')
    return finetune_executor.OptimizationResult(qat_model, {
        keys.PROP_QAT_SCHEME: scheme,
        keys.PROP_FLOAT_LAYERS: floats,
        keys.PROP_FINETUNE_VAL_ACCURACY: metrics.get('val_accuracy', float('nan')),
    })
