"""A user's own data and module through `python -m pipelines.run_local --data ...`.

Real CSV (scikit-learn's breast cancer, 20% of the cells empty) through CsvExampleGen, a
one-sigmoid-unit model from a module file whose input_fn fills missing values, the binary gate,
and the push; the gate's accuracy is checked against LiteRT on the same eval examples.
"""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from components.common import examples_io
from components.common import tflite
from components.ota import repository
from pipelines import pipeline as pipeline_lib
from pipelines import summary
from tests.conftest import REPO_ROOT
from tests.pipelines import breast_cancer_module as module
from tests.pipelines.test_e2e import run_pipeline

pytestmark = pytest.mark.e2e
MODULE_FILE = os.path.join(REPO_ROOT, 'tests', 'pipelines', 'breast_cancer_module.py')
PIPELINE = 'tfx_edge_breast_cancer'
# Few steps: the data are small and the model is one hidden layer.
QUICK = ['--train-steps', '300', '--finetune-epochs', '1', '--finetune-steps', '30',
         '--bench-threads', '1', '--bench-min-duration', '0.1',
         # About 113 eval examples: one example is 0.9 points, so allow three.
         '--max-accuracy-drop', '0.03']


def _run(tmp_path, *args, module_file=MODULE_FILE):
  data_dir = tmp_path / 'csv'
  module.write_csv(str(data_dir / 'breast_cancer.csv'))
  output_dir = tmp_path / 'out'
  output = run_pipeline(output_dir, '--data', str(data_dir), '--module-file', module_file,
                        '--label-key', module.LABEL, '--task', 'binary', '--model-name', 'tumor',
                        '--pipeline-name', PIPELINE, *QUICK, *args)
  paths = pipeline_lib.demo_paths(str(output_dir))
  rows = {r.variant: r for r in summary.summarize(paths['metadata_path'], PIPELINE)}
  return paths, rows, output


def _eval_examples(paths):
  """The eval split CsvExampleGen wrote: (inputs with missing cells filled as input_fn does, y)."""
  [split] = glob.glob(os.path.join(paths['pipeline_root'], pipeline_lib.CSV_EXAMPLE_GEN,
                                   'examples', '*', 'Split-eval'))
  x, y = [], []
  for record in examples_io.read_records(os.path.join(split, '*')):
    features = tf.train.Example.FromString(record).features.feature
    # An empty cell is an empty list in what CsvExampleGen writes.
    x.append([features[n].float_list.value[0] if features[n].float_list.value
              else module.FILL_MISSING[n] for n in module.FEATURES])
    y.append(features[module.LABEL].int64_list.value[0])
  return np.asarray(x, np.float32), np.asarray(y)


def _litert_accuracy(tflite_model, x, y):
  """Binary accuracy with LiteRT, inputs quantized as a device does (round, saturate)."""
  interp = tf.lite.Interpreter(model_content=tflite_model)
  interp.allocate_tensors()
  [out] = interp.get_output_details()
  correct = 0
  for row, label in zip(x, y):
    for detail in interp.get_input_details():
      value = np.full((1, 1), row[module.FEATURES.index(
          tflite.feature_name(detail['name']))], np.float32)
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


def test_csv_with_missing_cells_reaches_a_push_and_the_gate_measures_what_the_device_does(tmp_path):
  paths, rows, output = _run(tmp_path, '--variants', 'ptq,clustered')

  pushed = [r for r in rows.values() if r.pushed_to != '-']
  assert len(pushed) == 1, output[-3000:]
  [release] = repository.OTARepository(paths['ota_repository']).releases('tumor')
  tflite_model = repository.OTARepository(paths['ota_repository']).read_target(release)
  x, y = _eval_examples(paths)
  assert np.mean(x == 0.0) > 0.15  # The gaps reached the gate: about 20% of the cells.
  assert pushed[0].accuracy == pytest.approx(_litert_accuracy(tflite_model, x, y), abs=1e-9)
  assert rows['baseline'].accuracy > 0.85
  assert pushed[0].blessed == 'BLESSED'


def test_an_int8_model_made_worse_by_hostile_calibration_is_refused(tmp_path):
  # The Trainer's run_fn reads the data correctly; only calibration sees inputs 50x too wide.
  paths, rows, output = _run(tmp_path, '--variants', 'ptq', module_file=os.path.join(
      REPO_ROOT, 'tests', 'pipelines', 'hostile_breast_cancer_module.py'))

  assert rows['ptq'].blessed != 'BLESSED'
  assert rows['ptq'].accuracy < rows['baseline'].accuracy - 0.05
  assert not repository.OTARepository(paths['ota_repository']).releases('tumor')
  assert 'binary_accuracy' in output


def test_a_keras3_regression_model_goes_through_ptq_the_mae_gate_and_the_push(tmp_path):
  from tests.pipelines import diabetes_keras3_module  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path / 'csv'
  diabetes_keras3_module.write_csv(str(data_dir / 'diabetes.csv'))
  output_dir = tmp_path / 'out'
  output = run_pipeline(
      output_dir, '--data', str(data_dir), '--module-file',
      os.path.join(REPO_ROOT, 'tests', 'pipelines', 'diabetes_keras3_module.py'),
      '--label-key', diabetes_keras3_module.LABEL, '--task', 'regression',
      '--model-format', 'saved_model', '--model-name', 'progression', '--pipeline-name',
      PIPELINE, '--train-steps', '400', '--bench-threads', '1', '--bench-min-duration', '0.1')
  paths = pipeline_lib.demo_paths(str(output_dir))
  rows = {r.variant: r for r in summary.summarize(paths['metadata_path'], PIPELINE)}

  assert set(rows) == {'baseline', 'ptq'}, output[-3000:]  # Only PTQ: the model is Keras 3.
  assert rows['ptq'].blessed == 'BLESSED', output[-3000:]
  # Mean absolute error on a label of 25-346: a trained model, and int8 within 5% of it.
  assert rows['baseline'].accuracy < 60
  assert rows['ptq'].accuracy <= rows['baseline'].accuracy * 1.05
  [release] = repository.OTARepository(paths['ota_repository']).releases('progression')
  assert rows['ptq'].pushed_to == release.path


def test_a_two_input_model_with_an_int64_input_goes_through_every_variant_to_a_push(tmp_path):
  from tests.pipelines import two_input_module  # pylint: disable=g-import-not-at-top
  two_input_module.write_tfrecords(str(tmp_path / 'records'))
  output_dir = tmp_path / 'out'
  output = run_pipeline(
      output_dir, '--data', str(tmp_path / 'records'), '--module-file',
      os.path.join(REPO_ROOT, 'tests', 'pipelines', 'two_input_module.py'),
      '--model-name', 'digits_ink', '--pipeline-name', PIPELINE, *QUICK)
  paths = pipeline_lib.demo_paths(str(output_dir))
  rows = {r.variant: r for r in summary.summarize(paths['metadata_path'], PIPELINE)}

  assert set(rows) == {'baseline', 'ptq', 'pruned', 'clustered', 'pcqat'}, output[-3000:]
  blessed = [v for v, r in rows.items() if r.blessed == 'BLESSED']
  assert blessed, output[-3000:]
  [release] = repository.OTARepository(paths['ota_repository']).releases('digits_ink')
  tflite_model = repository.OTARepository(paths['ota_repository']).read_target(release)
  interp = tf.lite.Interpreter(model_content=tflite_model)
  dtypes = {tflite.feature_name(d['name']): np.dtype(d['dtype']).name
            for d in interp.get_input_details()}
  assert dtypes == {'pixels': 'int8', 'ink': 'int64'}  # The count stays an integer.
  assert tflite.float_ops(tflite_model) == []  # The CAST at `ink` is part of the input.


def test_a_multi_label_model_with_a_logit_per_tag_is_gated_over_every_tag(tmp_path):
  from tests.pipelines import multilabel_module  # pylint: disable=g-import-not-at-top
  multilabel_module.write_tfrecords(str(tmp_path / 'records'))
  output_dir = tmp_path / 'out'
  output = run_pipeline(
      output_dir, '--data', str(tmp_path / 'records'), '--module-file',
      os.path.join(REPO_ROOT, 'tests', 'pipelines', 'multilabel_module.py'),
      '--label-key', multilabel_module.TAGS, '--task', 'multilabel_logits',
      '--variants', 'ptq,pruned', '--model-name', 'digit_tags', '--pipeline-name', PIPELINE,
      *QUICK[:-2])
  paths = pipeline_lib.demo_paths(str(output_dir))
  rows = {r.variant: r for r in summary.summarize(paths['metadata_path'], PIPELINE)}

  assert set(rows) == {'baseline', 'ptq', 'pruned'}, output[-3000:]
  assert rows['ptq'].blessed == 'BLESSED', output[-3000:]
  # Fine-tuning read the three linear units as logits of multi-hot tags (a multi-class loss
  # would fail on the labels' shape): 80% sparse after 30 steps, well above the 0.53 of always
  # answering each tag's majority (measured 0.79; the float32 baseline 0.93).
  assert rows['pruned'].accuracy > 0.7, output[-3000:]
  # The gate's figure is what LiteRT computes over every tag of the eval examples.
  [split] = glob.glob(os.path.join(paths['pipeline_root'], pipeline_lib.EXAMPLE_GEN,
                                   'examples', '*', 'Split-eval'))
  pixels, tags = [], []
  for record in examples_io.read_records(os.path.join(split, '*')):
    features = tf.train.Example.FromString(record).features.feature
    pixels.append(features['pixels'].float_list.value)
    tags.append(features[multilabel_module.TAGS].int64_list.value)
  [release] = repository.OTARepository(paths['ota_repository']).releases('digit_tags')
  pushed = repository.OTARepository(paths['ota_repository']).read_target(release)
  [variant] = [r for r in rows.values() if r.pushed_to == release.path]
  assert variant.accuracy == pytest.approx(multilabel_module.litert_tag_accuracy(
      pushed, np.asarray(pixels), np.asarray(tags)), abs=1e-4)
