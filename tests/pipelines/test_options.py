"""The ways out that error messages suggest are reachable from create_pipeline and the runners."""
import json

import pytest

from components import PTQConverter
from components import errors
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


def test_the_runners_defaults_are_the_pipelines(tmp_path):
  kwargs = pipeline_lib.optimization_kwargs(run_local.parse_args([]))
  assert kwargs['int8_mode'] == modes.INT8
  assert kwargs['allowed_modes'] == list(modes.DEFAULT_ALLOWED_MODES)
  assert kwargs['pruning'] == pipeline_lib.DEFAULT_PRUNING
  assert kwargs['clustering'] == pipeline_lib.DEFAULT_CLUSTERING
  assert not kwargs['qat'].allow_float_layers and kwargs['qat'].skip_layers is None
