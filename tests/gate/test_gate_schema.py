"""GateExamplesGen: the gate fills missing model inputs as input_fn does, or refuses with counts.

Real data (scikit-learn's breast cancer with 20% of the cells removed), a real model with one
input per column, real TFLite conversions, the real GateExamplesGen and TFX Evaluator executors,
and the accuracy computed directly with LiteRT on the same filled values.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.components.evaluator import executor as evaluator_executor
from tfx.types import standard_artifacts
from tfx.utils import io_utils

from components import GateExamplesGen
from components import spec_keys
from components.common import evaluation
from components.common import tasks
from components.common import tflite
from components.errors import ConfigError
from components.errors import DataError
from components.common import device_extractors as extractors
from components.gate import gate_config
from components.gate import schema as schema_lib
from components.ptq_converter import calibration
from components.ptq_converter import conversion
from tests.conftest import write_examples
from tests.helpers import channel
from tests.helpers import tflite_model_artifact
from tests.pipelines import breast_cancer_module as module


def _example(values: dict, empty=()) -> bytes:
  """A tf.Example; a NaN value is left out, or written as an empty list for names in `empty`.

  CsvExampleGen writes an empty list for an empty cell; other producers leave the feature out.
  """
  feature = {}
  for name, value in values.items():
    if isinstance(value, int):
      feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    elif value is not None and not np.isnan(value):
      feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    elif name in empty:
      feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[]))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_the_summary_counts_missing_values_per_feature_and_merges():
  first = schema_lib.summarize([_example({'a': 1.0, 'b': np.nan, 'y': 1}, empty=['b']),
                                _example({'a': np.nan, 'b': np.nan, 'y': 0})])
  second = schema_lib.summarize([_example({'a': 2.0, 'b': 3.0, 'y': 1})])

  merged = schema_lib.SplitSummary.from_json(json.loads(json.dumps(first.to_json())))
  merged.merge(second)

  assert merged.examples == 3
  assert schema_lib.missing_counts(merged, ['a', 'b', 'y']) == {'a': 1, 'b': 2}
  assert merged.features['y'].kind == schema_lib.INT64


@pytest.mark.parametrize('inputs,fill,error,message', [
    ({'a': ('float32', 1), 'b': ('float32', 1)}, {}, DataError,
     r"of 4 examples, model inputs lack a value: 'a' in 1, 'b' in 2\. .*fill_missing"),
    ({'a': ('float32', 1), 'c': ('float32', 1)}, {'a': 0.0}, DataError,
     r"model input 'c' is in no example"),
    ({'a': ('float32', 1)}, {'b': 0.0}, ConfigError, r"fill_missing names \['b'\], which are not "
     r"inputs of the model; its inputs are \['a'\]"),
    ({'a': ('float32', 2)}, {'a': 0.0}, DataError, r"takes 2 value\(s\) per example but the "
     r"feature holds 1 to 1"),
    ({'y': ('float32', 1)}, {}, DataError, r"model input 'y' is float32 but the feature holds "
     r"int64_list values"),
    ({'n': ('uint16', 1)}, {}, DataError, r"model input 'n' is uint16, which the gate cannot "
     "feed"),
])
def test_data_the_gate_cannot_feed_is_refused_with_names_and_counts(inputs, fill, error,
                                                                    message):
  summary = schema_lib.summarize([
      _example({'a': 1.0, 'b': np.nan, 'n': 3, 'y': 1}),
      _example({'a': np.nan, 'b': np.nan, 'n': 4, 'y': 0}),
      _example({'a': 2.0, 'b': 3.0, 'n': 5, 'y': 1}),
      _example({'a': 2.0, 'b': 3.0, 'n': 6, 'y': 1}),
  ])

  with pytest.raises(error, match=message):
    schema_lib.gate_schema(summary, inputs, 'y', fill, source='the test data')


def test_a_multi_hot_label_is_read_with_its_width_and_a_ragged_one_is_refused():
  def example(labels):
    return tf.train.Example(features=tf.train.Features(feature={
        'a': tf.train.Feature(float_list=tf.train.FloatList(value=[1.0])),
        'y': tf.train.Feature(int64_list=tf.train.Int64List(value=labels)),
    })).SerializeToString()
  inputs = {'a': ('float32', 1)}

  schema = schema_lib.gate_schema(schema_lib.summarize([example([0, 1, 1]), example([1, 0, 0])]),
                                  inputs, 'y', {}, 'eval')

  label = schema.tensor_representation_group[''].tensor_representation['y'].dense_tensor
  assert [d.size for d in label.shape.dim] == [3]
  with pytest.raises(DataError, match=r"label 'y' holds 1 to 3 values per example"):
    schema_lib.gate_schema(schema_lib.summarize([example([0, 1, 1]), example([1])]), inputs, 'y',
                           {}, 'eval')


def test_an_unlabelled_example_is_refused():
  summary = schema_lib.summarize([_example({'a': 1.0, 'y': 1}), _example({'a': 1.0})])

  with pytest.raises(DataError, match=r"label 'y' is missing in 1 of 2 examples"):
    schema_lib.gate_schema(summary, {'a': ('float32', 1)}, 'y', {}, source='the test data')


@pytest.mark.parametrize('fill', [{'a': float('nan')}, {'a': True}, {'': 1.0}, ['a']])
def test_fill_values_are_checked_when_the_pipeline_is_built(fill):
  with pytest.raises(ConfigError, match='fill_missing'):
    GateExamplesGen(examples=channel(standard_artifacts.Examples), model=channel(),
                  label_key='y', fill_missing=fill)


@pytest.fixture(scope='module')
def tabular_case(tmp_path_factory):
  """Breast cancer with 20% missing cells as Examples, and float32/int8 TFLite of a model."""
  root = tmp_path_factory.mktemp('tabular')
  data = module.write_csv(str(root / 'unused.csv'))
  x, y = data['x'], data['y']
  # Half the features' gaps are empty lists (as CsvExampleGen writes), half absent features.
  records = [_example({**dict(zip(module.FEATURES, row)), module.LABEL: int(label)},
                      empty=module.FEATURES[::2]) for row, label in zip(x, y)]
  examples = write_examples(str(root / 'examples'),
                            {'train': records[:400], 'eval': records[400:]})
  filled = np.nan_to_num(x, nan=0.0).astype(np.float32)  # What input_fn feeds: the spec's 0.0.
  model = module.build_model()
  model.fit([filled[:400, i:i + 1] for i in range(30)], y[:400], epochs=20, verbose=0)
  arrays = {name: filled[:300, i:i + 1] for i, name in enumerate(module.FEATURES)}
  models = {
      'float32': conversion.convert(model, 'float32'),
      'int8': conversion.convert(model, 'int8', calibration.representative_dataset(arrays)),
  }
  return dict(root=root, examples=examples, eval_x=filled[400:], eval_y=y[400:], models=models,
              missing=int(np.isnan(x[400:]).sum()))


def _run_gate_schema(case, out, fill_missing, task=None):
  baseline = tflite_model_artifact(out / 'baseline', case['models']['float32'], mode='float32')
  component = GateExamplesGen(examples=channel(standard_artifacts.Examples), model=channel(),
                            label_key=module.LABEL, fill_missing=fill_missing, task=task)
  schema, examples = standard_artifacts.Schema(), standard_artifacts.Examples()
  schema.uri, examples.uri = str(out / 'schema'), str(out / 'gate_examples')
  component.EXECUTOR_SPEC.executor_class().Do(
      {spec_keys.EXAMPLES_KEY: [case['examples']], spec_keys.MODEL_KEY: [baseline]},
      {spec_keys.SCHEMA_KEY: [schema], spec_keys.GATE_EXAMPLES_KEY: [examples]},
      dict(component.exec_properties))
  return baseline, schema, examples


def test_a_task_whose_metric_cannot_measure_the_model_stops_before_the_data_is_read(
    tabular_case, tmp_path):
  # One sigmoid unit gated as multi-class: the argmax would always be class 0.
  with pytest.raises(ConfigError, match=r"GateExamplesGen: the gate cannot measure the model .*"
                     r"the argmax of one unit is always class 0.*Use task='binary'"):
    _run_gate_schema(tabular_case, tmp_path / 'multiclass', module.FILL_MISSING,
                     task=tasks.MULTICLASS)
  assert not (tmp_path / 'multiclass' / 'gate_examples').exists()
  with pytest.raises(ConfigError, match="task='binray' is not accepted; accepted: multiclass"):
    GateExamplesGen(examples=channel(standard_artifacts.Examples), model=channel(),
                    label_key=module.LABEL, task='binray')

  _, schema, _ = _run_gate_schema(tabular_case, tmp_path / 'binary', module.FILL_MISSING,
                                  task=tasks.BINARY)
  assert schema.get_int_custom_property(spec_keys.PROP_EVAL_EXAMPLES) == 169


def _litert_accuracy(tflite_model, x, y):
  """Binary accuracy at 0.5 with LiteRT, inputs quantized as a device does (round, saturate)."""
  interp = tflite.interpreter(tflite_model)
  interp.allocate_tensors()
  details = interp.get_input_details()
  [out] = interp.get_output_details()
  correct = 0
  for row, label in zip(x, y):
    for detail in details:
      value = np.float32(row[module.FEATURES.index(tflite.feature_name(detail['name']))])
      value = np.full((1, 1), value, np.float32)
      if detail['dtype'] == np.int8:
        scale, zero = detail['quantization']
        value = np.clip(np.round(value / scale + zero), -128, 127).astype(np.int8)
      interp.set_tensor(detail['index'], value)
    interp.invoke()
    score = interp.get_tensor(out['index']).astype(np.float32)[0, 0]
    if out['dtype'] == np.int8:
      scale, zero = out['quantization']
      score = (score - zero) * scale
    correct += int((score > 0.5) == bool(label))
  return correct / len(y)


def test_without_fill_values_the_gate_refuses_the_data_naming_features_and_counts(
    tabular_case, tmp_path):
  with pytest.raises(DataError) as raised:
    _run_gate_schema(tabular_case, tmp_path, fill_missing=None)

  message = str(raised.value)
  assert f'of {len(tabular_case["eval_y"])} examples, model inputs lack a value: ' in message
  counts = {m: message.count(f"'{m}' in ") for m in module.FEATURES}
  assert all(counts.values()), counts  # Every feature lost cells: every one is named.
  assert '--fill-missing NAME=VALUE' in message


@pytest.mark.e2e
def test_the_evaluator_fills_missing_inputs_and_measures_what_the_device_computes(
    tabular_case, tmp_path):
  baseline, schema, examples = _run_gate_schema(tabular_case, tmp_path, module.FILL_MISSING)

  missing = json.loads(schema.get_string_custom_property(spec_keys.PROP_MISSING_VALUES))
  assert sum(missing.values()) == tabular_case['missing']
  assert schema.get_int_custom_property(spec_keys.PROP_EVAL_EXAMPLES) == 169
  parsed = io_utils.SchemaReader().read(os.path.join(schema.uri, spec_keys.SCHEMA_FILE_NAME))
  group = parsed.tensor_representation_group[''].tensor_representation
  assert group['f00'].dense_tensor.default_value.float_value == 0.0

  candidate = tflite_model_artifact(tmp_path / 'candidate', tabular_case['models']['int8'])
  component = tfx.components.Evaluator(
      examples=channel(standard_artifacts.Examples), model=channel(),
      baseline_model=channel(), schema=channel(standard_artifacts.Schema),
      eval_config=gate_config(module.LABEL, tasks.BINARY),
      module_path=extractors.MODULE_PATH)  # As the pipeline's Evaluators.
  output, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
  output.uri, blessing.uri = str(tmp_path / 'evaluation'), str(tmp_path / 'blessing')
  evaluator_executor.Executor().Do(
      {'examples': [examples], 'model': [candidate],
       'baseline_model': [baseline], 'schema': [schema]},
      {'evaluation': [output], 'blessing': [blessing]}, dict(component.exec_properties))

  values = evaluation.metric_values(output.uri, 'binary_accuracy')
  x, y = tabular_case['eval_x'], tabular_case['eval_y']
  assert values[evaluation.BASELINE] == pytest.approx(
      _litert_accuracy(tabular_case['models']['float32'], x, y), abs=1e-9)
  assert values[evaluation.CANDIDATE] == pytest.approx(
      _litert_accuracy(tabular_case['models']['int8'], x, y), abs=1e-9)
  assert values[evaluation.BASELINE] > 0.85
  assert tfma.load_validation_result(output.uri).validation_ok


def test_fill_example_fills_absent_and_empty_inputs_with_their_dtype_and_length():
  inputs = {'a': ('float32', 2), 'n': ('int64', 1), 'b': ('float32', 1)}
  fill = schema_lib.resolve_fill_missing({'*': 0.5, 'n': 7}, inputs)
  assert fill == {'a': 0.5, 'b': 0.5, 'n': 7.0}

  filled = tf.train.Example.FromString(schema_lib.fill_example(
      _example({'b': np.nan, 'y': 1}, empty=['b']), fill, inputs)).features.feature

  assert list(filled['a'].float_list.value) == [0.5, 0.5]
  assert list(filled['n'].int64_list.value) == [7]
  assert list(filled['b'].float_list.value) == [0.5]
  present = _example({'a': 1.0, 'y': 1})
  assert schema_lib.fill_example(present, {'a': 9.0}, {'a': ('float32', 1)}) == present


def test_fill_values_come_from_the_feature_specs_defaults():
  spec = {'a': tf.io.FixedLenFeature([1], tf.float32, default_value=[0.25]),
          'n': tf.io.FixedLenFeature([2], tf.int64, default_value=[3, 3]),
          'label': tf.io.FixedLenFeature([], tf.int64),
          'text': tf.io.VarLenFeature(tf.string)}
  assert schema_lib.fill_missing_from_feature_spec(spec) == {'a': 0.25, 'n': 3.0}
  with pytest.raises(ConfigError, match=r"feature spec 'v': default_value=\[1, 2\] holds "
                     'several values'):
    schema_lib.fill_missing_from_feature_spec(
        {'v': tf.io.FixedLenFeature([2], tf.int64, default_value=[1, 2])})
