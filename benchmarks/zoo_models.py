"""The model zoo of the benchmark suite: model builders and their datasets, all made in code.

Nothing is downloaded. The digits CNN trains on scikit-learn's digits (real data); the other
models train on synthetic data with a class-dependent pattern plus noise, so that a model can learn
it in a few dozen steps and accuracy deltas between variants mean something. Accuracy on synthetic
data shows how much a variant degrades the trained model, not how good the model is.
"""
import dataclasses
from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from pipelines import data as digits_data
from pipelines import digits_module

REAL = 'real'
SYNTHETIC = 'synthetic'


@dataclasses.dataclass
class Dataset:
  """Train and held-out arrays of one model, and where they come from.

  Attributes:
    x_train: training inputs (also the calibration source for int8).
    y_train: integer labels of x_train.
    x_eval: held-out inputs for accuracy.
    y_eval: integer labels of x_eval.
    source: REAL or SYNTHETIC.
    description: one line for the report.
  """
  x_train: np.ndarray
  y_train: np.ndarray
  x_eval: np.ndarray
  y_eval: np.ndarray
  source: str
  description: str


@dataclasses.dataclass(frozen=True)
class Budget:
  """How much training, calibration and evaluation a model gets.

  Attributes:
    train_steps: steps of base training (from random init).
    finetune_steps: steps of each fine-tuning stage (pruning, clustering, QAT).
    batch_size: examples per step.
    calibration_samples: representative samples for the calibrated conversions.
    eval_samples: held-out examples the accuracy is computed on (at most the held-out set).
    finetune_batch_size: examples per fine-tuning step; None: batch_size.
  """
  train_steps: int
  finetune_steps: int
  batch_size: int
  calibration_samples: int
  eval_samples: int
  finetune_batch_size: Optional[int] = None

  @property
  def finetune_batch(self) -> int:
    return self.finetune_batch_size or self.batch_size


@dataclasses.dataclass(frozen=True)
class ZooModel:
  """One benchmarked model.

  Attributes:
    name: short key used on the command line and in the reports.
    description: one line for the report.
    conv_net: whether the model is a convolutional net (the int8 size goal applies to those).
    build: returns a new, compiled tf_keras model.
    make_data: returns the model's Dataset for a given seed and number of examples.
    full: budget of a full run.
    quick: budget of a --quick run (for tests: numbers are not meaningful).
    learning_rate: Adam's learning rate for base training.
    eager_training: train eagerly. Tracing MobileNetV2's training step, plain or wrapped by tfmot,
      takes 40-120 s per model on 2 cores: more than the few dozen steps it then runs.
    static_batch: convert with the batch dimension fixed to 1. The TF 2.16 converter fuses a Keras
      LSTM into UNIDIRECTIONAL_SEQUENCE_LSTM only then; with a dynamic batch it fails in every
      mode ("TensorListReserve requires element_shape to be static").
    converter_crashes: {variant: why}: combinations the converter crashes on (the process dies,
      it raises nothing); they are reported as failed without being attempted.
  """
  name: str
  description: str
  conv_net: bool
  build: Callable[[], tf_keras.Model]
  make_data: Callable[[int, int, int], Dataset]
  full: Budget
  quick: Budget
  learning_rate: float = 1e-3
  eager_training: bool = False
  static_batch: bool = False
  converter_crashes: Dict[str, str] = dataclasses.field(default_factory=dict)


def _settle_batch_norm(model: tf_keras.Model) -> tf_keras.Model:
  """Sets BatchNormalization momentum to 0.9 (Keras: 0.99, MobileNetV2: 0.999).

  Inference uses the moving statistics; with the default momentum they still sit near their
  initial values after a few hundred steps, and a model that is right in training mode guesses in
  inference mode (measured on DS-CNN: 39% after 300 steps, 100% in training mode). 0.9 settles
  within the short training here and changes no weight shape or op.
  """
  for layer in model.layers:
    if isinstance(layer, tf_keras.layers.BatchNormalization):
      layer.momentum = 0.9
  return model


def _compile(model: tf_keras.Model) -> tf_keras.Model:
  model.compile(optimizer=tf_keras.optimizers.Adam(1e-3),
                loss=tf_keras.losses.SparseCategoricalCrossentropy(),
                metrics=[tf_keras.metrics.SparseCategoricalAccuracy()])
  return model


# ---------------------------------------------------------------------------------------------
# Digits CNN: the project's own model on real data.


def digits_data_set(seed: int, n_train: int, n_eval: int) -> Dataset:
  """scikit-learn's digits with the tests' split: first 1,437 for training, last 360 held out."""
  del seed, n_train  # The real data set has a fixed size and split.
  records = [e.SerializeToString() for e in digits_data.digits_examples()]
  parsed = tf.io.parse_example(records, digits_module.FEATURE_SPEC)
  x = parsed[digits_data.PIXELS_KEY].numpy()
  y = parsed[digits_data.LABEL_KEY].numpy()
  return Dataset(x[:1437], y[:1437], x[1437:][:n_eval], y[1437:][:n_eval], REAL,
                 f'scikit-learn digits (real), {min(n_eval, 360)} held-out images')


# ---------------------------------------------------------------------------------------------
# DS-CNN keyword spotting ("Hello Edge", Zhang et al. 2017, DS-CNN-S): 49 frames x 10 MFCCs.

KWS_FRAMES, KWS_COEFFS, KWS_CLASSES = 49, 10, 12
NOISE_KWS = 2.0  # fp32 reaches about 96%: room to see a variant lose accuracy.


def build_ds_cnn() -> tf_keras.Model:
  """DS-CNN-S: a 10x4 stride-2 conv, four depthwise-separable blocks of 64 channels, avg pool."""
  inputs = tf_keras.Input((KWS_FRAMES, KWS_COEFFS, 1), name='mfcc')
  x = tf_keras.layers.Conv2D(64, (10, 4), strides=2, padding='same', use_bias=False,
                             name='conv_1')(inputs)
  x = tf_keras.layers.BatchNormalization(name='conv_1_bn')(x)
  x = tf_keras.layers.ReLU(name='conv_1_relu')(x)
  for i in range(1, 5):
    x = tf_keras.layers.DepthwiseConv2D(3, padding='same', use_bias=False, name=f'dw_{i}')(x)
    x = tf_keras.layers.BatchNormalization(name=f'dw_{i}_bn')(x)
    x = tf_keras.layers.ReLU(name=f'dw_{i}_relu')(x)
    x = tf_keras.layers.Conv2D(64, 1, use_bias=False, name=f'pw_{i}')(x)
    x = tf_keras.layers.BatchNormalization(name=f'pw_{i}_bn')(x)
    x = tf_keras.layers.ReLU(name=f'pw_{i}_relu')(x)
  x = tf_keras.layers.GlobalAveragePooling2D(name='pool')(x)
  outputs = tf_keras.layers.Dense(KWS_CLASSES, activation='softmax', name='classifier')(x)
  return _compile(_settle_batch_norm(tf_keras.Model(inputs, outputs, name='ds_cnn')))


def kws_data_set(seed: int, n_train: int, n_eval: int) -> Dataset:
  """MFCC-like maps: a smooth per-class time-frequency template, shifted in time, plus noise."""
  rng = np.random.default_rng(seed)
  # Templates vary slowly along time (7 knots stretched to 49 frames), like a spoken word.
  knots = rng.normal(size=(KWS_CLASSES, 7, KWS_COEFFS))
  frames = np.linspace(0, 6, KWS_FRAMES)
  templates = np.stack([[np.interp(frames, np.arange(7), knots[c, :, k])
                         for k in range(KWS_COEFFS)]
                        for c in range(KWS_CLASSES)]).transpose(0, 2, 1)

  def sample(n):
    y = rng.integers(0, KWS_CLASSES, n)
    shifts = rng.integers(-4, 5, n)
    gains = rng.uniform(0.7, 1.3, (n, 1, 1))
    x = np.stack([np.roll(templates[c], s, axis=0) for c, s in zip(y, shifts)]) * gains
    x += rng.normal(scale=NOISE_KWS, size=x.shape)
    return x[..., None].astype(np.float32), y

  x_train, y_train = sample(n_train)
  x_eval, y_eval = sample(n_eval)
  return Dataset(x_train, y_train, x_eval, y_eval, SYNTHETIC,
                 f'synthetic MFCC-like maps, 12 classes, {n_eval} held-out samples')


# ---------------------------------------------------------------------------------------------
# LSTM sequence classifier: 50 steps of 3 sensor channels (activity-recognition style).

SEQ_STEPS, SEQ_CHANNELS, SEQ_CLASSES = 50, 3, 6
NOISE_SEQ = 1.1  # fp32 reaches about 90%.


def build_lstm() -> tf_keras.Model:
  inputs = tf_keras.Input((SEQ_STEPS, SEQ_CHANNELS), name='sequence')
  x = tf_keras.layers.LSTM(64, name='lstm')(inputs)
  outputs = tf_keras.layers.Dense(SEQ_CLASSES, activation='softmax', name='classifier')(x)
  return _compile(tf_keras.Model(inputs, outputs, name='lstm'))


def sequence_data_set(seed: int, n_train: int, n_eval: int) -> Dataset:
  """Sine waves whose per-channel frequency and offset depend on the class, random phase, noise."""
  rng = np.random.default_rng(seed)
  freqs = rng.uniform(0.02, 0.2, (SEQ_CLASSES, SEQ_CHANNELS))  # Cycles per step.
  offsets = rng.normal(scale=0.3, size=(SEQ_CLASSES, SEQ_CHANNELS))
  t = np.arange(SEQ_STEPS)[None, :, None]

  def sample(n):
    y = rng.integers(0, SEQ_CLASSES, n)
    phase = rng.uniform(0, 2 * np.pi, (n, 1, SEQ_CHANNELS))
    x = np.sin(2 * np.pi * freqs[y][:, None, :] * t + phase) + offsets[y][:, None, :]
    x += rng.normal(scale=NOISE_SEQ, size=x.shape)
    return x.astype(np.float32), y

  x_train, y_train = sample(n_train)
  x_eval, y_eval = sample(n_eval)
  return Dataset(x_train, y_train, x_eval, y_eval, SYNTHETIC,
                 f'synthetic sine sequences, 6 classes, {n_eval} held-out samples')


# ---------------------------------------------------------------------------------------------
# MobileNetV2-224 (1,000-class head, as published); trained on 10 synthetic image classes.

IMAGE_CLASSES = 10


def build_mobilenet_v2() -> tf_keras.Model:
  model = tf_keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
  return _compile(_settle_batch_norm(model))


def image_data_set(seed: int, n_train: int, n_eval: int) -> Dataset:
  """224x224 RGB in [-1, 1]: a smooth per-class colour layout, random gain, plus pixel noise."""
  rng = np.random.default_rng(seed)
  # A 4x4 grid of colours per class, stretched to 224x224 (blocky, like coarse object layout).
  templates = rng.uniform(-0.8, 0.8, (IMAGE_CLASSES, 4, 4, 3))
  templates = templates.repeat(56, axis=1).repeat(56, axis=2).astype(np.float32)

  def sample(n):
    y = rng.integers(0, IMAGE_CLASSES, n)
    x = np.empty((n, 224, 224, 3), np.float32)
    for i, c in enumerate(y):  # One image at a time keeps peak memory at the output array.
      x[i] = templates[c] * rng.uniform(0.6, 1.2)
      x[i] += rng.normal(scale=0.4, size=(224, 224, 3)).astype(np.float32)
    np.clip(x, -1.0, 1.0, out=x)
    return x, y

  x_train, y_train = sample(n_train)
  x_eval, y_eval = sample(n_eval)
  return Dataset(x_train, y_train, x_eval, y_eval, SYNTHETIC,
                 f'synthetic 224x224 images, 10 of the 1,000 output classes used, '
                 f'{n_eval} held-out samples')


def _quick(batch_size: int, eval_samples: int = 64) -> Budget:
  return Budget(train_steps=30, finetune_steps=4, batch_size=batch_size, calibration_samples=16,
                eval_samples=eval_samples)


ZOO = {
    m.name: m for m in (
        ZooModel('mobilenet_v2', 'MobileNetV2-224, 1,000 classes (tf_keras.applications, '
                 'weights=None)', True, build_mobilenet_v2, image_data_set,
                 full=Budget(40, 24, 16, 50, 100, finetune_batch_size=8), quick=_quick(8, 16),
                 eager_training=True),
        ZooModel('ds_cnn', 'DS-CNN-S keyword spotting (Hello Edge), 49x10 MFCC, 12 classes', True,
                 build_ds_cnn, kws_data_set, full=Budget(300, 60, 32, 200, 600), quick=_quick(32),
                 learning_rate=3e-3),
        ZooModel('lstm', 'LSTM(64) sequence classifier, 50 steps x 3 channels, 6 classes', False,
                 build_lstm, sequence_data_set, full=Budget(600, 60, 32, 200, 600),
                 quick=_quick(32), learning_rate=3e-3, static_batch=True, converter_crashes={
                     'fp16': 'the TF 2.16 converter, asked for float16 weights of the fused '
                             'UNIDIRECTIONAL_SEQUENCE_LSTM, grows without bound (killed by the '
                             'OOM killer at 23.8 GB; segfault under a 10 GB limit): not attempted'
                 }),
        ZooModel('digits', "The project's digits CNN (pipelines/digits_module.py)", True,
                 digits_module.build_model, digits_data_set,
                 full=Budget(400, 60, 32, 200, 360), quick=_quick(32)),
    )
}


def training_examples(budget: Budget) -> int:
  """How many training examples to generate: enough for the longest training run."""
  return max(budget.train_steps * budget.batch_size,
             budget.finetune_steps * budget.finetune_batch)
