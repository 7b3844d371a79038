"""Kubeflow Pipelines: the compiled spec, and its steps' commands run here as a KFP pod would."""
import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from components import spec_keys
from components.ota import repository
from pipelines import data
from pipelines import pipeline as pipeline_lib
from tests.conftest import REPO_ROOT
from tests.helpers import ENV
ENTRYPOINT = 'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor'


def compile_spec(tmp_path, *args):
  output = tmp_path / 'pipeline.yaml'
  proc = subprocess.run(
      [sys.executable, '-m', 'pipelines.run_kubeflow', '--output', str(output), *args],
      cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(output) as f:
    spec, platform = yaml.safe_load_all(f)
  return dict(spec, platform=platform)


@pytest.fixture(scope='module')
def full_spec(tmp_path_factory):
  return compile_spec(tmp_path_factory.mktemp('kfp'), '--image', 'registry.example/tfx-edge:1',
                      '--beam-arg=--direct_num_workers=2')


def _upstream(tasks, task_id):
  task = tasks[task_id]
  return {a['taskOutputArtifact']['producerTask']
          for a in task.get('inputs', {}).get('artifacts', {}).values()}


def test_every_component_is_compiled_with_its_dependencies_image_and_command(full_spec):
  tasks = full_spec['root']['dag']['tasks']
  executors = full_spec['deploymentSpec']['executors']

  expected = {
      'ImportExampleGen', 'Trainer', 'ptq_float32', 'GateExamplesGen', 'Pruner', 'Clusterer',
      'Clusterer_after_Pruner', 'QATTrainer', 'VariantSelector', 'RegressionGate', 'OTAPusher',
      *(f(v) for v in pipeline_lib.VARIANTS
        for f in (pipeline_lib.int8_node, pipeline_lib.evaluator_node,
                  pipeline_lib.benchmark_node))
  }
  assert set(tasks) == expected
  assert _upstream(tasks, 'QATTrainer') == {'Clusterer_after_Pruner', 'ImportExampleGen'}
  assert _upstream(tasks, 'pcqat_int8') == {'QATTrainer', 'ImportExampleGen'}
  assert _upstream(tasks, 'GateExamplesGen') == {'ptq_float32', 'ImportExampleGen'}
  assert _upstream(tasks, 'pruned_evaluator') == {'pruned_int8', 'ptq_float32',
                                                  'GateExamplesGen'}
  assert _upstream(tasks, 'ptq_benchmark') == {'ptq_int8', 'ptq_evaluator'}
  # Every variant reaches the selector; only the selector's choice reaches the pusher.
  assert _upstream(tasks, 'VariantSelector') == {
      f(v) for v in pipeline_lib.VARIANTS
      for f in (pipeline_lib.int8_node, pipeline_lib.benchmark_node)}
  # The regression gate compares the choice with the released model on the gate's examples.
  assert _upstream(tasks, 'RegressionGate') == {'VariantSelector', 'GateExamplesGen'}
  # The golden input of the device's health check comes from the gate's examples.
  assert _upstream(tasks, 'OTAPusher') == {'VariantSelector', 'RegressionGate', 'GateExamplesGen'}
  for task_id, task in tasks.items():
    assert set(task.get('dependentTasks', [])) == _upstream(tasks, task_id)
    container = executors[full_spec['components'][task['componentRef']['name']]['executorLabel']][
        'container']
    assert container['image'] == 'registry.example/tfx-edge:1'
    assert container['command'] == ['python', '-m', ENTRYPOINT]
  assert executors['ptq_int8_executor']['container']['args'][:2] == [
      '--executor_class_path', 'components.ptq_converter.executor.Executor']
  assert '--direct_num_workers=2' in executors['ptq_int8_executor']['container']['args']
  assert full_spec['pipelineInfo']['name'] == 'tfx-edge-digits'


def test_every_step_mounts_the_pipeline_root_and_only_the_pusher_the_signing_keys(full_spec):
  k8s = full_spec['platform']['platforms']['kubernetes']['deploymentSpec']['executors']

  assert set(k8s) == set(full_spec['deploymentSpec']['executors'])
  for label, config in k8s.items():
    assert config['pvcMount'] == [{'constant': 'tfx-edge-pipeline-root',
                                   'mountPath': '/mnt/pipeline-root'}]
    assert ('secretAsVolume' in config) == (label == 'OTAPusher_executor')
  assert k8s['OTAPusher_executor']['secretAsVolume'][0]['secretName'] == 'tfx-edge-ota-keys'


def test_json_output_is_refused_because_kfp_rejects_it(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'pipelines.run_kubeflow', '--output', str(tmp_path / 'p.json')],
      cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False)

  assert proc.returncode == 2
  assert "must end in .yaml: the .json form is Vertex AI's PipelineJob" in proc.stderr


def test_submit_without_a_reachable_cluster_says_so(tmp_path):
  with socket.socket() as s:  # A loopback port nothing listens on.
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]

  proc = subprocess.run(
      [sys.executable, '-m', 'pipelines.run_kubeflow', '--output', str(tmp_path / 'p.yaml'),
       '--variants', 'ptq', '--submit', '--host', f'http://127.0.0.1:{port}'],
      cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False)

  assert proc.returncode == 2, proc.stderr[-2000:]
  assert f'could not submit to Kubeflow Pipelines at http://127.0.0.1:{port}' in proc.stderr
  assert 'Is a KFP API server reachable there' in proc.stderr
  assert (tmp_path / 'p.yaml').exists()


def _topological(tasks):
  order, done = [], set()
  while len(order) < len(tasks):
    ready = sorted(t for t in tasks if t not in done and
                   set(tasks[t].get('dependentTasks', [])) <= done)
    assert ready, 'cycle in the compiled DAG'
    order += ready
    done |= set(ready)
  return order


def _run_container(container, executor_input):
  """Runs one step's command and args as its pod would, with this machine's Python."""
  invocation = json.dumps(executor_input)
  command = [sys.executable if c == 'python' else c for c in container['command']]
  args = [invocation if a == '{{$}}' else a for a in container.get('args', [])]
  proc = subprocess.run(command + args, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True,
                        timeout=900, check=False)
  assert proc.returncode == 0, ' '.join(command[:3]) + '\n' + proc.stderr[-4000:]


@pytest.mark.e2e  # Every step of a compiled pipeline in its own process: several minutes.
def test_compiled_steps_run_here_through_the_kfp_entrypoint(tmp_path):
  data_root = tmp_path / 'data'
  data.export_digits(str(data_root))
  root = tmp_path / 'root'
  ota = repository.OTARepository(str(tmp_path / 'ota'), str(tmp_path / 'keys'))
  ota.init()
  spec = compile_spec(tmp_path, '--variants', 'ptq', '--data-root', str(data_root),
                      '--pipeline-root', str(root), '--ota-repository', ota.repo_dir,
                      '--ota-keys', str(tmp_path / 'keys'),
                      '--beam-arg=--direct_running_mode=in_memory')
  tasks = spec['root']['dag']['tasks']
  outputs = {}

  # What the KFP driver and launcher do for each task: resolve inputs from upstream outputs and
  # constants, give outputs fresh URIs, run the container, read back ExecutorOutput.
  for task_id in _topological(tasks):
    task = tasks[task_id]
    component = spec['components'][task['componentRef']['name']]
    container = spec['deploymentSpec']['executors'][component['executorLabel']]['container']
    task_dir = root / task_id
    task_dir.mkdir(parents=True)
    inputs = task.get('inputs', {})
    executor_input = {
        'inputs': {
            'parameters': {k: v['runtimeValue']['constantValue']
                           for k, v in inputs.get('parameters', {}).items()},
            'artifacts': {
                k: {'artifacts': [outputs[v['taskOutputArtifact']['producerTask']][
                    v['taskOutputArtifact']['outputArtifactKey']]]}
                for k, v in inputs.get('artifacts', {}).items()
            },
        },
        'outputs': {
            'artifacts': {
                k: {'artifacts': [{'name': f'{task_id}-{k}', 'type': d['artifactType'],
                                   'uri': str(task_dir / k), 'metadata': {}}]}
                for k, d in component.get('outputDefinitions', {}).get('artifacts', {}).items()
            },
            'outputFile': str(task_dir / 'executor_output.json'),
        },
    }
    if 'lifecycle' in container:  # ImportExampleGen's driver resolves the span first.
      _run_container(container['lifecycle']['preCacheCheck'], executor_input)
    _run_container(container, executor_input)
    with open(task_dir / 'executor_output.json') as f:
      produced = json.load(f).get('artifacts', {})
    outputs[task_id] = {}
    for key, declared in executor_input['outputs']['artifacts'].items():
      artifact = dict(declared['artifacts'][0])
      if key in produced:
        artifact.update(produced[key]['artifacts'][0])
      outputs[task_id][key] = artifact

  # The same kinds of outputs as a local run: a converted int8 model, a blessing, a push.
  int8 = outputs['ptq_int8']['tflite_model']
  assert os.path.exists(os.path.join(int8['uri'], 'Format-Serving', 'tflite'))
  assert int8['metadata']['tfx_edge_mode'] == 'int8'
  assert os.path.exists(os.path.join(outputs['ptq_evaluator']['blessing']['uri'], 'BLESSED'))
  benchmark = outputs['ptq_benchmark']['benchmark']['metadata']
  assert benchmark[spec_keys.PROP_WITHIN_BUDGETS] == 1
  assert 'blessed' not in benchmark  # The Evaluator's verdict, not the benchmarker's.
  assert outputs['VariantSelector']['selection']['metadata']['tfx_edge_selected_variant'] == 'ptq'
  pushed = outputs['OTAPusher']['pushed_model']['metadata']
  assert pushed['pushed'] == 1
  assert pushed['pushed_version'] == '1'  # A string, as the standard TFX Pusher writes it.
  [release] = ota.releases('digits')
  assert pushed['pushed_destination'] == release.path == 'digits/stable/model-v000001.tflite'
  with open(os.path.join(int8['uri'], 'model.tflite'), 'rb') as f:
    assert ota.read_target(release) == f.read()
