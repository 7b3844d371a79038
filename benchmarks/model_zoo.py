"""Benchmark suite: every zoo model in every optimization variant, measured in one run.

    TF_USE_LEGACY_KERAS=1 .venv/bin/python -m benchmarks.model_zoo            # full run
    ... -m benchmarks.model_zoo --quick --models digits --variants fp32 int8   # smoke run

For each model (MobileNetV2-224, DS-CNN, LSTM, the digits CNN) it trains the model briefly, makes
the variants with the project's own code (PTQ conversion, pruning, clustering, QAT), measures each
.tflite file with the benchmarker's isolated LiteRT measurement, and writes ratios against the same
model's fp32 file from this run (size, gzip size, p50 latency per thread count, accuracy) as
Markdown, PNG and JSON. It checks the project's size and speed goals and, for a missed goal,
prints evidence of the cause read from the .tflite files (byte anatomy, XNNPACK coverage) and the
host's CPU flags.
"""
import argparse
import dataclasses
import datetime
import functools
import json
import logging
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')  # tfmot needs Keras 2; set before TF loads.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402

from benchmarks import tflite_anatomy  # noqa: E402
from benchmarks import zoo_models  # noqa: E402
from components import FineTuneConfig  # noqa: E402
from components.benchmarker import measure  # noqa: E402
from components.clusterer import clustering  # noqa: E402
from components.common import html_report  # noqa: E402
from components.common import tflite  # noqa: E402
from components.common.finetune import training  # noqa: E402
from components.common import modes
from components.ptq_converter import calibration  # noqa: E402
from components.ptq_converter import conversion  # noqa: E402
from components.pruner import pruning  # noqa: E402
from components.qat_trainer import qat  # noqa: E402

_LOG = logging.getLogger('model_zoo')

# Variant key -> label in the reports. The order is the reports' order.
VARIANTS = {
    'fp32': 'fp32',
    'dynamic_range': 'dynamic range',
    'fp16': 'fp16',
    'int8': 'int8',
    'int16x8': '16x8',
    'pruned_int8': 'pruned 80% + int8',
    'clustered_int8': 'clustered 16 + int8',
    'pcqat_int8': 'PCQAT int8',
}
# Variants that are a plain post-training conversion of the trained model.
_PTQ_MODES = {
    'fp32': modes.FLOAT32,
    'dynamic_range': modes.DYNAMIC_RANGE,
    'fp16': modes.FLOAT16,
    'int8': modes.INT8,
    'int16x8': modes.INT16X8,
}
TARGET_SPARSITY = 0.8
CLUSTERS = 16
FINETUNE_LR = 3e-4  # Fine-tuning starts from a trained model: a smaller step than training's.

# The project's size and speed goals (see docs/benchmarks.md).
INT8_SIZE_GOAL = 3.9
INT8_SPEED_GOAL = 2.5
PRUNED_GZIP_GOAL = 12.0
CLUSTERED_GZIP_GOAL = 10.0
# The goals for MobileNetV2 (BatchNormalization folded into every conv), and for every
# clustered model: at most CLUSTERS int8 values in each channel of a clustered kernel.
MOBILENET_PRUNED_GZIP_GOAL = 11.0
MOBILENET_CLUSTERED_GZIP_GOAL = 8.0
_VNNI_FLAGS = ('avx512_vnni', 'avx_vnni')


class _Clock:
  """Logs progress with the time elapsed since the run began."""

  def __init__(self):
    self.start = time.perf_counter()

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def log(self, message: str, *args) -> None:
    _LOG.info('[%6.0fs] ' + message, self.elapsed(), *args)


# ---------------------------------------------------------------------------------------------
# Training and the optimized Keras models.


def _fit(model: tf_keras.Model, dataset: zoo_models.Dataset, steps: int, batch_size: int,
         learning_rate: float, eager: bool, callbacks: Sequence[Any] = (), seed: int = 0) -> None:
  """Trains for exactly `steps` batches drawn at random from the training set.

  Through the components' own fine-tuning (components.common.finetune.training), so the suite's
  variants are trained the way the Pruner, Clusterer and QATTrainer train them; only the data
  source differs (in-memory arrays here, the user's input_fn there).
  """
  name = model.input_names[0]
  x, y = dataset.x_train, dataset.y_train
  spec = ({name: tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype))},
          tf.TensorSpec((None,), tf.as_dtype(y.dtype)))

  def train() -> tf.data.Dataset:
    rng = np.random.default_rng(seed)

    def batches():  # A generator copies one batch at a time (MobileNetV2's inputs are large).
      while True:
        idx = rng.integers(0, len(x), batch_size)
        yield {name: x[idx]}, y[idx]

    return tf.data.Dataset.from_generator(batches, output_signature=spec)

  def evaluation() -> tf.data.Dataset:  # One batch: the suite scores each stage itself.
    return tf.data.Dataset.from_tensors(({name: dataset.x_eval[:batch_size]},
                                         dataset.y_eval[:batch_size]))

  config = FineTuneConfig(epochs=1, steps_per_epoch=steps, batch_size=batch_size,
                          learning_rate=learning_rate, eval_steps=1)
  training.fine_tune(model, training.FineTuneData(train=train, eval=evaluation), config,
                     log_dir=None, callbacks=list(callbacks), name=f'{model.name} training',
                     run_eagerly=eager)


def _recalibrate_batch_norm(model: tf_keras.Model, x: np.ndarray, batch_size: int) -> None:
  """BatchNorm moving statistics from 4 training batches (training.reestimate_batch_norm).

  After a few dozen steps from scratch the moving averages lag the fast-changing weights: measured
  on MobileNetV2 after 40 steps, 98% accuracy in training mode (batch statistics) but 11% in
  inference mode (moving statistics), 89% after this. A TFLite file folds the moving statistics
  into its convs, so without this every variant of the model would be measured at chance level.
  Every variant gets the same treatment after its own fine-tuning.
  """
  training.reestimate_batch_norm(model, (x[i * batch_size:(i + 1) * batch_size]
                                         for i in range(4)))


def _copy(model: tf_keras.Model) -> tf_keras.Model:
  """A model with new layers and the same weights.

  tfmot's wrappers reuse the layer objects they wrap, so fine-tuning the wrapped model would prune
  or cluster the trained model itself, and every later variant would start from that.
  """
  copy = tf_keras.models.clone_model(model)
  copy.set_weights(model.get_weights())
  return copy


def _batch_of_one(model: tf_keras.Model) -> tf_keras.Model:
  """The same model and weights with the batch dimension fixed to 1 (see ZooModel.static_batch)."""
  inputs = tf_keras.Input(model.inputs[0].shape[1:], batch_size=1, name=model.input_names[0])
  with tfmot.quantization.keras.quantize_scope():  # Also knows QAT models' wrapper classes.
    copy = tf_keras.models.clone_model(model, input_tensors=inputs)
  copy.set_weights(model.get_weights())
  return copy


def _batch_norms_after_conv(model: tf_keras.Model, names: Sequence[str]) -> List[str]:
  """The named BatchNormalization layers whose input comes straight from a (depthwise) conv.

  qat.plan leaves BatchNormalization float because tfmot's registry does not list it, yet tfmot
  folds a BatchNormalization that follows a conv into the conv during quantize_apply (as
  tfmot.quantization.keras.quantize_model does) when both are annotated. Left float, each one
  becomes a separate MUL and ADD in the int8 file, with its own scales.
  """
  convs = (tf_keras.layers.Conv2D, tf_keras.layers.DepthwiseConv2D)
  found = []
  for name in names:
    layer = model.get_layer(name)
    if isinstance(layer, tf_keras.layers.BatchNormalization):
      inbound = layer.inbound_nodes[0].inbound_layers
      if isinstance(inbound, convs):
        found.append(name)
  return found


class OptimizedModels:
  """Makes the fine-tuned Keras models on demand (PCQAT starts from the pruned one).

  Each method returns the model to convert: with the batch fixed to 1 when `static_batch`.
  """

  def __init__(self, trained: tf_keras.Model, dataset: zoo_models.Dataset,
               budget: zoo_models.Budget, clock: _Clock, zoo: zoo_models.ZooModel):
    self.trained, self.dataset, self.budget, self.clock = trained, dataset, budget, clock
    self.label, self.static_batch, self.eager = zoo.name, zoo.static_batch, zoo.eager_training
    self._pruned = None
    self.clustered_layers: List[str] = []
    self.info: Dict[str, Any] = {}

  def _finetune(self, model, what, callbacks=()):
    self.clock.log('%s: fine-tuning %s (%d steps of %d)', self.label, what,
                   self.budget.finetune_steps, self.budget.finetune_batch)
    _fit(model, self.dataset, self.budget.finetune_steps, self.budget.finetune_batch, FINETUNE_LR,
         self.eager, callbacks)
    _recalibrate_batch_norm(model, self.dataset.x_train, self.budget.batch_size)

  def keras_accuracy(self, model: tf_keras.Model, stage: str) -> None:
    """Records the Keras model's accuracy at a stage: shows which step loses accuracy."""
    scores = model.predict(self.dataset.x_eval, batch_size=50, verbose=0)
    self.info.setdefault('keras_accuracy', {})[stage] = float(
        np.mean(np.argmax(scores, axis=1) == self.dataset.y_eval))

  def _export(self, model: tf_keras.Model) -> tf_keras.Model:
    return _batch_of_one(model) if self.static_batch else model

  def ptq(self) -> tf_keras.Model:
    """The trained model, for the post-training conversions."""
    return self._export(self.trained)

  def _pruned_model(self) -> tf_keras.Model:
    if self._pruned is None:
      steps = self.budget.finetune_steps
      # Reach the target in the first 60% of the steps; the rest lets the survivors recover.
      config = pruning.PruningConfig(target_sparsity=TARGET_SPARSITY, begin=0.0, end=0.6,
                                     frequency=max(1, steps // 10))
      wrapped = pruning.prune(_copy(self.trained), config, steps)
      with tempfile.TemporaryDirectory() as log_dir:
        self._finetune(wrapped, 'pruning', pruning.callbacks(log_dir))
      self._pruned = pruning.strip(wrapped)
      self.keras_accuracy(self._pruned, 'pruned')
      kernels = _kernel_layers(self._pruned)
      per_layer, overall = pruning.sparsity(self._pruned, kernels)
      self.info['pruned_sparsity'] = overall  # Over every conv/dense/LSTM kernel.
      # tfmot's registry leaves some kernels dense (DepthwiseConv2D has no prunable weights).
      self.info['unpruned_layers'] = sorted(n for n, v in per_layer.items()
                                            if v < TARGET_SPARSITY / 2)
      self.info['unpruned_weight_share'] = _weight_share(self._pruned, kernels,
                                                         self.info['unpruned_layers'])
    return self._pruned

  def pruned(self) -> tf_keras.Model:
    """80% of the weights of every prunable layer set to zero, with a polynomial ramp."""
    return self._export(self._pruned_model())

  def clustered(self) -> tf_keras.Model:
    """16 shared values per weight tensor (k-means++ init), centroids fine-tuned."""
    config = clustering.ClusteringConfig(number_of_clusters=CLUSTERS)
    wrapped = clustering.cluster(_copy(self.trained), config, preserve_sparsity=False)
    self._finetune(wrapped, 'clustering')
    model = clustering.strip(wrapped)
    self.keras_accuracy(model, 'clustered')
    unique = clustering.unique_weights(model, _kernel_layers(model))
    self.info['clustered_max_unique'] = max(n for n in unique.values() if n <= CLUSTERS)
    self.clustered_layers = [name for name, n in unique.items() if n <= CLUSTERS]
    # tfmot's registry leaves some kernels unclustered (DepthwiseConv2D: accuracy loss).
    self.info['unclustered_layers'] = sorted(name for name, n in unique.items() if n > CLUSTERS)
    self.info['unclustered_weight_share'] = _weight_share(model, list(unique),
                                                          self.info['unclustered_layers'])
    # The cluster assignment's entropy, before any int8 scale: the floor for the clustered
    # weights whatever the converter does with them (one scale per tensor included).
    kernels = [model.get_layer(name).get_weights()[0] for name in self.clustered_layers]
    self.info['clustered_entropy_bits'] = sum(
        tflite_anatomy.entropy_bits(k) * k.size for k in kernels) / max(1, sum(
            k.size for k in kernels))
    return self._export(model)

  def pcqat(self) -> tf_keras.Model:
    """Prune, cluster keeping the zeros, then QAT keeping both (tfmot's PCQAT pipeline)."""
    config = clustering.ClusteringConfig(number_of_clusters=CLUSTERS)
    wrapped = clustering.cluster(_copy(self._pruned_model()), config, preserve_sparsity=True)
    self._finetune(wrapped, 'sparsity-preserving clustering')
    clustered = clustering.strip(wrapped)
    self.keras_accuracy(clustered, 'pruned, then clustered keeping zeros')
    qat_config = qat.QATConfig(scheme=qat.PRUNE_CLUSTER_PRESERVE, allow_float_layers=True)
    quantized_layers, float_layers = qat.plan(clustered, qat_config)
    folded = _batch_norms_after_conv(clustered, float_layers)
    self.info['pcqat_float_layers'] = [name for name in float_layers if name not in folded]
    self.info['pcqat_folded_batch_norms'] = len(folded)

    def quantize(model):
      return qat.quantize(model, qat_config, qat.PRUNE_CLUSTER_PRESERVE, quantized_layers + folded)

    model = quantize(clustered)
    self._finetune(model, 'PCQAT')
    self.keras_accuracy(model, 'PCQAT (fake-quantized)')
    if not self.static_batch:
      return model
    # Cloning a QAT model loses its wrappers' weight order: quantize a batch-1 copy of the
    # clustered model the same way instead, and give it the trained weights.
    export = quantize(_batch_of_one(clustered))
    export.set_weights(model.get_weights())
    return export


def _kernel_layers(model: tf_keras.Model) -> List[str]:
  """Layers with a weight kernel (conv, dense, LSTM...): not the normalization layers."""
  norms = (tf_keras.layers.BatchNormalization, tf_keras.layers.LayerNormalization)
  return [layer.name for layer in model.layers
          if layer.trainable_weights and not isinstance(layer, norms)]


def _weight_share(model: tf_keras.Model, layers: Sequence[str], part: Sequence[str]) -> float:
  """The fraction of the layers' first-weight (kernel) values that lies in `part`."""
  sizes = {name: model.get_layer(name).get_weights()[0].size for name in layers}
  return sum(sizes[name] for name in part) / max(1, sum(sizes.values()))


def make_variant(variant: str, optimized: OptimizedModels,
                 representative: conversion.RepresentativeData) -> bytes:
  """The .tflite bytes of one variant, converted with the project's PTQ conversion."""
  if variant in _PTQ_MODES:
    return conversion.convert(optimized.ptq(), _PTQ_MODES[variant], representative)
  if variant == 'clustered_int8':
    # As PTQConverter converts a clustered model: per-tensor scales where they keep the clusters.
    model_bytes, kept = conversion.convert_keeping_clusters(
        optimized.clustered(), modes.INT8, representative, modes.IO_NATIVE, CLUSTERS,
        optimized.clustered_layers)
    optimized.info['clustered_int8_scales'] = 'per-channel' if kept is None else 'per-tensor'
    return model_bytes
  model = {'pruned_int8': optimized.pruned, 'pcqat_int8': optimized.pcqat}[variant]()
  model_bytes = conversion.convert(model, modes.INT8, representative)
  if variant == 'pruned_int8':
    # What one int8 scale per weight tensor would save (the per-channel scales are float32
    # numbers gzip barely shrinks) and what it would cost in accuracy: the pruned payload's
    # other choice, measured rather than argued.
    per_tensor = conversion.convert(model, modes.INT8, representative, per_tensor_weights=True)
    optimized.info['pruned_per_tensor'] = {
        'gzip_bytes': tflite.gzip_size(per_tensor),
        'accuracy': tflite_accuracy(per_tensor, optimized.dataset.x_eval,
                                    optimized.dataset.y_eval)}
  return model_bytes


# ---------------------------------------------------------------------------------------------
# Measurements.


def tflite_accuracy(model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> float:
  """Top-1 accuracy of a single-input classifier, one example at a time as a device runs it."""
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  interp = litert.Interpreter(model_content=model_bytes, num_threads=2)
  interp.allocate_tensors()
  inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
  dtype = np.dtype(inp['dtype'])
  if np.issubdtype(dtype, np.integer):  # int8/int16 I/O: quantize with the input's parameters.
    scale, zero_point = inp['quantization']
    info = np.iinfo(dtype)
    x = np.clip(np.round(x / scale + zero_point), info.min, info.max)
  x = x.astype(dtype)
  correct = 0
  for sample, label in zip(x, y):
    # A converted Keras LSTM keeps its state in variable tensors that carry over to the next
    # invoke: each example must start from zero state, as in Keras.
    interp.reset_all_variables()
    interp.set_tensor(inp['index'], sample[None])
    interp.invoke()
    # The argmax of quantized scores is that of the scores: the scale is positive.
    correct += int(np.argmax(interp.get_tensor(out['index'])[0]) == label)
  return correct / len(y)


@dataclasses.dataclass(frozen=True)
class Settings:
  """What to run and how to time it (see parse_args)."""
  models: List[str]
  variants: List[str]
  threads: List[int]
  quick: bool
  warmup_runs: int
  min_runs: int
  min_duration_s: float


def benchmark_model(zoo: zoo_models.ZooModel, settings: Settings, out_dir: str,
                    clock: _Clock) -> Dict[str, Any]:
  """Trains one model, makes and measures its variants; returns its JSON record."""
  budget = zoo.quick if settings.quick else zoo.full
  tf_keras.backend.clear_session()
  tf_keras.utils.set_random_seed(0)
  clock.log('%s: making data and training the base model (%d steps of %d)', zoo.name,
            budget.train_steps, budget.batch_size)
  dataset = zoo.make_data(0, zoo_models.training_examples(budget), budget.eval_samples)
  trained = zoo.build()
  _fit(trained, dataset, budget.train_steps, budget.batch_size, zoo.learning_rate,
       zoo.eager_training)
  _recalibrate_batch_norm(trained, dataset.x_train, budget.batch_size)
  optimized = OptimizedModels(trained, dataset, budget, clock, zoo)
  optimized.keras_accuracy(trained, 'trained')
  representative = calibration.representative_dataset(
      {trained.input_names[0]: dataset.x_train[:budget.calibration_samples]})
  record = {
      'description': zoo.description, 'conv_net': zoo.conv_net, 'params': trained.count_params(),
      'data_source': dataset.source, 'data_description': dataset.description,
      'budget': dataclasses.asdict(budget), 'variants': {},
  }
  # fp32 first: every ratio is against it.
  for variant in ['fp32'] + [v for v in settings.variants if v != 'fp32']:
    entry = {'label': VARIANTS[variant]}
    record['variants'][variant] = entry
    start = time.perf_counter()
    clock.log('%s: making %s', zoo.name, VARIANTS[variant])
    if variant in zoo.converter_crashes:
      entry['error'] = f'converter crash: {zoo.converter_crashes[variant]}'
      continue
    try:
      model_bytes = make_variant(variant, optimized, representative)
    except Exception as e:  # pylint: disable=broad-except
      # One variant a model cannot have (an op without a kernel, say) must not end the run.
      _LOG.warning('%s %s failed: %s', zoo.name, variant, e)
      entry['error'] = f'{type(e).__name__}: {str(e).splitlines()[0][:300]}'
      continue
    entry['make_s'] = time.perf_counter() - start
    path = os.path.join(out_dir, 'models', f'{zoo.name}_{variant}.tflite')
    with open(path, 'wb') as f:
      f.write(model_bytes)
    entry['file'] = os.path.relpath(path, out_dir)
    entry['size_bytes'] = len(model_bytes)
    entry['gzip_bytes'] = tflite.gzip_size(model_bytes)
    entry['anatomy'] = tflite_anatomy.anatomy(model_bytes)
    entry['xnnpack_coverage'] = tflite_anatomy.xnnpack_coverage(model_bytes)
    clock.log('%s: accuracy of %s on %d %s examples', zoo.name, VARIANTS[variant],
              len(dataset.y_eval), dataset.source)
    entry['accuracy'] = tflite_accuracy(model_bytes, dataset.x_eval, dataset.y_eval)
    entry['latency'] = {}
    for threads in settings.threads:
      clock.log('%s: timing %s at %d thread(s)', zoo.name, VARIANTS[variant], threads)
      entry['latency'][str(threads)] = timed(path, threads, settings)
  record['optimization'] = optimized.info
  add_ratios(record, settings.threads)
  return record


# A median this far above the fastest run means the machine was busy during the measurement.
_DISTURBED = 1.15
_RETRIES = 2
# Below this, a high median/min comes from thread wake-ups at 2 threads, not load: no retry.
_RETRY_MIN_MS = 1.0


def timed(path: str, threads: int, settings: Settings) -> Dict[str, Any]:
  """measure_isolated, repeated (at most _RETRIES times) while the median looks disturbed.

  The machine is shared: another process waking up during one measurement moved an fp32 p50 by
  40% between two runs (cv 0.24). Every variant gets the same rule; the attempt with the lowest
  p50/min is kept and the number of attempts recorded.
  """
  best = None
  for attempt in range(1, _RETRIES + 2):
    result = measure.measure_isolated(
        path, threads, warmup_runs=settings.warmup_runs, min_runs=settings.min_runs,
        min_duration_s=settings.min_duration_s)
    result['attempts'] = attempt
    if best is None or result['p50_ms'] / result['min_ms'] < best['p50_ms'] / best['min_ms']:
      best = dict(result)
    if result['p50_ms'] <= _DISTURBED * result['min_ms'] or result['p50_ms'] < _RETRY_MIN_MS:
      break
  best['attempts'] = attempt
  return best


def add_ratios(record: Dict[str, Any], threads: Sequence[int]) -> None:
  """Adds the ratios against the model's fp32 variant: x smaller, x faster, accuracy delta."""
  base = record['variants']['fp32']
  if 'error' in base:
    return
  for entry in record['variants'].values():
    if 'error' in entry:
      continue
    entry['size_ratio'] = base['size_bytes'] / entry['size_bytes']
    entry['gzip_ratio'] = base['gzip_bytes'] / entry['gzip_bytes']
    entry['gzip_vs_fp32_file'] = base['size_bytes'] / entry['gzip_bytes']
    entry['speedup'] = {str(t): base['latency'][str(t)]['p50_ms'] /
                        entry['latency'][str(t)]['p50_ms'] for t in threads}
    entry['accuracy_delta'] = entry['accuracy'] - base['accuracy']


# ---------------------------------------------------------------------------------------------
# Goals and their causes.


def _has_vnni(host: Dict[str, Any]) -> bool:
  return any(f in host['cpu_flags'] for f in _VNNI_FLAGS)


def check_goals(results: Dict[str, Any]) -> List[Dict[str, Any]]:
  """One row per goal and model: the measured figure, PASS/MISS and, for a MISS, the evidence."""
  goals = []
  host = results['host']
  for name, record in results['models'].items():
    variants = record['variants']

    def usable(variant):
      return variant in variants and 'error' not in variants[variant] and (
          'error' not in variants['fp32'])

    if record['conv_net'] and usable('int8'):
      ratio = variants['int8']['size_ratio']
      goals.append(_goal('int8 >= 3.9x smaller (conv nets)', name, ratio, INT8_SIZE_GOAL,
                         f'{ratio:.2f}x', lambda: _int8_size_cause(variants)))
    if name == 'mobilenet_v2' and usable('int8'):
      speedups = variants['int8']['speedup']
      figure = ', '.join(f'{s:.2f}x at {t} thread(s)' for t, s in speedups.items())
      goals.append(_goal('int8 >= 2.5x faster on MobileNetV2 (AVX-512 VNNI host)', name,
                         min(speedups.values()), INT8_SPEED_GOAL, figure,
                         lambda: _int8_speed_cause(variants, host)))
    if usable('pruned_int8'):
      entry = variants['pruned_int8']
      goals.append(_goal('pruned 80% + int8 + gzip >= 12x smaller', name, entry['gzip_ratio'],
                         PRUNED_GZIP_GOAL, _gzip_figure(entry),
                         lambda: _gzip_cause(variants, 'pruned_int8', record)))
    if usable('clustered_int8'):
      entry = variants['clustered_int8']
      goals.append(_goal('16 clusters + int8 + gzip >= 10x smaller', name, entry['gzip_ratio'],
                         CLUSTERED_GZIP_GOAL, _gzip_figure(entry),
                         lambda: _gzip_cause(variants, 'clustered_int8', record)))
      distinct = entry['anatomy'].get('int8_weights', {}).get('distinct_per_channel_max')
      if distinct is not None:
        scales = record.get('optimization', {}).get('clustered_int8_scales', 'per-channel')
        goals.append(_goal(f'16 clusters: <= {CLUSTERS} int8 values per channel', name, distinct,
                           CLUSTERS, f'{distinct} ({scales} int8 scales)',
                           lambda: _distinct_cause(record), at_most=True))
    if name == 'mobilenet_v2':
      for variant, target, what in (
          ('pruned_int8', MOBILENET_PRUNED_GZIP_GOAL, 'pruned 80%'),
          ('clustered_int8', MOBILENET_CLUSTERED_GZIP_GOAL, '16 clusters')):
        if usable(variant):
          entry = variants[variant]
          goals.append(_goal(f'MobileNetV2 {what} + int8 + gzip >= {target:.0f}x smaller',
                             name, entry['gzip_ratio'], target,
                             _gzip_figure(entry),
                             functools.partial(_gzip_cause, variants, variant, record)))
  return goals


def _distinct_cause(record) -> str:
  info = record.get('optimization', {})
  left = info.get('unclustered_layers', [])
  return ('Some int8 weight tensors are not clustered: ' + ', '.join(left) if left else
          'A clustered kernel holds more int8 values in one channel than it has clusters.')


def _goal(goal, model, value, target, figure, cause, at_most=False) -> Dict[str, Any]:
  passed = value <= target if at_most else value >= target
  return {'goal': goal, 'model': model, 'value': value, 'target': target, 'figure': figure,
          'result': 'PASS' if passed else 'MISS', 'cause': None if passed else cause()}


def _gzip_figure(entry) -> str:
  return (f'{entry["gzip_ratio"]:.2f}x (gzip vs gzip; {entry["gzip_vs_fp32_file"]:.2f}x vs the '
          'raw fp32 file)')


def _int8_size_cause(variants) -> str:
  fp32, int8 = variants['fp32']['anatomy'], variants['int8']['anatomy']
  weights_ratio = fp32['buffers'].get('float32', 0) / max(1, int8['buffers'].get('int8', 0))
  other = int8['file_bytes'] - int8['buffers'].get('int8', 0)
  fixed = fp32['file_bytes'] - fp32['buffers'].get('float32', 0)
  return (f'The weights alone shrink {weights_ratio:.2f}x (float32 -> int8), but {other:,} B of '
          f'the {int8["file_bytes"]:,} B int8 file ({100 * other / int8["file_bytes"]:.1f}%) are '
          f'not int8 weights: {tflite_anatomy.summarize_bytes(int8)}. Quantization parameters: '
          f'{int8["quant_channels"]:,} (scale float32 + zero point int64 = 12 B) pairs, '
          f'{int8["per_channel_tensors"]} per-channel tensors. Biases stay 32-bit (int32). '
          f'The fp32 file has {fixed:,} B of non-weight bytes, which int8 cannot shrink either.')


def _int8_speed_cause(variants, host) -> str:
  fp32, int8 = variants['fp32'], variants['int8']
  vnni = _has_vnni(host)
  lines = [f'Host CPU {host["cpu_model"]!r}, flags of interest: {", ".join(host["cpu_flags"])}: '
           + ('has VNNI.' if vnni else 'no AVX-512 VNNI (nor AVX-VNNI), the precondition of this '
              'goal: XNNPACK\'s int8 kernels on AVX2 widen int8 to int16 and multiply-add '
              '(vpmaddwd), about half the int8 MACs per instruction of VNNI\'s vpdpbusd, while '
              'fp32 uses full-width FMA.')]
  for key, entry in (('fp32', fp32), ('int8', int8)):
    cov = entry['xnnpack_coverage']
    outside = ', '.join(f'{op} x{n}' for op, n in cov['outside'].items()) or 'none'
    lines.append(f'{key}: XNNPACK runs {cov["delegated"]}/{cov["ops"]} ops (outside: '
                 f'{outside}); p50 ' + ', '.join(
                     f'{m["p50_ms"]:.2f} ms at {t} thread(s)' for t, m in entry['latency'].items())
                 + '.')
  return ' '.join(lines)


def _gzip_cause(variants, variant, record) -> str:
  fp32, entry = variants['fp32'], variants[variant]
  info = record['optimization']
  a = entry['anatomy']
  w = a.get('int8_weights', {})
  if not w:
    return 'The file has no int8 weights.'
  weight_gz = a['gzip_buffers'].get('int8', 0)
  rest_gz = entry['gzip_bytes'] - weight_gz
  fp32_gz_factor = fp32['size_bytes'] / fp32['gzip_bytes']
  if variant == 'pruned_int8':
    what = (f'{100 * w["zero_fraction"]:.1f}% of the int8 weights are zero (target 80%)')
    left, share = info.get('unpruned_layers', []), info.get('unpruned_weight_share', 0)
    if left:
      what += (f'; tfmot leaves {len(left)} kernels ({100 * share:.1f}% of the kernel weights, '
               'DepthwiseConv2D has no prunable weight in its registry) dense')
    alt = info.get('pruned_per_tensor')
    if alt:
      what += (f'. With one int8 scale per weight tensor instead of per channel the payload '
               f'would be {alt["gzip_bytes"]:,} B, {fp32["gzip_bytes"] / alt["gzip_bytes"]:.2f}x '
               f'smaller, at {100 * alt["accuracy"]:.1f}% accuracy against this variant\'s '
               f'{100 * entry["accuracy"]:.1f}%')
  elif info.get('clustered_int8_scales') == 'per-tensor':
    what = (f'one int8 scale per weight tensor keeps at most {w["distinct_per_tensor_max"]} '
            'distinct int8 values in each (16 equally used values take 4 bits each: 8x is the '
            'bound for the weights alone; less even clusters take fewer)')
  else:
    what = (f'at most {w["distinct_per_channel_max"]} distinct int8 values per channel, '
            f'{w["distinct_per_tensor_max"]} per weight tensor: BatchNormalization folded into '
            'the kernels and per-channel int8 scales map one shared value to a different int8 '
            'value in each output channel')
    left, share = info.get('unclustered_layers', []), info.get('unclustered_weight_share', 0)
    if left:
      what += (f'; tfmot leaves {len(left)} kernels ({100 * share:.1f}% of the kernel weights, '
               'DepthwiseConv2D by design) unclustered')
  if variant == 'clustered_int8' and 'clustered_entropy_bits' in info:
    bits = info['clustered_entropy_bits']
    what += (f'. The clusters themselves carry {bits:.2f} bits per weight (the entropy of the '
             'cluster assignment in the Keras kernels, before any int8 scale)')
    if info.get('clustered_int8_scales') != 'per-tensor':
      what += (', so even one scale per tensor (BatchNormalization folded before clustering) '
               'could not take the clustered weights below '
               f'{tflite_anatomy.gzip_ratio_bound(bits):.1f}x')
  return (f'{what}. The int8 weights\' entropy is {w["entropy_bits"]:.2f} bits per weight, so no '
          f'byte coder gets them below {tflite_anatomy.gzip_ratio_bound(w["entropy_bits"]):.1f}x '
          f'smaller than float32; gzip -9 reaches {w["gzip_bits"]:.2f} bits per weight '
          f'({tflite_anatomy.gzip_ratio_bound(w["gzip_bits"]):.1f}x). The rest of the file '
          f'(int32 biases, quantization params, graph structure) still takes {rest_gz:,} B after '
          f'gzip ({100 * rest_gz / entry["gzip_bytes"]:.1f}% of the payload). The baseline is '
          f'gzip of the fp32 file, which gzip alone already shrinks {fp32_gz_factor:.2f}x.')


# ---------------------------------------------------------------------------------------------
# Reports.


def _fmt_ratio(value: Optional[float]) -> str:
  return '–' if value is None else f'{value:.2f}x'


def markdown(results: Dict[str, Any]) -> str:
  """The report: host, results table with ratios, goals, causes of misses, byte anatomy."""
  host, settings = results['host'], results['settings']
  threads = settings['threads']
  lines = [
      '# Model zoo benchmark', '',
      f'Generated by `python -m benchmarks.model_zoo{" --quick" if settings["quick"] else ""}` '
      f'on {results["started"]}, in {results["duration_s"] / 60:.1f} min.'
      + (' **Quick run: few training steps and timed runs; figures are not meaningful.**'
         if settings['quick'] else ''), '',
      f'- Host: {host["cpu_model"]}, {host["cpu_count"]} cores, {host["machine"]}, '
      f'{host["system"]}, Python {host["python"]}',
      f'- CPU flags of interest: {", ".join(host["cpu_flags"]) or "none"}; AVX-512 VNNI: '
      f'{"yes" if _has_vnni(host) else "**no**"}',
      f'- Runtime: {host["runtime"]}, default XNNPACK delegate; each model and thread count '
      f'measured in its own process ({settings["warmup_runs"]} warm-up runs, then at least '
      f'{settings["min_runs"]} runs and {settings["min_duration_s"]} s).',
      '- Ratios are against the same model\'s fp32 .tflite from this run: size and gzip = fp32 '
      'bytes / variant bytes (gzip -9 of each file, the OTA payload, compared like for like), '
      'speedup = fp32 p50 / variant p50, Δ accuracy = variant − fp32 in points.',
      f'- † p50 more than {_DISTURBED:.2f}x the fastest run: a busy machine (retried up to '
      f'{_RETRIES} times from {_RETRY_MIN_MS:.0f} ms up) or, below 1 ms, thread wake-ups. The '
      'JSON has mean, std, cv, p90, p99 and the attempts of every measurement.',
      '- Training is short (below): after it and after every fine-tuning stage, BatchNorm moving '
      'statistics are recalibrated on 4 training batches. Accuracy deltas of pruned variants '
      'show what a few dozen recovery steps give back, not what a full fine-tuning would.',
      '',
  ]
  lines.append('Accuracy data:')
  for name, record in results['models'].items():
    budget = record['budget']
    finetune_batch = budget['finetune_batch_size'] or budget['batch_size']
    lines.append(f'- **{name}** ({record["description"]}; {record["params"]:,} params): '
                 f'{record["data_description"]}. Trained {budget["train_steps"]} steps of '
                 f'{budget["batch_size"]}; each fine-tuning stage {budget["finetune_steps"]} '
                 f'steps of {finetune_batch}; int8 calibration on '
                 f'{budget["calibration_samples"]} training samples.')
  lines += ['', '## Results', '']
  head = ['model', 'variant', 'size KB', 'size', 'gzip KB', 'gzip']
  for t in threads:
    head += [f'p50 {t}t ms', f'speedup {t}t']
  head += ['accuracy', 'Δ acc', 'data', 'ops outside XNNPACK']
  lines += ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for name, record in results['models'].items():
    for variant, e in record['variants'].items():
      if 'error' in e:
        lines.append(f'| {name} | {e["label"]} | failed: {e["error"]} |' + ' |' * (len(head) - 3))
        continue
      row = [name, e['label'], f'{e["size_bytes"] / 1024:,.1f}', _fmt_ratio(e.get('size_ratio')),
             f'{e["gzip_bytes"] / 1024:,.1f}', _fmt_ratio(e.get('gzip_ratio'))]
      for t in threads:
        m = e['latency'][str(t)]
        mark = '†' if m['p50_ms'] > _DISTURBED * m['min_ms'] else ''
        row += [f'{m["p50_ms"]:.3f}{mark}', _fmt_ratio(e.get('speedup', {}).get(str(t)))]
      delta = e.get('accuracy_delta')
      cov = e['xnnpack_coverage']
      outside = ', '.join(f'{op}×{n}' for op, n in cov['outside'].items())
      row += [f'{100 * e["accuracy"]:.1f}%', '–' if delta is None else f'{100 * delta:+.1f}',
              record['data_source'], f'{cov["ops"] - cov["delegated"]}/{cov["ops"]}'
              + (f' ({outside})' if outside else '')]
      lines.append('| ' + ' | '.join(row) + ' |')
  lines += ['', '## Goals', '', '| goal | model | measured | result |', '|---|---|---|---|']
  for g in results['goals']:
    lines.append(f'| {g["goal"]} | {g["model"]} | {g["figure"]} | **{g["result"]}** |')
  misses = [g for g in results['goals'] if g['result'] == 'MISS']
  if misses:
    lines += ['', '## Causes of the missed goals', '']
    for g in misses:
      lines.append(f'- **{g["goal"]}, {g["model"]}** ({g["figure"]}): {g["cause"]}')
  lines += ['', '## Where the bytes go', '',
            'Read from each .tflite flatbuffer (constant tensor buffers by dtype, quantization '
            'parameters, the rest is graph structure and metadata).', '']
  for name, record in results['models'].items():
    for variant in ('fp32', 'int8', 'pruned_int8', 'clustered_int8', 'pcqat_int8'):
      e = record['variants'].get(variant)
      if e and 'error' not in e:
        lines.append(f'- {name} {e["label"]} ({e["size_bytes"]:,} B): '
                     f'{tflite_anatomy.summarize_bytes(e["anatomy"])}')
  opt = {n: r.get('optimization') for n, r in results['models'].items() if r.get('optimization')}
  if opt:
    lines += ['', '## Optimization checks', '']
    for name, info in opt.items():
      parts = []
      if 'pruned_sparsity' in info:
        parts.append(f'{100 * info["pruned_sparsity"]:.1f}% of all kernel weights pruned')
      if info.get('unpruned_layers'):
        parts.append(f'not pruned by tfmot: {", ".join(info["unpruned_layers"])}')
      if 'clustered_max_unique' in info:
        parts.append(f'at most {info["clustered_max_unique"]} distinct values per clustered '
                     'kernel')
      if info.get('unclustered_layers'):
        parts.append(f'not clustered by tfmot: {", ".join(info["unclustered_layers"])}')
      if info.get('pcqat_folded_batch_norms'):
        parts.append(f'PCQAT folded {info["pcqat_folded_batch_norms"]} BatchNormalization '
                     'layers into their convs')
      if info.get('pcqat_float_layers'):
        parts.append(f'PCQAT left float: {", ".join(info["pcqat_float_layers"])}')
      if info.get('keras_accuracy'):
        parts.append('Keras accuracy by stage: ' + ', '.join(
            f'{stage} {100 * acc:.1f}%' for stage, acc in info['keras_accuracy'].items()))
      lines.append(f'- {name}: {"; ".join(parts)}')
  return '\n'.join(lines) + '\n'


def plot(results: Dict[str, Any], path: str) -> None:
  """Grouped bars per model: size, gzip, speedup per thread count, accuracy delta; goal lines."""
  plt = html_report.pyplot()
  threads = results['settings']['threads']
  panels = [('size_ratio', 'size: x smaller than fp32', [INT8_SIZE_GOAL]),
            ('gzip_ratio', 'gzip size: x smaller than fp32 gzip',
             [CLUSTERED_GZIP_GOAL, PRUNED_GZIP_GOAL])]
  panels += [(('speedup', str(t)), f'p50 speedup vs fp32, {t} thread(s)', [INT8_SPEED_GOAL])
             for t in threads]
  panels.append(('accuracy_delta', 'accuracy − fp32 (points)', [0.0]))
  panels.append(('accuracy', 'accuracy % (digits: real data; others: synthetic)', []))
  models = list(results['models'])
  variants = [v for v in VARIANTS if any(v in r['variants'] for r in results['models'].values())]
  cols = 2
  rows = (len(panels) + cols - 1) // cols
  fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 3.6 * rows), squeeze=False)
  width = 0.8 / len(variants)
  for ax, (key, title, lines) in zip(axes.flat, panels):
    for i, variant in enumerate(variants):
      values = []
      for model in models:
        e = results['models'][model]['variants'].get(variant, {})
        value = e.get(key[0], {}).get(key[1]) if isinstance(key, tuple) else e.get(key)
        if value is not None and key in ('accuracy', 'accuracy_delta'):
          value *= 100
        values.append(np.nan if value is None else value)
      ax.bar(np.arange(len(models)) + (i - (len(variants) - 1) / 2) * width, values, width,
             label=VARIANTS[variant])
    for y in lines:
      ax.axhline(y, color='black', linestyle='--', linewidth=0.8)
    ax.set_xticks(np.arange(len(models)), models)
    ax.set_title(title)
    ax.grid(axis='y', alpha=0.3)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis('off')
  handles, labels = axes[0][0].get_legend_handles_labels()
  fig.legend(handles, labels, loc='lower center', ncol=min(len(variants), 8), fontsize='small')
  fig.suptitle(f'Model zoo vs fp32 on {results["host"]["cpu_model"]} '
               f'({results["host"]["runtime"]}); dashed: goals')
  fig.tight_layout(rect=(0, 0.05, 1, 0.97))
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ---------------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', nargs='+', choices=list(zoo_models.ZOO),
                      default=list(zoo_models.ZOO))
  parser.add_argument('--variants', nargs='+', choices=list(VARIANTS), default=list(VARIANTS),
                      help='fp32 is always made: every ratio is against it.')
  parser.add_argument('--threads', nargs='+', type=int, default=[1, 2])
  parser.add_argument('--quick', action='store_true',
                      help='few training steps and timed runs: a smoke test, not a benchmark.')
  parser.add_argument('--output-dir', default=os.path.join('benchmarks', 'results'))
  return parser.parse_args(argv)


def log_to_stdout(logger: logging.Logger) -> None:
  """Sends a benchmark's progress lines to stdout, bare.

  TF has configured the root logger by now (basicConfig would do nothing): the logger gets its
  own handler.
  """
  handler = logging.StreamHandler(sys.stdout)
  handler.setFormatter(logging.Formatter('%(message)s'))
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  args = parse_args(argv)
  log_to_stdout(_LOG)
  # CQAT/PCQAT train the cluster centroids, not the kernels, and TF warns at every step that the
  # kernels get no gradient: expected, and it would drown the progress lines.
  tf.get_logger().setLevel(logging.ERROR)
  clock = _Clock()
  settings = Settings(
      models=args.models, variants=[v for v in VARIANTS if v in args.variants],
      threads=args.threads, quick=args.quick, warmup_runs=2 if args.quick else 5,
      min_runs=5 if args.quick else 50, min_duration_s=0.05 if args.quick else 1.0)
  host = measure.host_info()
  print('Host:', json.dumps(host, indent=2), flush=True)
  os.makedirs(os.path.join(args.output_dir, 'models'), exist_ok=True)
  results = {'host': host, 'settings': dataclasses.asdict(settings),
             'started': datetime.datetime.now().isoformat(timespec='seconds'), 'models': {}}
  for name in settings.models:
    results['models'][name] = benchmark_model(zoo_models.ZOO[name], settings, args.output_dir,
                                              clock)
  results['duration_s'] = clock.elapsed()
  results['goals'] = check_goals(results)
  report = markdown(results)
  paths = {ext: os.path.join(args.output_dir, f'model_zoo.{ext}') for ext in ('md', 'png', 'json')}
  with open(paths['md'], 'w') as f:
    f.write(report)
  with open(paths['json'], 'w') as f:
    json.dump(results, f, indent=1)
  plot(results, paths['png'])
  print(report)
  clock.log('wrote %s', ', '.join(paths.values()))
  return results


if __name__ == '__main__':
  main()
