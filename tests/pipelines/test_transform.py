"""A pipeline with a TFX Transform: the model reads transformed features, and every component
after the Transform gets `transformed_examples`.

CSV with empty cells -> CsvExampleGen -> StatisticsGen -> SchemaGen -> Transform (z-scores,
missing values set to the mean) -> Trainer -> PTQConverter float32 and int8 -> Evaluator ->
OTAPusher, with the real LocalDagRunner, on scikit-learn's breast-cancer data
(tests/pipelines/transform_module.py).
"""
import glob
import os
import time

from ml_metadata import metadata_store
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tfx import v1 as tfx

from components import OTAPusher
from components import PTQConverter
from components.common import evaluation
from components.common import model_io
from components.common import tasks
from components.common import tflite
from components.common import device_extractors
from components.gate import gate_config
from components.ota import client
from components.ota import repository
from pipelines import summary
from tests.helpers import http_server
from tests.pipelines import transform_module as module

pytestmark = pytest.mark.e2e
PIPELINE = 'tfx_edge_transform'
MODULE = 'tests.pipelines.transform_module'
MODEL_NAME = 'breast_cancer_xf'
# Features with about 20% of their cells left empty; the others are complete, so the Transform
# sees both kinds the inferred schema gives: variable-length (sparse) and fixed-length (dense).
SPARSE_FEATURES = module.FEATURES[:5]
MISSING_SHARE = 0.2
TRAIN_STEPS = 200
# The accuracy figure TFMA reports for the binary gate.
ACCURACY = tasks.GATE_METRIC[tasks.BINARY][1]
BEAM_ARGS = ['--direct_running_mode=in_memory', '--direct_num_workers=1']


def write_csv(path):
  """The breast-cancer rows (shuffled, seed 0) with about 20% of SPARSE_FEATURES' cells empty."""
  from sklearn.datasets import load_breast_cancer  # pylint: disable=g-import-not-at-top
  x, y = load_breast_cancer(return_X_y=True)
  rng = np.random.default_rng(0)
  order = rng.permutation(len(x))
  x, y = x[order, :len(module.FEATURES)], y[order]
  empty = rng.random(x.shape) < MISSING_SHARE
  empty[:, len(SPARSE_FEATURES):] = False
  with open(path, 'w') as f:
    f.write(','.join((*module.FEATURES, module.LABEL_KEY)) + '\n')
    for row, holes, label in zip(x, empty, y):
      # `repr` keeps the decimal point, so every column is inferred as float.
      cells = ['' if hole else repr(float(v)) for v, hole in zip(row, holes)]
      f.write(','.join((*cells, str(label))) + '\n')


def create_pipeline(root):
  """The pipeline under test; every component after the Transform reads transformed Examples."""
  example_gen = tfx.components.CsvExampleGen(input_base=os.path.join(root, 'data'))
  statistics = tfx.components.StatisticsGen(examples=example_gen.outputs['examples'])
  schema = tfx.components.SchemaGen(statistics=statistics.outputs['statistics'])
  transform = tfx.components.Transform(
      examples=example_gen.outputs['examples'], schema=schema.outputs['schema'],
      preprocessing_fn=f'{MODULE}.preprocessing_fn')
  transformed = transform.outputs['transformed_examples']
  trainer = tfx.components.Trainer(
      run_fn=f'{MODULE}.run_fn',
      examples=transformed,
      transform_graph=transform.outputs['transform_graph'],
      train_args=tfx.proto.TrainArgs(num_steps=TRAIN_STEPS),
      eval_args=tfx.proto.EvalArgs(num_steps=5))
  ptq_float32 = PTQConverter(model=trainer.outputs['model'], mode='float32').with_id(
      'ptq_float32')
  # Calibration samples transformed Examples and reads them with the module's input_fn.
  int8 = PTQConverter(model=trainer.outputs['model'], examples=transformed, mode='int8',
                      calibration_samples=100, label_key=module.LABEL_KEY,
                      input_fn=f'{MODULE}.input_fn').with_id('ptq_int8')
  evaluator = tfx.components.Evaluator(
      examples=transformed,
      model=int8.outputs['tflite_model'],
      baseline_model=ptq_float32.outputs['tflite_model'],
      eval_config=gate_config(module.LABEL_KEY, tasks.BINARY),
      # int8 inputs quantized as on a device: TFMA alone truncates, which here cost two eval
      # examples and the blessing of a model as accurate as its baseline.
      module_path=device_extractors.MODULE_PATH)
  pusher = OTAPusher(
      model=int8.outputs['tflite_model'],
      model_blessing=evaluator.outputs['blessing'],
      evaluation=evaluator.outputs['evaluation'],
      # The golden input of the device's health check: the first transformed eval example.
      examples=transformed,
      repository_dir=os.path.join(root, 'ota_repository'),
      keys_dir=os.path.join(root, 'ota_keys'),
      model_name=MODEL_NAME)
  return tfx.dsl.Pipeline(
      pipeline_name=PIPELINE,
      pipeline_root=os.path.join(root, 'pipeline_root'),
      components=[example_gen, statistics, schema, transform, trainer, ptq_float32, int8,
                  evaluator, pusher],
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
          os.path.join(root, 'metadata.sqlite')),
      beam_pipeline_args=BEAM_ARGS)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """Runs the pipeline once; returns its root, the run's seconds and {node id: {output key:
  artifact}} from ML Metadata."""
  root = str(tmp_path_factory.mktemp('transform_pipeline'))
  os.makedirs(os.path.join(root, 'data'))
  write_csv(os.path.join(root, 'data', 'breast_cancer.csv'))
  repository.OTARepository(os.path.join(root, 'ota_repository'),
                           os.path.join(root, 'ota_keys')).init()
  pipeline = create_pipeline(root)
  start = time.monotonic()
  tfx.orchestration.LocalDagRunner().run(pipeline)
  seconds = time.monotonic() - start
  store = metadata_store.MetadataStore(
      tfx.orchestration.metadata.sqlite_metadata_connection_config(
          os.path.join(root, 'metadata.sqlite')))
  outputs = {c.id: summary.latest_artifacts(store, PIPELINE, c.id) for c in pipeline.components}
  return dict(root=root, seconds=seconds, outputs=outputs)


def read_split(examples, split):
  """The serialized tf.Examples of one split of an Examples artifact (metadata proto)."""
  files = sorted(glob.glob(os.path.join(examples.uri, f'Split-{split}', '*')))
  assert files, f'no files in split {split} of {examples.uri}'
  return list(tf.data.TFRecordDataset(files, compression_type='GZIP').as_numpy_iterator())


def input_name(detail):
  """A TFLite input's name as TFMA matches it to a feature (signature prefix and `:0` off)."""
  return detail['name'].removeprefix('serving_default_').split(':')[0]


def litert_accuracy(tflite_model, features, labels):
  """Binary accuracy at 0.5 with LiteRT, one example at a time, inputs fed by name and int8
  inputs quantized as a device does (rounded, saturated)."""
  interp = tflite.interpreter(tflite_model)
  interp.allocate_tensors()
  [out] = interp.get_output_details()
  correct = 0
  for i, label in enumerate(labels):
    for detail in interp.get_input_details():
      value = features[input_name(detail)][i:i + 1]
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
  return correct / len(labels)


def test_the_transform_filled_the_empty_cells(run):
  raw = [tf.train.Example.FromString(r) for r in
         read_split(run['outputs']['CsvExampleGen']['examples'], 'train')]
  transformed = read_split(run['outputs']['Transform']['transformed_examples'], 'train')

  schema = tfdv.load_schema_text(os.path.join(run['outputs']['SchemaGen']['schema'].uri,
                                               'schema.pbtxt'))

  # The inferred schema gives the features with empty cells no shape: Transform reads them as
  # SparseTensors, the complete ones as dense tensors.
  shaped = {f.name for f in schema.feature if f.HasField('shape')}
  assert shaped & set(module.FEATURES) == set(module.FEATURES) - set(SPARSE_FEATURES)
  parsed = tf.io.parse_example(transformed, module.TRANSFORMED_FEATURE_SPEC)
  assert len(transformed) == len(raw)
  for feature in module.FEATURES:
    # CsvExampleGen writes an empty cell as a feature without values.
    missing = sum(not e.features.feature[feature].float_list.value for e in raw)
    values = parsed[module.transformed_name(feature)].numpy()
    if feature in SPARSE_FEATURES:  # About a fifth of the cells were empty ...
      assert 0.1 < missing / len(raw) < 0.3, (feature, missing)
    else:
      assert missing == 0, feature
    # ... and each became the mean, 0 in z-score units; the values present have mean 0, std 1.
    present = values[values != 0.0]
    assert len(present) == len(raw) - missing, feature
    assert abs(present.mean()) < 1e-3 and abs(present.std() - 1) < 1e-3, feature


def test_the_int8_model_reads_the_transformed_features(run):
  model = model_io.read_tflite(run['outputs']['ptq_int8']['tflite_model'].uri, 'test')

  inputs = tflite.interpreter(model).get_input_details()
  assert sorted(map(input_name, inputs)) == sorted(
      module.transformed_name(f) for f in module.FEATURES)
  # int8 everywhere, I/O included: nothing computes in float.
  assert {np.dtype(d['dtype']).name for d in inputs} == {'int8'}
  assert tflite.float_ops(model) == []
  props = run['outputs']['ptq_int8']['tflite_model'].custom_properties
  assert props['tfx_edge_calibration_count'].int_value == 100


def test_the_gate_measures_what_litert_computes_on_the_transformed_eval_split(run):
  outputs = run['outputs']
  records = read_split(outputs['Transform']['transformed_examples'], 'eval')
  parsed = {k: v.numpy() for k, v in tf.io.parse_example(
      records, module.TRANSFORMED_FEATURE_SPEC).items()}
  labels = parsed.pop(module.LABEL_KEY)[:, 0]
  int8 = model_io.read_tflite(outputs['ptq_int8']['tflite_model'].uri, 'test')
  float32 = model_io.read_tflite(outputs['ptq_float32']['tflite_model'].uri, 'test')
  evaluation_uri = outputs['Evaluator']['evaluation'].uri

  gate = evaluation.metric_values(evaluation_uri, ACCURACY)
  counts = evaluation.metric_values(evaluation_uri, 'example_count')

  assert counts[evaluation.CANDIDATE] == len(labels) > 150
  assert gate[evaluation.CANDIDATE] == pytest.approx(litert_accuracy(int8, parsed, labels),
                                                     abs=1e-6)
  assert gate[evaluation.BASELINE] == pytest.approx(litert_accuracy(float32, parsed, labels),
                                                    abs=1e-6)
  assert gate[evaluation.CANDIDATE] > 0.85
  print(f'\ntransform pipeline gate: int8 {gate[evaluation.CANDIDATE]:.4f}, float32 '
        f'{gate[evaluation.BASELINE]:.4f} on {len(labels)} eval examples')


def test_the_blessed_int8_model_is_pushed_and_a_device_fetches_it(run, tmp_path):
  outputs = run['outputs']
  blessing = outputs['Evaluator']['blessing']
  int8 = model_io.read_tflite(outputs['ptq_int8']['tflite_model'].uri, 'test')
  ota = repository.OTARepository(os.path.join(run['root'], 'ota_repository'))

  assert blessing.custom_properties['blessed'].int_value == 1
  [release] = ota.releases(MODEL_NAME)
  assert outputs['OTAPusher']['pushed_model'].custom_properties['pushed'].int_value == 1
  with http_server(ota.repo_dir) as url:
    fetched = client.fetch(url, os.path.join(ota.metadata_dir, '1.root.json'), MODEL_NAME,
                           str(tmp_path / 'device'), health_check='require')
  # Its golden input is the first transformed eval example (several inputs, filled values).
  assert fetched.health['passed'] and release.custom['golden_input']['source'] == 'examples'
  with open(fetched.path, 'rb') as f:
    assert f.read() == int8 == ota.read_target(release)
  assert release.custom['mode'] == 'int8'
  print(f'\ntransform pipeline: {run["seconds"]:.0f} s')


def test_run_fn_refuses_a_transformed_spec_that_drifted_from_the_transform(run, monkeypatch):
  graph = run['outputs']['Transform']['transform_graph'].uri
  module.check_transformed_spec(graph)  # The module's spec is what the Transform wrote.
  drifted = dict(module.TRANSFORMED_FEATURE_SPEC)
  drifted['mean_area_xf'] = tf.io.FixedLenFeature([], tf.float32)
  monkeypatch.setattr(module, 'TRANSFORMED_FEATURE_SPEC', drifted)

  with pytest.raises(ValueError, match=r"for \['mean_area_xf'\]: update it"):
    module.check_transformed_spec(graph)
