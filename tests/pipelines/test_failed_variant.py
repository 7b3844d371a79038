"""One failing variant never sinks the run: it is recorded with its reason and the best other ships.

The unit tests run each step's executor on a failed variant; the e2e test runs the real pipeline
(`python -m pipelines.run_local`, LocalDagRunner) with this file as the module file: its model has
a GaussianNoise layer (identity at inference: nothing of it in the TFLite model), which tfmot has
no quantize config for, so the pcqat variant's QATTrainer fails at run time while the ptq variant
is gated, measured and published.
"""
import html
import json
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf
import tf_keras
from tfx import v1 as tfx
from tfx.components.evaluator import constants as evaluator_constants
from tfx.types import standard_artifacts

from components import Clusterer
from components import PTQConverter
from components import Pruner
from components import QATTrainer
from components import errors
from components import spec_keys
from components.benchmarker import executor as bench_executor
from components.common import evaluation as evaluation_lib
from components.common import evaluator_guard
from components.common import failures
from components.common import model_io
from components.qat_trainer.qat import QATConfig
from pipelines import data
from pipelines import digits_module
from pipelines import pipeline as pipeline_lib
from pipelines import summary
from tests.conftest import REPO_ROOT
from tests.conftest import write_examples
from tests.helpers import INPUT_FN
from tests.helpers import TINY
from tests.helpers import channel
from tests.helpers import keras_model_artifact
from tests.helpers import relabel
from tests.helpers import run_optimizer
from tests.helpers import run_ptq

# --- the module file of the e2e run: the digits module, with a layer QAT cannot quantize ---------

input_fn = digits_module.input_fn


def build_model() -> tf_keras.Model:
  """A small digits CNN with a GaussianNoise layer, which tfmot has no quantize config for."""
  pixels = tf_keras.Input(shape=(data.NUM_PIXELS,), name=data.PIXELS_KEY)
  x = tf_keras.layers.Reshape((8, 8, 1), name='image')(pixels)
  x = tf_keras.layers.Conv2D(16, 3, padding='same', activation='relu', name='conv')(x)
  x = tf_keras.layers.MaxPooling2D(name='pool')(x)
  x = tf_keras.layers.Flatten(name='flatten')(x)
  x = tf_keras.layers.Dense(32, activation='relu', name='dense')(x)
  x = tf_keras.layers.GaussianNoise(0.05, name='noise')(x)
  outputs = tf_keras.layers.Dense(data.NUM_CLASSES, activation='softmax', name='classifier')(x)
  model = tf_keras.Model(pixels, outputs)
  model.compile(tf_keras.optimizers.Adam(3e-3), 'sparse_categorical_crossentropy',
                metrics=['sparse_categorical_accuracy'])
  return model


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  tf_keras.utils.set_random_seed(0)
  model = build_model()
  model.fit(input_fn(fn_args.train_files, fn_args.data_accessor, 32), epochs=5,
            steps_per_epoch=max(1, fn_args.train_steps // 5), verbose=0)
  model_io.save_keras_model(model, fn_args.serving_model_dir)


# --- unit: each step on a failed variant --------------------------------------------------------

QAT_REFUSAL = "QAT: layer 'noise' of type GaussianNoise cannot be quantized"


def _failed_qat(digits_examples, tmp_path):
  source = keras_model_artifact(build_model(), tmp_path / 'source')
  qat_trainer = QATTrainer(model=channel(), examples=channel(standard_artifacts.Examples),
                           input_fn=INPUT_FN, fine_tuning=TINY, qat=QATConfig(scheme='default'),
                           record_failure=True)
  return run_optimizer(qat_trainer, source, digits_examples, tmp_path / 'qat')


def test_an_optimizer_that_records_failures_marks_its_output_and_saves_no_model(
    digits_examples, tmp_path):
  output, _ = _failed_qat(digits_examples, tmp_path)

  reason = failures.failure_of(output)
  assert reason.startswith(f'QATTrainer failed: ConfigError: {QAT_REFUSAL}')
  assert output.get_int_custom_property(spec_keys.PROP_FAILED) == 1
  assert not os.path.exists(model_io.serving_model_dir(output.uri))


def test_a_failed_variant_is_passed_on_without_work_or_refused_by_a_step_that_does_not_record(
    digits_examples, tmp_path):
  failed, _ = _failed_qat(digits_examples, tmp_path)
  reason = failures.failure_of(failed)

  clusterer = Clusterer(model=channel(), examples=channel(standard_artifacts.Examples),
                        input_fn=INPUT_FN, fine_tuning=TINY, record_failure=True)
  passed, run = run_optimizer(clusterer, failed, digits_examples, tmp_path / 'cluster')
  assert failures.failure_of(passed) == reason
  assert not os.path.exists(run.uri)  # No fine-tuning started.
  tflite, _ = run_ptq(failed, digits_examples, tmp_path / 'ptq', record_failure=True)
  assert failures.failure_of(tflite) == reason
  assert tflite.get_string_custom_property(spec_keys.PROP_MODE) == 'int8'
  assert not os.path.exists(os.path.join(tflite.uri, spec_keys.PLAIN_TFLITE_FILE_NAME))

  plain = Clusterer(model=channel(), examples=channel(standard_artifacts.Examples),
                    input_fn=INPUT_FN, fine_tuning=TINY)
  with pytest.raises(errors.OptimizationError, match=f'Clusterer: the model {failed.uri} is a '
                     r'failed variant \(QATTrainer failed: .*record_failure=True'):
    run_optimizer(plain, failed, digits_examples, tmp_path / 'plain')
  with pytest.raises(errors.ConversionError, match=f'PTQConverter: the model {failed.uri} is a '
                     'failed variant'):
    run_ptq(failed, digits_examples, tmp_path / 'ptq_plain')


def test_a_data_error_is_never_recorded_it_stops_the_run(trained_model_artifact,
                                                          digits_records, tmp_path):
  # Every variant reads the same Examples: a label outside the classes would fail them all alike.
  examples = write_examples(str(tmp_path / 'examples'), {
      'train': relabel(digits_records[:1437], {9: 10}), 'eval': digits_records[1437:]})
  pruner = Pruner(model=channel(), examples=channel(standard_artifacts.Examples),
                  input_fn=INPUT_FN, fine_tuning=TINY, record_failure=True)

  with pytest.raises(errors.DataError, match="label values 10 are outside the model's 10 classes"):
    run_optimizer(pruner, trained_model_artifact, examples, tmp_path / 'pruned')


def test_a_conversion_failure_is_recorded_only_when_asked(digits_examples, tmp_path):
  # A real converter refusal: sin has no int8 kernel, so mode int8 refuses the model.
  inputs = tf_keras.Input((data.NUM_PIXELS,), name=data.PIXELS_KEY)
  odd = tf.math.sin(inputs)
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(10, activation='softmax')(odd))
  source = keras_model_artifact(model, tmp_path / 'source')

  with pytest.raises(errors.ConversionError, match='no int8 kernel'):
    run_ptq(source, digits_examples, tmp_path / 'raised')
  tflite, _ = run_ptq(source, digits_examples, tmp_path / 'recorded', record_failure=True)
  assert failures.failure_of(tflite).startswith('PTQConverter failed: ConversionError: ')
  assert 'no int8 kernel' in failures.failure_of(tflite)


def test_the_gate_refuses_a_failed_variant_without_evaluating_it(tmp_path):
  model = standard_artifacts.Model()
  model.uri = str(tmp_path / 'int8')
  model.id = 7
  failures.mark_failed(model, 'Pruner failed: OptimizationError: 2:4 lost')
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = str(tmp_path / 'blessing')
  evaluation = standard_artifacts.ModelEvaluation()
  evaluation.uri = str(tmp_path / 'evaluation')

  evaluator_guard.Executor().Do(
      {spec_keys.MODEL_KEY: [model]},
      {spec_keys.BLESSING_KEY: [blessing], spec_keys.EVALUATION_KEY: [evaluation]}, {})

  assert blessing.get_int_custom_property('blessed') == evaluator_constants.NOT_BLESSED_VALUE
  assert blessing.get_string_custom_property('current_model') == model.uri
  assert (tmp_path / 'blessing' / 'NOT_BLESSED').exists()
  refusal = evaluation_lib.blessing_refusal(model, blessing)
  assert refusal == 'the variant failed before the gate: Pruner failed: OptimizationError: 2:4 lost'
  # Even a blessing flipped to blessed stays a refusal while it carries the failure.
  blessing.set_int_custom_property('blessed', 1)
  assert evaluation_lib.blessing_refusal(model, blessing).startswith('the variant failed')
  accuracy = bench_executor.accuracy_of(model, b'', blessing, None)
  assert accuracy['blessed'] is False


def test_the_pipeline_records_failures_of_variants_only_when_it_builds_several(tmp_path):
  def build(variants):
    return {c.id: c for c in pipeline_lib.create_pipeline(
        'p', str(tmp_path / 'root'), str(tmp_path / 'data'), str(tmp_path / 'ota'),
        str(tmp_path / 'keys'), variants=variants).components}

  several = build(None)
  recording = {i for i, c in several.items()
               if c.exec_properties.get(spec_keys.RECORD_FAILURE_KEY) == 1}
  assert recording == {pipeline_lib.PRUNER, pipeline_lib.CLUSTERER, pipeline_lib.PCQAT_CLUSTERER,
                       pipeline_lib.QAT_TRAINER,
                       *(pipeline_lib.int8_node(v) for v in pipeline_lib.VARIANTS)}
  assert several[pipeline_lib.PTQ_FLOAT32].exec_properties[spec_keys.RECORD_FAILURE_KEY] == 0
  assert all(isinstance(several[pipeline_lib.evaluator_node(v)], evaluator_guard.Evaluator)
             for v in pipeline_lib.VARIANTS)
  single = build(['pcqat'])
  assert not any(c.exec_properties.get(spec_keys.RECORD_FAILURE_KEY) for c in single.values())
  with pytest.raises(errors.ConfigError, match="record_failure='yes' is not accepted"):
    PTQConverter(model=channel(), mode='float32', record_failure='yes')


def test_the_summary_table_lists_each_failure_with_its_reason():
  rows = [summary.VariantRow('ptq', 'int8', 'int8', None, None, 100, 80, 0.95, 'BLESSED', 0.1,
                             'within', '/ota/digits'),
          summary.VariantRow('pcqat', 'prune > cluster > int8', 'int8', None, None, 0, 0, None,
                             'FAILED', None, '-', '-', failed='QATTrainer failed: ConfigError: x')]
  table = summary.format_table(rows)
  assert '1 variant(s) FAILED and were left out; the run went on with the others:' in table
  assert '  pcqat: QATTrainer failed: ConfigError: x' in table


# --- e2e: the real pipeline ---------------------------------------------------------------------


@pytest.mark.e2e
def test_a_variant_whose_qat_fails_is_recorded_and_the_best_other_variant_ships(tmp_path):
  env = dict(os.environ, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
      [sys.executable, '-m', 'pipelines.run_local', '--output-dir', str(tmp_path),
       '--module-file', os.path.abspath(__file__), '--variants', 'ptq,pcqat',
       '--train-steps', '300', '--finetune-epochs', '1', '--finetune-steps', '20',
       '--no-regression-gate'],
      cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      timeout=1500, check=False)
  assert proc.returncode == 0, proc.stdout[-5000:]

  paths = pipeline_lib.demo_paths(str(tmp_path))
  rows = {r.variant: r for r in summary.summarize(paths['metadata_path'], 'tfx_edge_digits')}
  assert rows['pcqat'].blessed == 'FAILED'
  assert rows['pcqat'].failed.startswith(f'QATTrainer failed: ConfigError: {QAT_REFUSAL}')
  assert rows['ptq'].blessed == 'BLESSED'
  assert rows['ptq'].pushed_to and not rows['ptq'].pushed_to.startswith('not pushed')
  assert '1 variant(s) FAILED' in proc.stdout and QAT_REFUSAL in proc.stdout
  assert 'OTAPusher: pushed ' in proc.stdout
  # The progress lines say which steps failed or were passed over, not `done`.
  assert re.search(rf'\] {pipeline_lib.QAT_TRAINER} FAILED \(recorded; the run goes on\) in ',
                   proc.stdout), proc.stdout[-5000:]
  assert re.search(rf'\] {pipeline_lib.int8_node("pcqat")} skipped \(its variant failed '
                   r'earlier\) in ', proc.stdout), proc.stdout[-5000:]

  report = summary.selection_report(paths['metadata_path'], 'tfx_edge_digits')
  doc = json.loads(open(os.path.join(os.path.dirname(report), 'selection.json')).read())
  assert doc['winner'] == 'ptq'
  assert doc['failed']['pcqat'] == rows['pcqat'].failed
  assert html.escape(QAT_REFUSAL) in open(report).read()
