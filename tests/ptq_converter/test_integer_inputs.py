"""Models with integer inputs (int64, int32) next to float ones, through every variant to int8.

The model reads a count as an integer input, casts it to float inside and joins it to a float
input with a Concatenate: the shape of a tabular model whose CSV column holds whole numbers. Each
variant (PTQ, pruning, clustering, prune -> cluster -> QAT with preservation) is converted to int8
and run with LiteRT: no float op but the CAST that reads the integer input, the integer input
keeps its dtype, the float input and the output are int8, and the outputs stay close to the
Keras model's on examples it was not calibrated on.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from components import errors
from components import spec_keys
from components.clusterer import clustering
from components.common import tflite
from components.common.finetune import training
from components.common.finetune.config import FineTuneConfig
from components.ptq_converter import calibration
from components.ptq_converter import conversion
from components.pruner import pruning
from components.qat_trainer import qat
from tests.conftest import write_examples
from tests.helpers import keras_model_artifact
from tests.helpers import run_ptq

# One short epoch: enough for the weights to move and the optimizers' wrappers to act.
FINE_TUNING = FineTuneConfig(epochs=1, steps_per_epoch=25, batch_size=32, eval_steps=2)
COUNT, X = 'serving_default_count:0', 'serving_default_x:0'


def _data(n=400, seed=0, int_dtype=tf.int64):
  """({count: [n, 1] integers in [0, 10), x: [n, 4] floats}, labels in {0, 1, 2})."""
  rng = np.random.default_rng(seed)
  features = {'count': rng.integers(0, 10, (n, 1)).astype(int_dtype.as_numpy_dtype),
              'x': rng.normal(size=(n, 4)).astype(np.float32)}
  labels = (features['count'][:, 0] > 4).astype(np.int64) + (features['x'][:, 0] > 0)
  return features, labels


def _two_input_model(int_dtype=tf.int64, cast='op'):
  """count (integer) cast to float, joined to x (4 floats): Dense(16) -> Dense(3, softmax)."""
  tf_keras.utils.set_random_seed(0)
  count = tf_keras.Input((1,), dtype=int_dtype, name='count')
  x = tf_keras.Input((4,), name='x')
  if cast == 'op':  # The usual way: a `tf.cast` op layer.
    as_float = tf.cast(count, tf.float32)
  else:
    as_float = tf_keras.layers.Lambda(lambda t: tf.cast(t, tf.float32), name='as_float')(count)
  joined = tf_keras.layers.Concatenate(name='joined')([as_float, x])
  hidden = tf_keras.layers.Dense(16, activation='relu', name='hidden')(joined)
  return tf_keras.Model([count, x], tf_keras.layers.Dense(3, activation='softmax',
                                                          name='head')(hidden))


def _fine_tune_data(int_dtype=tf.int64):
  features, labels = _data(int_dtype=int_dtype)

  def dataset():
    return tf.data.Dataset.from_tensor_slices((features, labels)).shuffle(
        len(labels), seed=0).repeat().batch(FINE_TUNING.batch_size)

  return training.FineTuneData(train=dataset, eval=dataset)


def _trained(model, int_dtype=tf.int64, callbacks=None):
  training.fine_tune(model, _fine_tune_data(int_dtype), FINE_TUNING, None, callbacks)
  return model


def _int8(model, int_dtype=tf.int64, inference_io='native'):
  features, _ = _data(n=calibration.DEFAULT_CALIBRATION_SAMPLES, seed=1, int_dtype=int_dtype)
  return conversion.convert(model, 'int8', calibration.representative_dataset(features),
                            inference_io)


def _run(tflite_model, features):
  """The model's float outputs on a batch of features, fed as its input tensors take them."""
  runner = tflite.interpreter(tflite_model).get_signature_runner()
  feed = {}
  for name, detail in runner.get_input_details().items():
    value, (scale, zero_point) = features[name], detail['quantization']
    if scale:  # A float input given as int8.
      value = np.clip(np.round(value / scale + zero_point), -128, 127)
    feed[name] = value.astype(detail['dtype'])
  (name, detail), = runner.get_output_details().items()
  out = runner(**feed)[name]
  scale, zero_point = detail['quantization']
  return (out.astype(np.float32) - zero_point) * scale if scale else out


def _assert_int8_with_integer_input(tflite_model, keras_model, int_dtype=tf.int64,
                                    float_io=False):
  """No float op but the input's CAST, the dtypes of the I/O, and outputs close to Keras."""
  integer = np.dtype(int_dtype.as_numpy_dtype).name
  assert tflite.float_ops(tflite_model) == []
  assert tflite.integer_inputs(tflite_model) == {COUNT: integer}
  io = tflite.io_details(tflite_model)
  assert {t.name: t.dtype for t in io['inputs']} == {
      COUNT: integer, X: 'float32' if float_io else 'int8'}
  assert [t.dtype for t in io['outputs']] == ['float32' if float_io else 'int8']

  interp = tflite.interpreter(tflite_model)
  tensors = {d['index']: d for d in interp.get_tensor_details()}
  ops = interp._get_ops_details()  # pylint: disable=protected-access
  casts = [op for op in ops if op['op_name'] == 'CAST']
  assert [tensors[op['inputs'][0]]['name'] for op in casts] == [COUNT]
  cast_output = casts[0]['outputs'][0]
  # The CAST's float result goes straight to a QUANTIZE; every other tensor inside is integer.
  assert [op['op_name'] for op in ops if cast_output in op['inputs']] == ['QUANTIZE']
  boundary = {d['index'] for d in [*interp.get_input_details(), *interp.get_output_details()]}
  inner = {np.dtype(d['dtype']).name for i, d in tensors.items()
           if i not in boundary and i != cast_output}
  assert inner <= {'int8', 'int32'}, inner

  features, _ = _data(n=200, seed=2, int_dtype=int_dtype)
  expected = keras_model.predict(features, verbose=0)
  got = _run(tflite_model, features)
  _assert_close(got, expected)


def _assert_close(got, expected):
  """int8 outputs near the float ones: on average, and for all but the rare example whose
  activations leave the calibrated ranges (int8 clips them)."""
  difference = np.abs(got - expected).max(axis=1)
  assert difference.mean() < 0.02 and np.percentile(difference, 99) < 0.06, (
      difference.mean(), np.percentile(difference, 99))
  assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.95


@pytest.mark.parametrize('int_dtype,cast,inference_io', [
    (tf.int64, 'op', 'native'),
    (tf.int32, 'op', 'native'),
    (tf.int64, 'lambda', 'native'),
    (tf.int64, 'op', 'float32'),
])
def test_ptq_int8_keeps_the_integer_input_and_quantizes_everything_else(int_dtype, cast,
                                                                        inference_io):
  model = _trained(_two_input_model(int_dtype, cast), int_dtype)

  tflite_model = _int8(model, int_dtype, inference_io)

  _assert_int8_with_integer_input(tflite_model, model, int_dtype,
                                  float_io=inference_io == 'float32')


def test_pruned_model_converts_to_int8(tmp_path):
  model = _trained(_two_input_model())
  config = pruning.PruningConfig(target_sparsity=0.5)
  # The cast and the Concatenate have no weights: only the Dense layers are pruned.
  assert pruning.prunable_layers(model, config) == ['hidden', 'head']

  wrapped = pruning.prune(model, config, FINE_TUNING.total_steps)
  pruned = pruning.strip(_trained(wrapped, callbacks=pruning.callbacks(str(tmp_path))))

  assert pruning.sparsity(pruned, ['hidden', 'head'])[1] >= 0.45
  _assert_int8_with_integer_input(_int8(pruned), pruned)


def test_clustered_model_converts_to_int8():
  model = _trained(_two_input_model())
  config = clustering.ClusteringConfig(number_of_clusters=8)
  assert clustering.clusterable_layers(model, config) == (['hidden', 'head'], {})

  clustered = clustering.strip(_trained(clustering.cluster(model, config, False)))

  assert clustering.unique_weights(clustered, ['hidden', 'head']) == {'hidden': 8, 'head': 8}
  _assert_int8_with_integer_input(_int8(clustered), clustered)


@pytest.mark.parametrize('int_dtype', [tf.int64, tf.int32])
def test_prune_cluster_qat_model_converts_to_int8(int_dtype, tmp_path):
  model = _trained(_two_input_model(int_dtype), int_dtype)
  wrapped = pruning.prune(model, pruning.PruningConfig(target_sparsity=0.5),
                          FINE_TUNING.total_steps)
  pruned = pruning.strip(_trained(wrapped, int_dtype, pruning.callbacks(str(tmp_path))))
  clustered = clustering.strip(_trained(clustering.cluster(
      pruned, clustering.ClusteringConfig(number_of_clusters=8), preserve_sparsity=True),
                                        int_dtype))
  config = qat.QATConfig()
  scheme = qat.choose_scheme(config.scheme, ['prune', 'cluster'])

  quantized, floats = qat.plan(clustered, config)
  qat_model = _trained(qat.quantize(clustered, config, scheme, quantized), int_dtype)

  # The cast is part of the input: neither quantized nor reported as a float layer.
  assert scheme == 'prune_cluster_preserve'
  assert (quantized, floats) == (['joined', 'hidden', 'head'], [])
  _assert_int8_with_integer_input(_int8(qat_model, int_dtype), qat_model, int_dtype)


def test_qat_names_a_lambda_layer_it_cannot_rebuild():
  model = _two_input_model(cast='lambda')
  quantized, _ = qat.plan(model, qat.QATConfig())
  assert 'as_float' not in quantized

  with pytest.raises(errors.ConfigError, match=r"cannot rebuild the Lambda layers \['as_float'\]"
                     r'.*tf\.cast\(inputs, tf\.float32\)'):
    qat.quantize(model, qat.QATConfig(), 'default', quantized)


def test_inputs_of_different_shapes_and_integer_types():
  tf_keras.utils.set_random_seed(0)
  count = tf_keras.Input((1,), dtype=tf.int64, name='count')
  flags = tf_keras.Input((3,), dtype=tf.int32, name='flags')
  x = tf_keras.Input((6,), name='x')
  grid = tf_keras.Input((4, 4, 1), name='grid')
  seen = tf_keras.layers.Flatten()(tf_keras.layers.Conv2D(4, 3, activation='relu')(grid))
  joined = tf_keras.layers.Concatenate()(
      [tf.cast(count, tf.float32), tf.cast(flags, tf.float32), x, seen])
  hidden = tf_keras.layers.Dense(8, activation='relu')(joined)
  model = tf_keras.Model([count, flags, x, grid],
                         tf_keras.layers.Dense(3, activation='softmax')(hidden))
  rng = np.random.default_rng(0)

  def features(n):
    return {'count': rng.integers(0, 10, (n, 1)), 'flags': rng.integers(0, 2, (n, 3), np.int32),
            'x': rng.normal(size=(n, 6)).astype(np.float32),
            'grid': rng.random((n, 4, 4, 1), dtype=np.float32)}

  tflite_model = conversion.convert(
      model, 'int8', calibration.representative_dataset(
          features(calibration.DEFAULT_CALIBRATION_SAMPLES)))

  assert tflite.float_ops(tflite_model) == []
  assert tflite.integer_inputs(tflite_model) == {'serving_default_count:0': 'int64',
                                                 'serving_default_flags:0': 'int32'}
  shapes = {t.name: (t.dtype, t.shape) for t in tflite.io_details(tflite_model)['inputs']}
  assert shapes == {'serving_default_count:0': ('int64', [-1, 1]),
                    'serving_default_flags:0': ('int32', [-1, 3]),
                    'serving_default_x:0': ('int8', [-1, 6]),
                    'serving_default_grid:0': ('int8', [-1, 4, 4, 1])}
  test = features(200)
  _assert_close(_run(tflite_model, test), model.predict(test, verbose=0))


def test_an_integer_input_read_otherwise_than_by_a_cast_is_left_as_it_is():
  # count % 7 is integer math before the cast: the CAST then reads a model tensor, not the input,
  # and counts as a float op like the Concatenate it feeds.
  tf_keras.utils.set_random_seed(0)
  count = tf_keras.Input((1,), dtype=tf.int64, name='count')
  x = tf_keras.Input((4,), name='x')
  joined = tf_keras.layers.Concatenate()([tf.cast(tf.math.floormod(count, 7), tf.float32), x])
  model = tf_keras.Model([count, x], tf_keras.layers.Dense(3, activation='softmax')(joined))

  with pytest.raises(errors.ConversionError, match=r"mode='int8': 2 op\(s\) have no int8 kernel "
                     r'and were left in float: CAST \(.*\), CONCATENATION'):
    _int8(model)


def test_calibration_gives_integer_inputs_their_dtype(tmp_path):
  model = _two_input_model(tf.int32)
  records = [tf.train.Example(features=tf.train.Features(feature={
      'count': tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 10])),
      'x': tf.train.Feature(float_list=tf.train.FloatList(value=[0.5] * 4)),
  })).SerializeToString() for i in range(20)]

  parsed = calibration.to_input_arrays(records, model, source='test records')
  # What an input_fn gives: int64 (as parsed) or whole floats (a filled-in mean) for an int32.
  from_int64 = calibration.arrays_from_dataset(
      tf.data.Dataset.from_tensor_slices(({'count': np.arange(20)[:, None] % 10,
                                           'x': np.zeros((20, 4), np.float32)}, np.zeros(20)))
      .batch(8), model, 20, source='input_fn')
  from_floats = calibration.arrays_from_dataset(
      tf.data.Dataset.from_tensor_slices({'count': np.full((20, 1), 3.0),
                                          'x': np.zeros((20, 4), np.float32)}).batch(8),
      model, 20, source='input_fn')

  for arrays in (parsed, from_int64, from_floats):
    assert arrays['count'].dtype == np.int32 and arrays['x'].dtype == np.float32
  assert parsed['count'][:, 0].tolist() == [i % 10 for i in range(20)]
  assert from_floats['count'][:, 0].tolist() == [3] * 20


def test_calibration_refuses_fractions_for_an_integer_input():
  model = _two_input_model(tf.int64)
  dataset = tf.data.Dataset.from_tensor_slices(
      {'count': np.array([[1.0], [2.5], [4.0], [0.25]]), 'x': np.zeros((4, 4), np.float32)})

  with pytest.raises(errors.DataError, match="model input 'count' takes int64, but feature "
                     "'count' holds 2 values that are not whole numbers"):
    calibration.arrays_from_dataset(dataset.batch(2), model, 4, source='input_fn')


def test_executor_records_the_inputs_that_stay_integer(tmp_path):
  model = _trained(_two_input_model())
  features, labels = _data(n=120, seed=3)
  records = [tf.train.Example(features=tf.train.Features(feature={
      'count': tf.train.Feature(int64_list=tf.train.Int64List(value=features['count'][i])),
      'x': tf.train.Feature(float_list=tf.train.FloatList(value=features['x'][i])),
      'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[labels[i]])),
  })).SerializeToString() for i in range(len(labels))]
  examples = write_examples(str(tmp_path / 'examples'), {'train': records, 'eval': records})

  tflite_artifact, _ = run_ptq(keras_model_artifact(model, tmp_path / 'model'), examples,
                               tmp_path / 'out', calibration_samples=100)

  with open(os.path.join(tflite_artifact.uri, 'Format-Serving', 'tflite'), 'rb') as f:
    assert tflite.float_ops(f.read()) == []
  assert json.loads(tflite_artifact.get_string_custom_property(
      spec_keys.PROP_INTEGER_INPUTS)) == {COUNT: 'int64'}
  assert json.loads(tflite_artifact.get_string_custom_property(
      spec_keys.PROP_INPUT_DTYPES)) == {COUNT: 'int64', X: 'int8'}
