"""The ways out that error messages suggest are reachable from create_pipeline and the runners."""
import json

import pytest

from components import PTQConverter
from components import errors
from components import spec_keys
from components.common import modes
from pipelines import pipeline as pipeline_lib
from pipelines import run_kubeflow
from pipelines import run_local


def _build(tmp_path, **kwargs):
  return pipeline_lib.create_pipeline('p', str(tmp_path / 'root'), str(tmp_path / 'data'),
                                      str(tmp_path / 'ota'), str(tmp_path / 'keys'), **kwargs)


def _by_id(pipeline):
  return {c.id: c for c in pipeline.components}


def test_a_fallback_mode_the_pusher_would_refuse_fails_when_the_pipeline_is_built(tmp_path):
  with pytest.raises(errors.ConfigError, match=r"int8_mode='int8_float_fallback' is not in "
                     r"allowed_modes=\['int8'\]: the pusher would refuse every variant"):
    _build(tmp_path, int8_mode=modes.INT8_FLOAT_FALLBACK)
  with pytest.raises(errors.ConfigError, match="int8_mode='float16' is not accepted"):
    _build(tmp_path, int8_mode=modes.FLOAT16, allowed_modes=[modes.FLOAT16])


def test_the_fallback_mode_reaches_every_converter_and_the_pusher(tmp_path):
  allowed = [modes.INT8, modes.INT8_FLOAT_FALLBACK]
  components = _by_id(_build(tmp_path, int8_mode=modes.INT8_FLOAT_FALLBACK,
                             allowed_modes=allowed))

  converters = {i: c.exec_properties['mode'] for i, c in components.items()
                if isinstance(c, PTQConverter)}
  assert converters.pop(pipeline_lib.PTQ_FLOAT32) == modes.FLOAT32
  assert set(converters.values()) == {modes.INT8_FLOAT_FALLBACK} and len(converters) == 4
  pusher = components[pipeline_lib.PUSHER].exec_properties
  assert json.loads(pusher['allowed_modes']) == allowed


@pytest.mark.parametrize('runner', [run_local, run_kubeflow])
def test_int8_auto_reaches_every_variant_converter_with_the_gates_tolerance(runner, tmp_path):
  argv = ['--int8-mode', 'int8_auto', '--allowed-modes', 'int8,int8_auto',
          '--int8-auto-budget', '0.2']
  if runner is run_kubeflow:
    argv += ['--output', str(tmp_path / 'p.yaml')]
  kwargs = pipeline_lib.optimization_kwargs(runner.parse_args(argv))
  components = _by_id(_build(tmp_path, max_accuracy_drop=0.02, **kwargs))

  converters = {i: c.exec_properties for i, c in components.items()
                if isinstance(c, PTQConverter) and i != pipeline_lib.PTQ_FLOAT32}
  assert {p['mode'] for p in converters.values()} == {modes.INT8_AUTO} and len(converters) == 4
  for properties in converters.values():
    auto = json.loads(properties['int8_auto'])
    assert (auto['max_drop'], auto['fallback_budget'], auto['task']) == (0.02, 0.2, 'multiclass')


@pytest.mark.parametrize('kwargs,message', [
    (dict(int8_mode='int8_auto'), r"int8_mode='int8_auto' is not in allowed_modes"),
    (dict(int8_mode='int8_auto', allowed_modes=['int8_auto'], int8_auto_budget=0),
     'fallback_budget=0 is not accepted'),
    (dict(int8_mode='int8_auto', allowed_modes=['int8_auto'], int8_auto_budget=1.5),
     'fallback_budget=1.5 is not accepted'),
    (dict(int8_mode='int8_auto', allowed_modes=['int8_auto'], task='regression'),
     "not accepted with task='regression'"),
])
def test_bad_int8_auto_options_fail_when_the_pipeline_is_built(tmp_path, kwargs, message):
  with pytest.raises(errors.ConfigError, match=message):
    _build(tmp_path, **kwargs)


@pytest.mark.parametrize('runner', [run_local, run_kubeflow])
def test_the_runners_flags_reach_the_optimizers_and_the_pusher(runner, tmp_path):
  argv = ['--int8-mode', 'int8_float_fallback', '--allowed-modes', 'int8,int8_float_fallback',
          '--sparsity', '0.6', '--clusters', '8', '--skip-layers', '^classifier$',
          '--qat-allow-float-layers']
  if runner is run_kubeflow:
    argv += ['--output', str(tmp_path / 'p.yaml')]
  args = runner.parse_args(argv)
  kwargs = pipeline_lib.optimization_kwargs(args)
  components = _by_id(_build(tmp_path, **kwargs))

  pruning = json.loads(components[pipeline_lib.PRUNER].exec_properties['optimization'])
  clustering = json.loads(components[pipeline_lib.CLUSTERER].exec_properties['optimization'])
  qat = json.loads(components[pipeline_lib.QAT_TRAINER].exec_properties['optimization'])
  assert (pruning['target_sparsity'], pruning['end'], pruning['skip_layers']) == (
      0.6, pipeline_lib.DEFAULT_PRUNING.end, '^classifier$')
  assert (clustering['number_of_clusters'], clustering['skip_layers']) == (8, '^classifier$')
  assert (qat['allow_float_layers'], qat['skip_layers']) == (True, '^classifier$')
  assert components[pipeline_lib.int8_node('ptq')].exec_properties['mode'] == (
      'int8_float_fallback')


@pytest.mark.parametrize('runner', [run_local, run_kubeflow])
def test_the_release_flags_reach_the_regression_gate_and_the_pusher(runner, tmp_path):
  argv = ['--require-approval', '--rollout-percent', '10', '--max-regression', '0.005',
          '--max-slice-regression', '0.03', '--slice-noise-z', '0', '--slice-by', 'source',
          '--slice-spec', '{"feature_keys": ["source", "device"]}',
          '--slice-spec', '{"feature_values": {"device": "pixel"}}']
  if runner is run_kubeflow:
    argv += ['--output', str(tmp_path / 'p.yaml')]
  components = _by_id(_build(tmp_path, **pipeline_lib.release_kwargs(runner.parse_args(argv))))
  default = _by_id(_build(tmp_path / 'default', **pipeline_lib.release_kwargs(
      run_local.parse_args([]))))

  pusher = components[pipeline_lib.PUSHER].exec_properties
  gate = components[pipeline_lib.REGRESSION_GATE].exec_properties
  assert (pusher[spec_keys.OTA_REQUIRE_APPROVAL_KEY],
          pusher[spec_keys.OTA_ROLLOUT_PERCENT_KEY]) == (1, 10)
  assert (gate[spec_keys.MAX_REGRESSION_KEY], gate[spec_keys.MAX_SLICE_REGRESSION_KEY],
          gate[spec_keys.SLICE_NOISE_Z_KEY]) == (0.005, 0.03, 0.0)
  assert default[pipeline_lib.REGRESSION_GATE].exec_properties[spec_keys.SLICE_NOISE_Z_KEY] == (
      1.645)
  # Slices: overall, the label classes, then --slice-by, then each --slice-spec.
  slices = json.loads(gate[spec_keys.EVAL_CONFIG_KEY])['slicingSpecs']
  assert slices == [{}, {'featureKeys': ['label']}, {'featureKeys': ['source']},
                    {'featureKeys': ['source', 'device']}, {'featureValues': {'device': 'pixel'}}]
  # The pusher needs the regression gate's blessing; by default the release is live, to all.
  assert pusher[spec_keys.OTA_REQUIRE_APPROVAL_KEY] != default[pipeline_lib.PUSHER].exec_properties[
      spec_keys.OTA_REQUIRE_APPROVAL_KEY]
  assert default[pipeline_lib.PUSHER].exec_properties[spec_keys.OTA_ROLLOUT_PERCENT_KEY] == 100
  assert spec_keys.REGRESSION_BLESSING_KEY in components[pipeline_lib.PUSHER].inputs


@pytest.mark.parametrize('spec,message', [
    ('{"feature_keys": ["a"]', 'is not JSON'),
    ('["a"]', 'is not a JSON object'),
])
def test_a_slice_spec_flag_that_is_not_a_json_object_is_refused(spec, message, capsys):
  with pytest.raises(SystemExit):
    run_local.parse_args(['--slice-spec', spec])
  assert message in capsys.readouterr().err


def test_a_slice_spec_that_is_not_a_slicing_spec_fails_when_the_pipeline_is_built(tmp_path):
  args = run_local.parse_args(['--slice-spec', '{"feature": "country"}'])
  with pytest.raises(errors.ConfigError, match=r'slicing_specs\[0\]=.* is not a TFMA SlicingSpec'):
    _build(tmp_path, **pipeline_lib.release_kwargs(args))


def test_the_runners_defaults_are_the_pipelines(tmp_path):
  kwargs = pipeline_lib.optimization_kwargs(run_local.parse_args([]))
  assert kwargs['int8_mode'] == modes.INT8
  assert kwargs['allowed_modes'] == list(modes.DEFAULT_ALLOWED_MODES)
  assert kwargs['pruning'] == pipeline_lib.DEFAULT_PRUNING
  assert kwargs['clustering'] == pipeline_lib.DEFAULT_CLUSTERING
  assert not kwargs['qat'].allow_float_layers and kwargs['qat'].skip_layers is None


BREAST_CANCER_MODULE = 'tests/pipelines/breast_cancer_module.py'


@pytest.mark.parametrize('runner', [run_local, run_kubeflow])
def test_the_users_data_and_module_reach_the_pipeline_with_the_fill_of_its_feature_spec(
    runner, tmp_path):
  (tmp_path / 'csv').mkdir()
  (tmp_path / 'csv' / 'data.csv').write_text('f00,diagnosis\n1.0,1\n')
  argv = ['--data', str(tmp_path / 'csv'), '--module-file', BREAST_CANCER_MODULE, '--label-key',
          'diagnosis', '--task', 'binary']
  if runner is run_kubeflow:
    argv += ['--output', str(tmp_path / 'p.yaml')]
  args = runner.parse_args(argv)
  kwargs = pipeline_lib.data_kwargs(args)

  assert kwargs['fill_missing'] == {f'f{i:02d}': 0.0 for i in range(30)}  # From FEATURE_SPEC.
  components = _by_id(pipeline_lib.create_pipeline(
      'p', str(tmp_path / 'root'), args.data, str(tmp_path / 'ota'), str(tmp_path / 'keys'),
      **kwargs))
  assert pipeline_lib.CSV_EXAMPLE_GEN in components
  assert pipeline_lib.EXAMPLE_GEN not in components
  trainer = components[pipeline_lib.TRAINER].exec_properties
  assert trainer['module_file'] == BREAST_CANCER_MODULE
  gate = components[pipeline_lib.GATE_EXAMPLES].exec_properties
  assert json.loads(gate['fill_missing'])['f07'] == 0.0 and gate['label_key'] == 'diagnosis'
  assert gate['task'] == 'binary'  # Checked against the float32 model's output before the data.
  assert components[pipeline_lib.int8_node('ptq')].exec_properties['module_file'] == (
      BREAST_CANCER_MODULE)


@pytest.mark.parametrize('flag,expected', [
    ('age=38, income=0', {'age': 38.0, 'income': 0.0}),
    ('*=0,age=38', {'*': 0.0, 'age': 38.0}),
])
def test_fill_missing_flag_overrides_the_feature_spec(flag, expected):
  args = run_local.parse_args(['--data', 'd', '--module-file', BREAST_CANCER_MODULE,
                               '--label-key', 'y', '--fill-missing', flag])
  assert pipeline_lib.data_kwargs(args)['fill_missing'] == expected


@pytest.mark.parametrize('argv,message', [
    (['--data', 'd', '--label-key', 'y'], "--data 'd' needs --module-file"),
    (['--data', 'd', '--data-format', 'csv'], "--data 'd' needs --module-file"),
    (['--data', 'd', '--module-file', 'm.py', '--fill-missing', 'age'],
     "--fill-missing item 'age' is not accepted: give NAME=NUMBER pairs"),
])
def test_bad_data_flags_are_refused_with_the_way_out(argv, message):
  with pytest.raises(errors.ConfigError, match=message):
    pipeline_lib.data_kwargs(run_local.parse_args(argv))


def test_the_data_format_is_read_from_the_files(tmp_path):
  (tmp_path / 'csv').mkdir()
  (tmp_path / 'csv' / 'a.csv').write_text('x\n1\n')
  (tmp_path / 'records').mkdir()
  (tmp_path / 'records' / 'data_tfrecord-00000.gz').write_bytes(b'')
  (tmp_path / 'other').mkdir()
  (tmp_path / 'other' / 'notes.txt').write_text('')

  assert pipeline_lib.data_format_of(str(tmp_path / 'csv')) == pipeline_lib.CSV
  assert pipeline_lib.data_format_of(str(tmp_path / 'records')) == pipeline_lib.TFRECORD
  assert pipeline_lib.data_format_of(str(tmp_path / 'other'), 'csv') == pipeline_lib.CSV
  assert pipeline_lib.data_format_of(str(tmp_path / 'absent')) == pipeline_lib.TFRECORD
  with pytest.raises(errors.ConfigError, match="data_format='parquet' is not accepted"):
    pipeline_lib.data_format_of(str(tmp_path / 'csv'), 'parquet')


def test_a_bad_fill_value_fails_when_the_pipeline_is_built(tmp_path):
  with pytest.raises(errors.ConfigError, match=r"fill_missing\['age'\]=nan is not accepted"):
    _build(tmp_path, fill_missing={'age': float('nan')})


def test_a_saved_model_builds_only_the_ptq_variant_and_refuses_optimizers(tmp_path):
  components = _by_id(_build(tmp_path, model_format='saved_model'))
  assert not {pipeline_lib.PRUNER, pipeline_lib.CLUSTERER, pipeline_lib.QAT_TRAINER} & set(
      components)
  assert pipeline_lib.int8_node('ptq') in components

  with pytest.raises(errors.ConfigError, match=r"variants \['pruned'\] need a tf_keras "
                     r"Functional or Sequential model.*--variants ptq"):
    _build(tmp_path, model_format='saved_model', variants=['ptq', 'pruned'])
  with pytest.raises(errors.ConfigError, match="model_format='onnx' is not accepted"):
    _build(tmp_path, model_format='onnx')
  args = run_local.parse_args(['--model-format', 'saved_model'])
  assert pipeline_lib.data_kwargs(args)['model_format'] == 'saved_model'
  assert pipeline_lib.variants_of(args.variants) is None


def test_a_logit_task_fine_tunes_with_cross_entropy_from_logits(tmp_path):
  components = _by_id(_build(tmp_path, task='binary_logits'))
  for node in (pipeline_lib.PRUNER, pipeline_lib.CLUSTERER, pipeline_lib.QAT_TRAINER):
    fine_tuning = json.loads(components[node].exec_properties['fine_tuning'])
    assert fine_tuning['loss'] == 'binary_crossentropy_from_logits', node
