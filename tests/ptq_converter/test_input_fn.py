"""Calibration through the module's input_fn: real tabular data with missing values.

scikit-learn's breast cancer, one tf.Example feature per column as CsvExampleGen writes them, with
20% of the cells left out (a CSV's empty cells). The model reads one input per column; the user's
input_fn fills a missing cell with the column mean (0 after standardization), as in training.
"""
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import standard_artifacts
import tf_keras

from components import PTQConverter
from components import errors
from components import spec_keys
from components.common import model_io
from components.common import tflite
from components.common import user_code
from components.ptq_converter import calibration
from tests.conftest import write_examples
from tests.helpers import breast_cancer_data
from tests.helpers import channel
from tests.helpers import keras_model_artifact

COLUMNS = [f'f{i}' for i in range(30)]
_MODULE = '''
import tensorflow as tf

COLUMNS = [f'f{i}' for i in range(30)]
# A missing cell is the column mean: 0 for standardized columns.
SPEC = {name: tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]) for name in COLUMNS}
SPEC['label'] = tf.io.FixedLenFeature([], tf.int64)


def input_fn(file_pattern, data_accessor, batch_size=32):
  files = [f for pattern in file_pattern for f in tf.io.gfile.glob(pattern)]

  def parse(records):
    features = tf.io.parse_example(records, SPEC)
    return features, features.pop('label')

  records = tf.data.TFRecordDataset(files, compression_type='GZIP')
  return records.batch(batch_size).map(parse).repeat()
'''


def _records(x, y, holes):
  out = []
  for row, label, missing in zip(x, y, holes):
    feature = {name: tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
               for name, value, gone in zip(COLUMNS, row, missing) if not gone}
    feature['label'] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
    out.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
  return out


@pytest.fixture(scope='module')
def case(tmp_path_factory):
  x, y = breast_cancer_data()
  holes = np.random.default_rng(1).random(x.shape) < 0.2
  filled = np.where(holes, 0.0, x).astype(np.float32)
  root = tmp_path_factory.mktemp('missing_cells')
  examples = write_examples(str(root / 'examples'), {
      'train': _records(x[:400], y[:400], holes[:400]),
      'eval': _records(x[400:], y[400:], holes[400:])})
  module = root / 'module.py'
  module.write_text(_MODULE)
  # One input per column, joined inside the model: what a tabular Keras model usually looks like.
  tf_keras.utils.set_random_seed(0)
  inputs = [tf_keras.Input((1,), name=name) for name in COLUMNS]
  hidden = tf_keras.layers.Dense(16, activation='relu')(tf_keras.layers.Concatenate()(inputs))
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(1, activation='sigmoid')(hidden))
  model.compile('adam', 'binary_crossentropy')
  model.fit({name: filled[:400, i:i + 1] for i, name in enumerate(COLUMNS)}, y[:400],
            epochs=30, verbose=0)
  return dict(root=root, examples=examples, module=str(module), eval_x=filled[400:],
              eval_y=y[400:], holes=holes,
              model=keras_model_artifact(model, root / 'trained'))


def _convert(case, out, **kwargs):
  component = PTQConverter(model=channel(), examples=channel(standard_artifacts.Examples),
                           mode='int8', inference_io='float32', calibration_samples=300,
                           label_key='label', **kwargs)
  tflite_model, calib = standard_artifacts.Model(), standard_artifacts.Examples()
  tflite_model.uri, calib.uri = str(out / 'tflite'), str(out / 'calibration')
  component.EXECUTOR_SPEC.executor_class().Do(
      {spec_keys.MODEL_KEY: [case['model']], spec_keys.EXAMPLES_KEY: [case['examples']]},
      {spec_keys.TFLITE_MODEL_KEY: [tflite_model], spec_keys.CALIBRATION_KEY: [calib]},
      dict(component.exec_properties))
  return tflite_model


def _accuracy(data, x, y):
  interp = tflite.interpreter(data)
  interp.allocate_tensors()
  by_name = {d['name'].split(':')[0].removeprefix('serving_default_'): d['index']
             for d in interp.get_input_details()}
  out = interp.get_output_details()[0]['index']
  correct = 0
  for row, label in zip(x, y):
    for i, name in enumerate(COLUMNS):
      interp.set_tensor(by_name[name], row[None, i:i + 1])
    interp.invoke()
    correct += int((interp.get_tensor(out)[0, 0] > 0.5) == bool(label))
  return correct / len(y)


def test_without_input_fn_the_missing_features_are_counted_and_the_way_out_named(case, tmp_path):
  with pytest.raises(errors.DataError) as raised:
    _convert(case, tmp_path)

  message = str(raised.value)
  assert message.startswith('calibration examples from ')
  # Each column lacks its value in about a fifth of the 300 sampled examples.
  counts = [int(n) for n in re.findall(r"'f\d+' \((\d+) of 300 examples\)", message)]
  assert len(counts) == 30 and all(30 < n < 90 for n in counts), message
  assert "Give PTQConverter the module's input_fn (input_fn= or module_file=)" in message
  assert not os.path.exists(tmp_path / 'tflite' / 'model.tflite')


def test_a_module_without_input_fn_falls_back_to_parsing_by_input_name(case, tmp_path):
  # The examples are read by model input name, whose missing cells are counted as above.
  module = tmp_path / 'run_fn_only.py'
  module.write_text('def run_fn(fn_args):\n  raise NotImplementedError\n')
  with pytest.raises(errors.DataError, match=r"^calibration examples from .*'f\d+' \(\d+ of 300 "):
    _convert(case, tmp_path, module_file=str(module))
  # Fine-tuning cannot do without it: a clear error naming the module.
  with pytest.raises(errors.ConfigError, match=r"module_file='.*run_fn_only.py' has no input_fn"):
    user_code.bind_input_fn({spec_keys.MODULE_FILE_KEY: str(module)}, [case['examples']],
                            ['train', 'eval'])


def test_with_the_modules_input_fn_the_model_converts_and_keeps_its_accuracy(case, tmp_path):
  model = _convert(case, tmp_path, module_file=case['module'])

  data = model_io.read_tflite(model.uri, 'test')
  assert model.get_int_custom_property(spec_keys.PROP_CALIBRATION_COUNT) == 300
  int8 = _accuracy(data, case['eval_x'], case['eval_y'])
  keras = model_io.load_keras_model(case['model'].uri)
  scores = keras.predict({n: case['eval_x'][:, i:i + 1] for i, n in enumerate(COLUMNS)},
                         verbose=0)[:, 0]
  float_accuracy = float(np.mean((scores > 0.5) == case['eval_y']))
  assert float_accuracy > 0.9
  assert int8 >= float_accuracy - 0.02, (int8, float_accuracy)
  assert tflite.float_ops(data) == []  # Int8 throughout; float only at the model's boundary.


def test_the_pipeline_gives_its_input_fn_to_every_int8_converter(tmp_path):
  from pipelines import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  built = pipeline_lib.create_pipeline('p', str(tmp_path / 'root'), str(tmp_path / 'data'),
                                       str(tmp_path / 'ota'), str(tmp_path / 'keys'),
                                       variants=['ptq', 'pruned'])
  converters = {c.id: c.exec_properties for c in built.components if isinstance(c, PTQConverter)}
  assert converters[pipeline_lib.int8_node('ptq')][spec_keys.INPUT_FN_KEY] == (
      pipeline_lib.DEFAULT_INPUT_FN)
  assert converters[pipeline_lib.int8_node('pruned')][spec_keys.INPUT_FN_KEY] == (
      pipeline_lib.DEFAULT_INPUT_FN)
  assert converters[pipeline_lib.PTQ_FLOAT32].get(spec_keys.INPUT_FN_KEY) is None


def test_both_sources_of_input_fn_are_refused_when_the_pipeline_is_built():
  with pytest.raises(errors.ConfigError, match='give at most one of input_fn='):
    PTQConverter(model=channel(), examples=channel(standard_artifacts.Examples),
                 input_fn='pipelines.digits_module.input_fn', module_file='m.py')


def _model(**inputs):
  keras_inputs = [tf_keras.Input(shape, name=name) for name, shape in inputs.items()]
  joined = (tf_keras.layers.Concatenate()(keras_inputs) if len(keras_inputs) > 1 else
            keras_inputs[0])
  return tf_keras.Model(keras_inputs, tf_keras.layers.Dense(1)(joined))


@pytest.mark.parametrize('features,message', [
    ({'a': tf.zeros((4, 2))}, r"input_fn gives no feature for model inputs \['b'\]; it gives "
     r"\['a'\]"),
    ({'a': tf.zeros((4, 2)), 'b': tf.sparse.from_dense(tf.zeros((4, 3)))},
     r"input_fn gives model inputs \['b'\] as sparse or ragged tensors"),
    ({'a': tf.zeros((4, 2)), 'b': tf.fill((4, 3), np.nan)}, "feature 'b' holds 12 NaN or Inf"),
])
def test_what_input_fn_gives_is_checked_against_the_model(features, message):
  dataset = tf.data.Dataset.from_tensors((features, tf.zeros((4,))))
  with pytest.raises(errors.DataError, match=message):
    calibration.arrays_from_dataset(dataset, _model(a=(2,), b=(3,)), 4, source='test')


def test_reading_stops_at_the_sample_size_of_a_repeating_input_fn():
  dataset = tf.data.Dataset.from_tensors(({'a': tf.range(8, dtype=tf.float32)[:, None]},
                                          tf.zeros((8,)))).repeat()
  arrays = calibration.arrays_from_dataset(dataset, _model(a=(1,)), 20, source='test')
  assert arrays['a'].shape == (20, 1)
  assert arrays['a'][:, 0].tolist() == [*range(8), *range(8), *range(4)]
