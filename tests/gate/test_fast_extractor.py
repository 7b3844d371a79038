"""The gate's fast TFLite predictions: TFMA's metrics bit for bit on TFMA's kernels, and on
XNNPACK what LiteRT computes by default, within the documented tolerance of TFMA's figures.

Real digits models (float32, int8, and int8 converted with a fixed batch of one), real TFMA
evaluations with the gate's EvalConfig plus metrics that read every output value, real LiteRT
interpreters. DevicePredictionDoFn is compared with DeviceQuantizationDoFn (TFMA's extractor and
builtin kernels, int8 inputs rounded as on a device) and, for float32, with TFMA's own extractor.
"""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
import tf_keras
from tensorflow_model_analysis import constants

from benchmarks import data_scale
from components.common import device_extractors
from components.common import evaluation
from components.gate import gate_config
from components.ptq_converter import calibration
from components.ptq_converter import conversion
from pipelines import data

# Metrics beside the gate's that depend on every output value, not only on the argmax.
PROBABILITY_METRICS = ('SparseCategoricalCrossentropy', 'MultiClassConfusionMatrixPlot')
EXAMPLES = 400


def _digits(n, seed):
  records = list(data_scale.scaled_digits(n, seed=seed))
  parsed = [tf.train.Example.FromString(r).features.feature for r in records]
  x = np.array([f[data.PIXELS_KEY].float_list.value for f in parsed], np.float32)
  y = np.array([f[data.LABEL_KEY].int64_list.value[0] for f in parsed])
  return records, x, y


@pytest.fixture(scope='module')
def case(tmp_path_factory):
  """Digits models converted three ways, and an eval file of noisy shifted digits."""
  _, train_x, train_y = _digits(1500, seed=0)
  records, x, y = _digits(EXAMPLES, seed=1)
  root = tmp_path_factory.mktemp('fast_gate')
  path = str(root / 'eval.tfrecord')
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)
  tf_keras.utils.set_random_seed(0)
  model = tf_keras.Sequential([tf_keras.Input((data.NUM_PIXELS,), name=data.PIXELS_KEY),
                               tf_keras.layers.Dense(32, activation='relu'),
                               tf_keras.layers.Dense(data.NUM_CLASSES, activation='softmax')])
  model.compile('adam', 'sparse_categorical_crossentropy')
  model.fit(train_x, train_y, epochs=15, batch_size=64, verbose=0)
  # The same weights behind an input of fixed batch 1, as some converters and devices have it.
  inputs = tf_keras.Input((data.NUM_PIXELS,), batch_size=1, name=data.PIXELS_KEY)
  fixed = tf_keras.Model(inputs, model(inputs))
  samples = calibration.representative_dataset({data.PIXELS_KEY: train_x[:300]})
  models = {'float32': conversion.convert(model, 'float32'),
            'int8': conversion.convert(model, 'int8', samples),
            'int8_batch1': conversion.convert(fixed, 'int8', samples)}
  return dict(root=root, data=path, x=x, y=y, models=models)


def _shared_models(case, candidate, config, name):
  shared = []
  for model_name, model in ((evaluation.CANDIDATE, case['models'][candidate]),
                            (evaluation.BASELINE, case['models']['float32'])):
    model_dir = case['root'] / name / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / 'tflite').write_bytes(model)
    shared.append(tfma.default_eval_shared_model(
        eval_saved_model_path=str(model_dir), model_name=model_name, eval_config=config))
  return shared


class BuiltinKernelsDoFn(device_extractors.DevicePredictionDoFn):
  """The gate's DoFn on TFMA's kernels: isolates batching and input assembly from XNNPACK."""
  OP_RESOLVER = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES


def _builtin_kernels(shared, config, tensor_adapter_config):
  return device_extractors.extractors_with(shared, config, tensor_adapter_config,
                                           BuiltinKernelsDoFn)


def _metrics(case, candidate, extractors, name):
  """{(slice, model, metric, is_diff): MetricValue}, the plots and the verdict of one TFMA run."""
  config = gate_config(data.LABEL_KEY, extra_metrics=PROBABILITY_METRICS)
  shared = _shared_models(case, candidate, config, name)
  output = str(case['root'] / name / 'evaluation')
  chosen = None if extractors is None else extractors(shared, config, None)
  tfma.run_model_analysis(eval_shared_model=shared, eval_config=config,
                          data_location=case['data'], output_path=output, extractors=chosen)
  values = {}
  for per_slice in tfma.load_metrics(output):
    for kv in per_slice.metric_keys_and_values:
      key = (evaluation.slice_text(per_slice.slice_key), kv.key.model_name, kv.key.name,
             kv.key.is_diff)
      values[key] = kv.value
  plots = sorted(p.SerializeToString(deterministic=True) for p in tfma.load_plots(output))
  return values, plots, tfma.load_validation_result(output).validation_ok


def _serialized(metrics):
  values, plots, blessed = metrics
  return {k: v.SerializeToString(deterministic=True) for k, v in values.items()}, plots, blessed


def _xnnpack_accuracy(model, x, y):
  """Top-1 accuracy of a model as LiteRT runs it by default (XNNPACK), inputs rounded."""
  interp = tf.lite.Interpreter(model_content=model, num_threads=1)
  [inp], [out] = interp.get_input_details(), interp.get_output_details()
  if inp['dtype'] == np.int8:
    scale, zero = inp['quantization']
    x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
  correct = 0
  interp.allocate_tensors()
  for row, label in zip(x, y):  # One example at a time, as on a device.
    interp.set_tensor(inp['index'], row[None])
    interp.invoke()
    correct += int(np.argmax(interp.get_tensor(out['index'])[0]) == label)
  return correct / len(y)


@pytest.mark.parametrize('candidate', ['float32', 'int8', 'int8_batch1'])
def test_batched_predictions_give_every_metric_of_tfmas_extractor_bit_for_bit(case, candidate):
  # Same kernels as TFMA: only batching and input assembly differ, and nothing may change.
  reference = _metrics(case, candidate, device_extractors.reference_extractors,
                       f'{candidate}_reference')
  fast = _metrics(case, candidate, _builtin_kernels, f'{candidate}_builtin')

  values, _, _ = fast
  assert len(values) >= 8  # Both models, each metric, the diffs: the comparison compares.
  assert _serialized(fast) == _serialized(reference)
  if candidate == 'float32':
    # TFMA's own extractor (no custom extractors) too: a float input is fed as is.
    assert _serialized(_metrics(case, candidate, None, 'float32_tfma')) == _serialized(fast)


@pytest.mark.parametrize('candidate', ['float32', 'int8'])
def test_the_gate_with_xnnpack_measures_what_litert_computes_on_a_device(case, candidate):
  reference = _metrics(case, candidate, device_extractors.reference_extractors,
                       f'{candidate}_reference_x')
  gate = _metrics(case, candidate, device_extractors.custom_extractors, f'{candidate}_gate')

  values, _, blessed = gate
  accuracy = {k[1]: v.double_value.value for k, v in values.items()
              if k[2] == evaluation.ACCURACY_METRIC and not k[3]}
  x, y = case['x'], case['y']
  assert accuracy[evaluation.CANDIDATE] == pytest.approx(
      _xnnpack_accuracy(case['models'][candidate], x, y), abs=1e-6)  # float32 metric
  assert accuracy[evaluation.BASELINE] == pytest.approx(
      _xnnpack_accuracy(case['models']['float32'], x, y), abs=1e-6)
  assert blessed == reference[2]
  assert set(values) == set(reference[0])
  # The documented tolerance (docs/accuracy_gate.md): float32 outputs differ from the builtin
  # kernels' in the last bits (never the argmax here), so every metric within 1e-5; int8
  # outputs by a few steps, which moves the accuracy by at most an example or two in this data.
  compared = 0
  for key, value in values.items():
    if value.HasField('double_value') and (candidate == 'float32' or key[2] in (
        evaluation.ACCURACY_METRIC, 'example_count')):
      tolerance = 1e-5 if candidate == 'float32' else 2 / len(y)
      assert value.double_value.value == pytest.approx(
          reference[0][key].double_value.value, abs=tolerance, rel=tolerance), key
      compared += 1
  assert compared >= 4


def _element(x):
  """A batched extract as TFMA's features extractor makes it, with one more key."""
  return {constants.FEATURES_KEY: {data.PIXELS_KEY: x}, 'ids': np.arange(len(x))}


def _do_fn(case, do_fn_class, models):
  """A set-up prediction DoFn with one model spec per model given (one: TFMA names it '')."""
  config = tfma.EvalConfig()
  shared = {}
  for name in models:
    config.model_specs.add(name=name, label_key=data.LABEL_KEY, model_type=tfma.TF_LITE)
    model_dir = case['root'] / 'do_fn' / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / 'tflite').write_bytes(case['models'][name])
    key = name if len(models) > 1 else ''
    shared[key] = tfma.default_eval_shared_model(
        eval_saved_model_path=str(model_dir), model_name=key, eval_config=config)
  fn = do_fn_class(eval_config=config, eval_shared_models=shared)
  fn.setup()
  return fn


def test_batches_of_any_size_predict_as_tfmas_extractor_on_the_same_kernels(case):
  names = ['float32', 'int8', 'int8_batch1']
  fast = _do_fn(case, BuiltinKernelsDoFn, names)
  reference = _do_fn(case, device_extractors.DeviceQuantizationDoFn, names)
  x = case['x']
  # TFMA's batches grow and shrink; the interpreter is resized only when the size changes.
  # (The builtin float32 kernels round differently at batch 1 than at larger batches, so each
  # side invokes on the same batch.)
  for start, stop in ((0, 1), (1, 33), (33, 65), (65, 400), (0, 400)):
    [got] = fast.process(_element(x[start:stop]))
    [want] = reference.process(_element(x[start:stop]))
    for name in names:
      assert got[constants.PREDICTIONS_KEY][name].shape == (stop - start, data.NUM_CLASSES)
      np.testing.assert_array_equal(got[constants.PREDICTIONS_KEY][name],
                                    want[constants.PREDICTIONS_KEY][name])
      assert got[constants.PREDICTIONS_KEY][name].dtype == want[
          constants.PREDICTIONS_KEY][name].dtype
    np.testing.assert_array_equal(got['ids'], np.arange(stop - start))  # Passed on.
  assert fast._batch['float32'] == 400 and fast._batch['int8_batch1'] == 1  # pylint: disable=protected-access


def test_a_batch_that_is_not_dense_takes_tfmas_per_example_path(case):
  fast = _do_fn(case, BuiltinKernelsDoFn, ['int8'])
  reference = _do_fn(case, device_extractors.DeviceQuantizationDoFn, ['int8'])
  # A list of per-example arrays, as a ragged feature arrives: not one dense array.
  ragged = np.empty(3, dtype=object)
  for i in range(3):
    ragged[i] = case['x'][i]

  [got] = fast.process(_element(ragged))
  [want] = reference.process(_element(ragged))
  np.testing.assert_array_equal(got[constants.PREDICTIONS_KEY], want[constants.PREDICTIONS_KEY])
  # Then a dense batch again, after TFMA's path resized the interpreter its own way.
  [got] = fast.process(_element(case['x'][:5]))
  [want] = reference.process(_element(case['x'][:5]))
  np.testing.assert_array_equal(got[constants.PREDICTIONS_KEY], want[constants.PREDICTIONS_KEY])


def test_xnnpack_predictions_do_not_depend_on_the_batch(case):
  fast = _do_fn(case, device_extractors.DevicePredictionDoFn, ['float32', 'int8'])
  x = case['x']
  [whole] = fast.process(_element(x))
  parts = [fast.process(_element(x[i:i + 7]))[0] for i in range(0, len(x), 7)]
  for name in ('float32', 'int8'):
    joined = np.concatenate([p[constants.PREDICTIONS_KEY][name] for p in parts])
    np.testing.assert_array_equal(whole[constants.PREDICTIONS_KEY][name], joined)
