"""Fine-tuning recovery: the optimizers' former settings against FineTuneConfig's defaults.

    TF_USE_LEGACY_KERAS=1 .venv/bin/python -m benchmarks.fine_tuning          # full run
    ... -m benchmarks.fine_tuning --quick --models digits_cnn                  # smoke run

Each model is trained once on real data that ships with scikit-learn (the 8x8 digits; for
MobileNetV2 upsampled to 32x32 RGB). Then every optimizer (Pruner 50% and 80%, Clusterer 16,
QATTrainer, and PCQAT: Pruner 50% then QATTrainer, which preserves the sparsity) fine-tunes a
copy of the same trained model twice through its own executor code (`Executor.optimize`, as in
a pipeline): once with the settings the project had before
(3 epochs, 1e-3 constant learning rate, the last epoch kept, the model's BatchNorm momentum, no
BatchNorm re-estimation) and once with FineTuneConfig's defaults (each component's own epochs,
10 for the Pruner and 3 for the others, and learning rate, 1e-4 for QAT, with warm-up + cosine;
best epoch kept with early stopping; BatchNorm momentum at most 0.9 while training, statistics
re-estimated after pruning and clustering). Both results
are converted to int8 TFLite and scored on the held-out images against the float32 TFLite of the
trained model, side by side in one run: the accuracy points each setting loses are what the
report compares. A variant that fails is recorded with its reason, and the run goes on.
`--longer-epochs N` adds a third run with the defaults over N epochs: what a bigger fine-tuning
budget recovers.
"""
import argparse
import dataclasses
import datetime
import json
import logging
import os
import tempfile
import time
from typing import Any, Callable, Dict, Optional, Sequence

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')  # tfmot needs Keras 2; set before TF loads.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import logging as absl_logging  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from benchmarks import model_zoo  # noqa: E402
from benchmarks import zoo_models  # noqa: E402
from components import FineTuneConfig  # noqa: E402
from components import spec_keys  # noqa: E402
from pipelines import digits_module  # noqa: E402
from components.benchmarker import measure  # noqa: E402
from components.clusterer import clustering  # noqa: E402
from components.clusterer import executor as clusterer_executor  # noqa: E402
from components.common import lineage  # noqa: E402
from components.common import modes  # noqa: E402
from components.common import tflite  # noqa: E402
from components.common.finetune import training  # noqa: E402
from components.ptq_converter import calibration  # noqa: E402
from components.ptq_converter import conversion  # noqa: E402
from components.pruner import executor as pruner_executor  # noqa: E402
from components.pruner import pruning  # noqa: E402
from components.qat_trainer import executor as qat_executor  # noqa: E402
from components.qat_trainer import qat  # noqa: E402

_LOG = logging.getLogger('fine_tuning')

# What FineTuneConfig did before it had a schedule, best-epoch keeping, BatchNorm re-estimation
# and momentum capping, and each component's own learning rate and epochs.
FORMER = dict(lr_schedule='constant', keep_best_epoch=False, early_stopping_patience=0,
              batchnorm_batches=0, batchnorm_momentum=None, learning_rate=1e-3, epochs=3)

# The optimizers' steps: (the executor, its config, the lineage step it adds to the history).
_PRUNE50 = (pruner_executor.Executor, pruning.PruningConfig(target_sparsity=0.5, end=0.6),
            lineage.PRUNE)
_QAT = (qat_executor.Executor, qat.QATConfig(), lineage.QAT)
# Variant key -> (label, its steps in order, as the pipeline chains them). PCQAT is the pruned
# model fine-tuned again with QAT's prune-preserving scheme (chosen from the history).
VARIANTS = {
    'pruned50': ('pruned 50% + int8', (_PRUNE50,)),
    'pruned80': ('pruned 80% + int8', ((pruner_executor.Executor, pruning.PruningConfig(
        target_sparsity=0.8, end=0.6), lineage.PRUNE),)),
    'clustered16': ('clustered 16 + int8', ((clusterer_executor.Executor,
                                             clustering.ClusteringConfig(number_of_clusters=16),
                                             lineage.CLUSTER),)),
    'qat': ('QAT int8', (_QAT,)),
    'pcqat': ('pruned 50% + PCQAT int8', (_PRUNE50, _QAT)),
}
# Variants also converted with one int8 scale per weight tensor (see benchmark_model).
_PRUNED = ('pruned50', 'pruned80')


@dataclasses.dataclass(frozen=True)
class BenchModel:
  """A model to train and the data it learns."""
  description: str
  build: Callable[[], tf_keras.Model]
  shape: Callable[[np.ndarray], np.ndarray]  # The digits' 64 pixels in [0, 1] -> model input.
  train_epochs: int
  learning_rate: float


def _mobilenet_v2() -> tf_keras.Model:
  return tf_keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
                                           classes=10)


def _upsample(pixels: np.ndarray) -> np.ndarray:
  """8x8 in [0, 1] -> 32x32x3 in [-1, 1] (nearest neighbour, grey in every channel)."""
  images = pixels.reshape(-1, 8, 8, 1).repeat(4, axis=1).repeat(4, axis=2).repeat(3, axis=3)
  return (images * 2.0 - 1.0).astype(np.float32)


MODELS = {
    'mobilenet_v2': BenchModel(
        'MobileNetV2 (alpha 0.35, 32x32x3: Conv+BN+ReLU6, depthwise, residual Add; '
        'tf_keras.applications, weights=None) on the digits upsampled to 32x32',
        _mobilenet_v2, _upsample, train_epochs=40, learning_rate=2e-3),
    'digits_cnn': BenchModel(
        "The project's digits CNN (pipelines/digits_module.py) on the 8x8 digits",
        digits_module.build_model, lambda pixels: pixels.astype(np.float32),
        train_epochs=8, learning_rate=2e-3),
}


@dataclasses.dataclass
class Data:
  """The digits split as the zoo splits them (first 1,437 train, last 360 held out)."""
  x_train: np.ndarray
  y_train: np.ndarray
  x_eval: np.ndarray
  y_eval: np.ndarray


def load_data(shape: Callable[[np.ndarray], np.ndarray]) -> Data:
  digits = zoo_models.digits_data_set(0, 0, 360)
  return Data(shape(digits.x_train), digits.y_train, shape(digits.x_eval), digits.y_eval)


def fine_tune_data(data: Data, input_name: str, batch_size: int) -> training.FineTuneData:
  """In-memory data as a user's input_fn gives it: shuffled, repeating batches."""
  def train():
    return tf.data.Dataset.from_tensor_slices(({input_name: data.x_train}, data.y_train)).shuffle(
        len(data.y_train), seed=0).repeat().batch(batch_size)

  def evaluation():
    return tf.data.Dataset.from_tensor_slices(({input_name: data.x_eval}, data.y_eval)).repeat(
        ).batch(batch_size)
  return training.FineTuneData(train=train, eval=evaluation)


def _copy(model: tf_keras.Model) -> tf_keras.Model:
  copy = tf_keras.models.clone_model(model)
  copy.set_weights(model.get_weights())
  return copy


def _int8(model: tf_keras.Model, data: Data, per_tensor_weights: bool = False) -> bytes:
  representative = calibration.representative_dataset(
      {model.input_names[0]: data.x_train[:200]})
  return conversion.convert(model, modes.INT8, representative,
                            per_tensor_weights=per_tensor_weights)


def _optimize(steps, model: tf_keras.Model, feed: training.FineTuneData,
              fine_tuning: FineTuneConfig):
  """Runs a variant's steps in order, each through its executor; returns the last result."""
  history, result = [], None
  for executor_class, config, step in steps:
    with tempfile.TemporaryDirectory() as log_dir:
      result = executor_class().optimize(model, feed, fine_tuning, config, list(history),
                                         log_dir)
    model = result.model
    history.append(step)
  return result


def benchmark_model(name: str, bench: BenchModel, variants: Sequence[str], quick: bool,
                    clock: Callable[[], float], longer_epochs: Optional[int] = None
                    ) -> Dict[str, Any]:
  """Trains the model, then runs each variant with the former settings and the defaults (and
  the defaults with `longer_epochs` epochs, when given)."""
  tf_keras.backend.clear_session()
  tf_keras.utils.set_random_seed(0)
  data = load_data(bench.shape)
  trained = bench.build()
  feed = fine_tune_data(data, trained.input_names[0], 32)
  epochs = 2 if quick else bench.train_epochs
  _LOG.info('[%5.0fs] %s: training %d epochs of 50 steps', clock(), name, epochs)
  # From scratch, no early stopping: MobileNetV2's BatchNorm momentum (0.999) keeps the moving
  # statistics, and so the eval score, at chance level for the first epochs (measured: stopped
  # after 3 of 40 epochs at 0.09). They are re-estimated once training ends.
  training.fine_tune(trained, feed, FineTuneConfig(
      epochs=epochs, steps_per_epoch=50, learning_rate=bench.learning_rate, eval_steps=12,
      keep_best_epoch=False, early_stopping_patience=0, batchnorm_momentum=None), None,
                     name=f'{name} training')
  training.reestimate_batch_norm(trained, (batch[0] for batch in feed.train().take(20)))
  fp32 = conversion.convert(trained, modes.FLOAT32)
  base = model_zoo.tflite_accuracy(fp32, data.x_eval, data.y_eval)
  record = {'description': bench.description, 'params': trained.count_params(),
            'fp32_accuracy': base, 'fp32_gzip_bytes': tflite.gzip_size(fp32),
            'int8_accuracy': model_zoo.tflite_accuracy(_int8(trained, data), data.x_eval,
                                                       data.y_eval),
            'variants': {}}
  _LOG.info('[%5.0fs] %s: float32 TFLite %.4f, plain int8 %.4f', clock(), name, base,
            record['int8_accuracy'])
  # Full runs keep each component's own epochs; quick ones cap them all at 2.
  defaults = FineTuneConfig(steps_per_epoch=10 if quick else 50, epochs=2 if quick else None)
  settings = {'former': dataclasses.replace(defaults, **FORMER), 'defaults': defaults}
  if longer_epochs:
    settings['longer'] = dataclasses.replace(defaults, epochs=longer_epochs)
  record['longer_epochs'] = longer_epochs
  for key in variants:
    label, steps = VARIANTS[key]
    row = record['variants'][key] = {'label': label}
    for setting, fine_tuning in settings.items():
      tf_keras.utils.set_random_seed(0)  # Every setting starts from the same state.
      start = time.perf_counter()
      try:
        result = _optimize(steps, _copy(trained), feed, fine_tuning)
        int8 = _int8(result.model, data)
      except Exception as e:  # pylint: disable=broad-except
        # One variant's failure is a result too; the run goes on with the others.
        row[setting] = {'error': f'{type(e).__name__}: {e}'.splitlines()[0][:300],
                        'seconds': time.perf_counter() - start}
        _LOG.exception('[%5.0fs] %s %s, %s: failed', clock(), name, label, setting)
        continue
      accuracy = model_zoo.tflite_accuracy(int8, data.x_eval, data.y_eval)
      row[setting] = {
          'accuracy': accuracy, 'delta_points': 100 * (accuracy - base),
          'gzip_ratio': record['fp32_gzip_bytes'] / tflite.gzip_size(int8),
          'fine_tuning': result.properties.get(spec_keys.PROP_FINE_TUNING),
          'qat_scheme': result.properties.get(spec_keys.PROP_QAT_SCHEME),
          'seconds': time.perf_counter() - start}
      if key in _PRUNED and setting != 'former':
        # One int8 scale per weight tensor drops the per-channel scales, float32 numbers that
        # gzip barely shrinks: what that buys a pruned payload and costs a recovered model.
        per_tensor = _int8(result.model, data, per_tensor_weights=True)
        accuracy_pt = model_zoo.tflite_accuracy(per_tensor, data.x_eval, data.y_eval)
        row[setting]['per_tensor'] = {
            'delta_points': 100 * (accuracy_pt - base),
            'gzip_ratio': record['fp32_gzip_bytes'] / tflite.gzip_size(per_tensor)}
      _LOG.info('[%5.0fs] %s %s, %s: int8 accuracy %.4f (%+.1f points), %s', clock(), name,
                label, setting, accuracy, row[setting]['delta_points'],
                row[setting]['fine_tuning'])
  return record


def markdown(results: Dict[str, Any]) -> str:
  host = results['host']
  quick = ' (--quick: a smoke run, not a benchmark)' if results['quick'] else ''
  lines = [
      '# Fine-tuning recovery benchmark', '',
      f'Generated by `python -m benchmarks.fine_tuning` on {results["started"]}, in '
      f'{results["duration_s"] / 60:.1f} min{quick}.',
      '',
      f'- Host: {host.get("cpu_model")}, {host.get("cpu_count")} cores; the figures are '
      'accuracies, not times.',
      '- Each optimizer fine-tunes a copy of the same trained model through its own executor '
      'code, with the former settings (3 epochs, 1e-3 constant learning rate, the last epoch '
      "kept, the model's BatchNorm momentum, no BatchNorm re-estimation) and with "
      "`FineTuneConfig()` defaults (each component's own epochs, 10 for the Pruner and 3 for "
      'the Clusterer and QATTrainer, and learning rate, 1e-4 for QAT, with warm-up + cosine; '
      'best epoch kept with early stopping; BatchNorm momentum at most 0.9 while training, '
      'statistics re-estimated after pruning and clustering); epochs of 50 steps of 32. '
      'PCQAT records its last step (QATTrainer).' + (
          f' The last column: the defaults over {results["longer_epochs"]} epochs of 50 steps.'
          if results.get('longer_epochs') else ''),
      '- Δ = int8 TFLite accuracy − float32 TFLite accuracy of the trained model, in points, on '
      'the 360 held-out digits; gzip = float32 gzip bytes / variant gzip bytes.', '']
  for name, record in results['models'].items():
    longer_head = (f' {record["longer_epochs"]} epochs Δ (kept epoch) |'
                   if record.get('longer_epochs') else '')
    lines += [f'## {name}', '', f'{record["description"]}; {record["params"]:,} params. '
              f'Float32 TFLite {100 * record["fp32_accuracy"]:.2f}%, plain int8 '
              f'{100 * record["int8_accuracy"]:.2f}%.', '',
              '| variant | former Δ | defaults Δ | gained | gzip | kept epoch (run of budget) | '
              'BatchNorm re-estimation |' + longer_head, '|---|---|---|---|---|---|---|' +
              ('---|' if longer_head else '')]
    for row in record['variants'].values():
      former, new = row['former'], row['defaults']
      longer = row.get('longer')
      if any('error' in entry for entry in (former, new, longer) if entry):
        failed = '; '.join(f'{setting}: {entry["error"]}' for setting, entry in row.items()
                           if isinstance(entry, dict) and 'error' in entry)
        lines.append(f'| {row["label"]} | failed: {failed} |')
        continue
      longer_text = (f' {longer["delta_points"]:+.1f} ({longer["fine_tuning"]["kept_epoch"] + 1}'
                     f' of {longer["fine_tuning"]["epochs_run"]}) |' if longer else '')
      ft = new['fine_tuning'] or {}
      bn = ft.get('batchnorm_reestimation')
      bn_text = ('-' if not bn else f'{bn["layers"]} layers: {bn["before"]:.3f} → '
                 f'{bn["after"]:.3f} ({"kept" if bn["kept"] else "not kept"})')
      epochs = (f'{ft["kept_epoch"] + 1} ({ft["epochs_run"]} of {ft.get("epochs", "?")})'
                if ft else '-')
      lines.append(f'| {row["label"]} | {former["delta_points"]:+.1f} | '
                   f'{new["delta_points"]:+.1f} | '
                   f'{new["delta_points"] - former["delta_points"]:+.1f} | '
                   f'{new["gzip_ratio"]:.2f}x | {epochs} | {bn_text} |{longer_text}')
    lines.append('')
    per_tensor = [
        f'{row["label"]} ({setting}): Δ {row[setting]["per_tensor"]["delta_points"]:+.1f} '
        f'(per channel {row[setting]["delta_points"]:+.1f}), gzip '
        f'{row[setting]["per_tensor"]["gzip_ratio"]:.2f}x (per channel '
        f'{row[setting]["gzip_ratio"]:.2f}x)'
        for row in record['variants'].values() for setting in ('defaults', 'longer')
        if 'per_tensor' in row.get(setting, {})]
    if per_tensor:
      lines += ['One int8 scale per weight tensor instead of one per output channel '
                '(`per_tensor_weights=True`), same fine-tuned models: ' + '; '.join(per_tensor)
                + '.', '']
  return '\n'.join(lines)


def _positive(text: str) -> int:
  if not text.isdigit() or int(text) < 1:
    raise argparse.ArgumentTypeError(f'{text!r} is not a positive number of epochs')
  return int(text)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', nargs='+', choices=list(MODELS), default=list(MODELS))
  parser.add_argument('--variants', nargs='+', choices=list(VARIANTS), default=list(VARIANTS))
  parser.add_argument('--longer-epochs', type=_positive, default=None, metavar='N',
                      help='also fine-tune with the defaults for N epochs (of 50 steps), in '
                      'another column: what a bigger fine-tuning budget recovers.')
  parser.add_argument('--quick', action='store_true',
                      help='few training steps: a smoke test, not a benchmark.')
  parser.add_argument('--output-dir', default=os.path.join('benchmarks', 'results'))
  return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  args = parse_args(argv)
  model_zoo.log_to_stdout(_LOG)
  tf.get_logger().setLevel(logging.ERROR)  # Clustering warns of missing gradients at each step.
  absl_logging.set_verbosity(absl_logging.INFO)  # fine_tune's progress lines every 25 steps.
  start = time.perf_counter()
  clock = lambda: time.perf_counter() - start  # noqa: E731
  results = {'host': measure.host_info(), 'quick': args.quick,
             'longer_epochs': args.longer_epochs,
             'started': datetime.datetime.now().isoformat(timespec='seconds'), 'models': {}}
  for name in args.models:
    results['models'][name] = benchmark_model(name, MODELS[name], args.variants, args.quick,
                                              clock, args.longer_epochs)
  results['duration_s'] = clock()
  report = markdown(results)
  os.makedirs(args.output_dir, exist_ok=True)
  for ext, text in (('md', report), ('json', json.dumps(results, indent=1))):
    with open(os.path.join(args.output_dir, f'fine_tuning.{ext}'), 'w') as f:
      f.write(text)
  print(report)
  return results


if __name__ == '__main__':
  main()
