"""DeviceBenchmarker and VariantSelector: real LiteRT measurements, budgets, selection, reports."""
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest
from tfx.types import standard_artifacts

from components import artifact_types
from components import spec_keys
from components.benchmarker import budgets as budgets_lib
from components.benchmarker import executor as bench_executor
from components.benchmarker import measure
from components.benchmarker import targets
from components.benchmarker.component import DeviceBenchmarker
from components.common import modes
from components.ptq_converter import conversion
from components.pusher import executor as pusher_executor
from components.selector import executor as selector_executor
from components.selector import selection as selection_lib
from components.selector.component import VariantSelector
from tests.conftest import random_pixels

FAST = budgets_lib.MeasureSettings(threads=(1, 2), warmup_runs=2, min_runs=20,
                                   min_duration_s=0.2)


@pytest.fixture(scope='module')
def tflite_models(tiny_model):
  """Two real TFLite files of one model: float32 and int8 (int8 is the smaller)."""
  def representative():
    for row in random_pixels(16):
      yield {'pixels': row[None]}
  return {
      'fp32': conversion.convert(tiny_model, modes.FLOAT32),
      'int8': conversion.convert(tiny_model, modes.INT8, representative),
  }


def _model_artifact(tmp_path, name, data, mode):
  model = standard_artifacts.Model()
  model.uri = str(tmp_path / 'models' / name)
  os.makedirs(model.uri)
  for file_name in (spec_keys.TFLITE_FILE_NAME, spec_keys.PLAIN_TFLITE_FILE_NAME):
    with open(os.path.join(model.uri, file_name), 'wb') as f:
      f.write(data)
  model.set_string_custom_property(spec_keys.PROP_MODE, mode)
  model.set_string_custom_property(spec_keys.PROP_INPUT_DTYPES, '{"pixels": "int8"}')
  model.set_string_custom_property(spec_keys.PROP_OUTPUT_DTYPES, '{"out": "int8"}')
  return model


def _blessing(tmp_path, name, model, blessed):
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = str(tmp_path / 'blessings' / name)
  blessing.set_int_custom_property('blessed', int(blessed))
  blessing.set_string_custom_property('current_model', model.uri)
  return blessing


def _benchmark(tmp_path, name, model, blessing=None, budgets=budgets_lib.Budgets(),
               settings=FAST):
  output = artifact_types.DeviceBenchmark()
  output.uri = str(tmp_path / 'benchmarks' / name)
  inputs = {spec_keys.MODEL_KEY: [model]}
  if blessing is not None:
    inputs[spec_keys.MODEL_BLESSING_KEY] = [blessing]
  executor = bench_executor.Executor(
      bench_executor.Executor.Context(tmp_dir=str(tmp_path / 'tmp' / name), unique_id='1'))
  executor.Do(inputs, {spec_keys.BENCHMARK_KEY: [output]}, {
      spec_keys.TARGET_KEY: 'host',
      spec_keys.BENCHMARK_SETTINGS_KEY: settings.to_json(),
      spec_keys.BUDGETS_KEY: budgets.to_json(),
      spec_keys.VARIANT_KEY: name,
  })
  return output


def test_isolated_measurement_reports_every_figure(tflite_models, tmp_path):
  path = tmp_path / 'm.tflite'
  path.write_bytes(tflite_models['int8'])

  m = measure.measure_isolated(str(path), threads=2, warmup_runs=3, min_runs=30,
                               min_duration_s=0.3)

  assert m['threads'] == 2 and m['runs'] >= 30 and m['duration_s'] > 0
  assert 0 < m['min_ms'] <= m['p50_ms'] <= m['p90_ms'] <= m['p99_ms']
  assert m['cv'] == pytest.approx(m['std_ms'] / m['mean_ms'])
  assert m['init_ms'] > 0 and m['first_inference_ms'] > 0 and m['warmup_runs'] == 3
  assert 0 < m['peak_memory_mb'] < m['peak_rss_mb']
  # The child's own peak, not this (TensorFlow-sized) parent's, which a fork+exec would inherit
  # through getrusage.
  assert m['peak_rss_mb'] < 300
  assert m['xnnpack'], 'LiteRT did not report the XNNPACK delegate'
  assert m['input_dtypes'] == ['int8']


def test_a_corrupt_tflite_file_is_named_in_the_error(tmp_path):
  path = tmp_path / 'broken.tflite'
  path.write_bytes(b'\x00not a flatbuffer' * 10)

  with pytest.raises(measure.MeasurementError, match=r'broken\.tflite.*valid \.tflite'):
    measure.measure_isolated(str(path), threads=1, min_runs=1, min_duration_s=0.01)


def test_host_info_records_cpu_and_runtime():
  info = measure.host_info()
  assert info['cpu_model'] and info['cpu_count'] >= 1
  assert info['runtime'].startswith('ai-edge-litert ') and 'unknown' not in info['runtime']
  with open('/proc/cpuinfo') as f:
    cpuinfo = f.read()
  assert all(flag in cpuinfo for flag in info['cpu_flags'])


@pytest.mark.parametrize('target, message', [
    ('phone', 'unknown; accepted: host'),
    ('', 'give one of'),
    ('adb:emulator-5554', 'designed but not available'),
    ('k8s:pool=arm64', 'designed but not available'),
    ('k8s:', 'malformed'),
])
def test_unknown_or_unavailable_targets_fail_when_the_pipeline_is_built(target, message):
  with pytest.raises(ValueError, match=message):
    DeviceBenchmarker(model=_channel(), target=target)


def _channel(artifact_type=standard_artifacts.Model):
  from tfx import types  # pylint: disable=g-import-not-at-top
  return types.Channel(type=artifact_type)


@pytest.mark.parametrize('kwargs, message', [
    (dict(max_p90_ms=0), 'max_p90_ms=0 is not accepted'),
    (dict(max_size_bytes=-5), 'max_size_bytes=-5'),
    (dict(max_size_bytes=1.5), 'positive integer'),
    (dict(max_peak_memory_mb=float('nan')), 'max_peak_memory_mb=nan'),
    (dict(max_gzip_bytes=True), 'max_gzip_bytes=True'),
])
def test_budgets_that_are_not_positive_are_rejected(kwargs, message):
  with pytest.raises(ValueError, match=message):
    budgets_lib.Budgets(**kwargs)


@pytest.mark.parametrize('kwargs, message', [
    (dict(threads=()), 'at least one thread'),
    (dict(threads=(0,)), r'threads\[\]=0'),
    (dict(threads=(1, 1)), 'repeats'),
    (dict(min_runs=0), 'min_runs=0'),
    (dict(min_duration_s=-1), 'min_duration_s=-1'),
    (dict(warmup_runs=-1), 'warmup_runs=-1'),
])
def test_measure_settings_are_checked(kwargs, message):
  with pytest.raises(ValueError, match=message):
    budgets_lib.MeasureSettings(**kwargs)


def test_model_within_budgets_is_blessed_and_the_report_is_written(tmp_path, tflite_models):
  model = _model_artifact(tmp_path, 'int8', tflite_models['int8'], 'int8')
  budgets = budgets_lib.Budgets(max_p90_ms=1000.0, max_size_bytes=10**6, max_gzip_bytes=10**6,
                                max_peak_memory_mb=1024.0)

  out = _benchmark(tmp_path, 'int8', model, _blessing(tmp_path, 'int8', model, True), budgets)

  assert out.get_int_custom_property('blessed') == 1
  assert out.get_string_custom_property(spec_keys.PROP_BUDGET_REASON) == 'within budgets'
  doc = json.loads((tmp_path / 'benchmarks/int8/benchmark.json').read_text())
  entry = doc['models'][0]
  assert [m['threads'] for m in entry['measurements']] == [1, 2]
  assert entry['size_bytes'] == len(tflite_models['int8'])
  assert entry['gzip_bytes'] == measure.gzip_size(tflite_models['int8'])
  assert entry['accuracy']['blessed'] is True
  assert doc['host']['runtime'].startswith('ai-edge-litert')
  html = (tmp_path / 'benchmarks/int8/index.html').read_text()
  assert 'within budgets' in html and 'p90 ms' in html and doc['host']['cpu_model'] in html


def test_model_over_a_budget_is_not_blessed_and_the_reason_names_the_budget(tmp_path,
                                                                              tflite_models):
  model = _model_artifact(tmp_path, 'fp32', tflite_models['fp32'], 'float32')
  budgets = budgets_lib.Budgets(max_size_bytes=1000, max_p90_ms=1e-6)

  out = _benchmark(tmp_path, 'fp32', model, budgets=budgets)

  assert out.get_int_custom_property('blessed') == 0
  reason = out.get_string_custom_property(spec_keys.PROP_BUDGET_REASON)
  assert f'size {len(tflite_models["fp32"]):,} B > max_size_bytes 1,000 B' in reason
  assert 'at 1 thread(s) > max_p90_ms' in reason and 'at 2 thread(s) > max_p90_ms' in reason


def test_a_model_artifact_without_a_tflite_file_is_named(tmp_path):
  model = standard_artifacts.Model()
  model.uri = str(tmp_path / 'empty')
  os.makedirs(model.uri)
  with pytest.raises(ValueError, match=r'empty has no model\.tflite'):
    _benchmark(tmp_path, 'x', model)


def _candidate(name, acc, blessed, gzip, p50=1.0, within=True):
  return selection_lib.Candidate(name=name, accuracy=acc, accuracy_blessed=blessed,
                                 accuracy_reason='BLESSED' if blessed else 'NOT_BLESSED: drop',
                                 within_budget=within,
                                 budget_reason='within budgets' if within else 'p90 too high',
                                 p50_ms=p50, gzip_bytes=gzip, size_bytes=gzip * 2)


def test_the_smallest_blessed_variant_wins_and_an_unblessed_one_never_does():
  candidates = [
      _candidate('ptq', 0.98, True, 37_000),
      _candidate('pruned', 0.95, False, 15_000),  # smallest of all, but failed the gate
      _candidate('clustered', 0.98, True, 25_000),
      _candidate('pcqat', 0.97, True, 11_000),
  ]
  result = selection_lib.select(candidates)
  assert result.winner == 'pcqat'
  assert 'failed the accuracy gate' in result.reasons['pruned']
  assert 'pcqat is better by size' in result.reasons['clustered']

  # Without pcqat, the unblessed pruned model is still the smallest but never wins.
  result = selection_lib.select(candidates[:3])
  assert result.winner == 'clustered'
  assert 'pruned' in result.front  # on the front (smallest), yet not eligible


def test_over_budget_variants_lose_and_nothing_is_selected_when_none_qualifies():
  candidates = [_candidate('a', 0.9, True, 100, within=False), _candidate('b', 0.9, False, 200)]
  result = selection_lib.select(candidates)
  assert result.winner is None
  assert 'over the device budgets (p90 too high)' in result.reasons['a']
  assert 'failed the accuracy gate' in result.reasons['b']


def test_pareto_front_and_preferences():
  a = _candidate('a', 0.99, True, 300, p50=3.0)
  b = _candidate('b', 0.97, True, 100, p50=2.0)
  c = _candidate('c', 0.96, True, 200, p50=2.5)  # dominated by b
  d = _candidate('d', 0.95, True, 400, p50=0.5)
  assert [x.name for x in selection_lib.pareto_front([a, b, c, d])] == ['a', 'b', 'd']
  assert selection_lib.select([a, b, c, d], 'size').winner == 'b'
  assert selection_lib.select([a, b, c, d], 'latency').winner == 'd'
  assert selection_lib.select([a, b, c, d], 'accuracy').winner == 'a'
  assert 'dominated by b' in selection_lib.select([a, b, c, d]).reasons['c']
  with pytest.raises(ValueError, match="prefer='fast'"):
    selection_lib.select([a], 'fast')


@pytest.mark.parametrize('candidates, message', [
    ({}, 'non-empty dict'),
    ({'Bad-Name': (None, None)}, "variant name 'Bad-Name'"),
    ({'ok': 'model'}, 'pair of channels'),
])
def test_selector_parameters_fail_when_the_pipeline_is_built(candidates, message):
  with pytest.raises(ValueError, match=message):
    VariantSelector(candidates=candidates)


def test_selector_ships_only_the_winner_with_a_blessing_the_pusher_accepts(tmp_path,
                                                                           tflite_models):
  models = {
      'big': _model_artifact(tmp_path, 'big', tflite_models['fp32'], 'int8'),
      'small': _model_artifact(tmp_path, 'small', tflite_models['int8'], 'int8'),
      'unblessed': _model_artifact(tmp_path, 'unblessed', tflite_models['int8'] + b'\0', 'int8'),
  }
  blessed = {'big': True, 'small': True, 'unblessed': False}
  inputs = {}
  for name, model in models.items():
    inputs[selector_executor.model_key(name)] = [model]
    inputs[selector_executor.benchmark_key(name)] = [
        _benchmark(tmp_path, name, model, _blessing(tmp_path, name, model, blessed[name]))]
  out_model = standard_artifacts.Model()
  out_model.uri = str(tmp_path / 'selected')
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = str(tmp_path / 'selected_blessing')
  selection = artifact_types.VariantSelection()
  selection.uri = str(tmp_path / 'selection')

  selector_executor.Executor().Do(inputs, {
      spec_keys.SELECTED_MODEL_KEY: [out_model], spec_keys.SELECTED_BLESSING_KEY: [blessing],
      spec_keys.SELECTION_KEY: [selection]
  }, {spec_keys.VARIANTS_KEY: json.dumps(list(models)), spec_keys.PREFER_KEY: 'size'})

  doc = json.loads((tmp_path / 'selection/selection.json').read_text())
  assert doc['winner'] == 'small'
  assert 'failed the accuracy gate' in doc['reasons']['unblessed']
  assert (tmp_path / 'selected/model.tflite').read_bytes() == tflite_models['int8']
  assert out_model.get_string_custom_property(spec_keys.PROP_SELECTED_VARIANT) == 'small'
  summary = json.loads(out_model.get_string_custom_property(spec_keys.PROP_BENCHMARK))
  assert set(summary['latency_ms']) == {'1', '2'} and summary['variant'] == 'small'
  assert pusher_executor.refusal_reason(out_model, blessing, ['int8']) == ''
  assert (tmp_path / 'selected_blessing/BLESSED').exists()
  for png in ('accuracy_vs_latency.png', 'accuracy_vs_gzip_size.png'):
    assert (tmp_path / 'selection' / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  html = (tmp_path / 'selection/index.html').read_text()
  assert 'Selected: small' in html and 'accuracy_vs_latency.png' in html


def test_when_nothing_qualifies_the_pusher_is_told_why(tmp_path, tflite_models):
  model = _model_artifact(tmp_path, 'only', tflite_models['int8'], 'int8')
  bench = _benchmark(tmp_path, 'only', model, _blessing(tmp_path, 'only', model, True),
                     budgets_lib.Budgets(max_size_bytes=10))
  outs = {spec_keys.SELECTED_MODEL_KEY: standard_artifacts.Model(),
          spec_keys.SELECTED_BLESSING_KEY: standard_artifacts.ModelBlessing(),
          spec_keys.SELECTION_KEY: artifact_types.VariantSelection()}
  for key, artifact in outs.items():
    artifact.uri = str(tmp_path / key)
  selector_executor.Executor().Do(
      {'model_only': [model], 'benchmark_only': [bench]},
      {k: [v] for k, v in outs.items()},
      {spec_keys.VARIANTS_KEY: '["only"]', spec_keys.PREFER_KEY: 'size'})

  reason = pusher_executor.refusal_reason(outs[spec_keys.SELECTED_MODEL_KEY],
                                          outs[spec_keys.SELECTED_BLESSING_KEY], ['int8'])
  assert reason.startswith('VariantSelector chose no model to ship')
  assert not os.path.exists(tmp_path / spec_keys.SELECTED_MODEL_KEY / 'model.tflite')


def test_the_host_target_measures_through_the_isolated_process(tmp_path, tflite_models):
  path = tmp_path / 'm.tflite'
  path.write_bytes(tflite_models['fp32'])
  target = targets.create('host')
  m = target.measure(str(path), 1, budgets_lib.MeasureSettings(min_runs=5, min_duration_s=0.05))
  assert isinstance(target, targets.HostTarget) and m['runs'] >= 5 and m['xnnpack']


@pytest.fixture(scope='module')
def mobilenet_v2_files(tmp_path_factory):
  """MobileNetV2-224 (random weights: latency does not depend on them) in fp32 and int8."""
  import tf_keras  # pylint: disable=g-import-not-at-top
  tf_keras.utils.set_random_seed(0)
  model = tf_keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
  rng = np.random.default_rng(0)
  input_name = model.inputs[0].name.split(':')[0]

  def representative():
    for _ in range(4):
      yield {input_name: rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)}
  out = tmp_path_factory.mktemp('mobilenet_v2')
  files = {}
  for mode, data in (('fp32', conversion.convert(model, modes.FLOAT32)),
                     ('int8', conversion.convert(model, modes.INT8, representative))):
    files[mode] = out / f'mobilenet_v2_{mode}.tflite'
    files[mode].write_bytes(data)
  return files


def _reference(path, threads, runs=100):
  """LiteRT's own tool (python -m ai_edge_litert.tools.benchmark_litert_model): its median, and
  the cores its process kept busy (CPU time / wall time)."""
  result = path.parent / f'ref_{path.stem}_{threads}.json'
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  subprocess.run([sys.executable, '-m', 'ai_edge_litert.tools.benchmark_litert_model',
                  '--model', str(path), '--num_threads', str(threads), '--num_runs', str(runs),
                  '--warmup_runs', '5', '--result_json', str(result)],
                 check=True, capture_output=True, timeout=300)
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return json.loads(result.read_text())['latency']['median_ms'], cpu / wall


@pytest.mark.parametrize('mode', ['fp32', 'int8'])
@pytest.mark.parametrize('threads', [1, 2])
def test_p50_agrees_with_litert_benchmark_tool_on_mobilenet_v2(mobilenet_v2_files, mode,
                                                                threads):
  path = mobilenet_v2_files[mode]
  ours, reference = [], []
  # Alternate the two tools and keep each one's best p50, so that a burst of load from another
  # process on a shared CI machine does not land on one tool only.
  for _ in range(2):
    ours.append(measure.measure_isolated(str(path), threads, warmup_runs=5, min_runs=50,
                                         min_duration_s=1.0))
    reference.append(_reference(path, threads))
  best = min(ours, key=lambda m: m['p50_ms'])
  ref_p50, ref_cores = min(reference)
  ratio = best['p50_ms'] / ref_p50
  print(f'MobileNetV2 {mode} {threads} thread(s): ours p50 {best["p50_ms"]:.2f} ms (cv '
        f'{best["cv"]:.3f}, {best["cpu_cores_used"]:.2f} cores busy), benchmark_litert_model '
        f'median {ref_p50:.2f} ms ({ref_cores:.2f} cores busy), ratio {ratio:.3f}')
  if threads > 1 and ref_cores < 1.2 and best['cpu_cores_used'] > 1.5:
    # Measured with ai-edge-litert 2.3.0: for full-integer int8 models the tool's CompiledModel
    # path keeps one core busy whatever --num_threads says (and is slower than at 1 thread),
    # while the Interpreter uses both. Then the tool is not a reference at this setting; our
    # figure must still show the speed-up the second thread gives.
    one_thread = measure.measure_isolated(str(path), 1, min_runs=50, min_duration_s=1.0)
    assert best['p50_ms'] < 0.8 * one_thread['p50_ms']
    return
  assert 0.9 <= ratio <= 1.1


@pytest.mark.parametrize('artifact_type', [artifact_types.DeviceBenchmark,
                                           artifact_types.VariantSelection])
def test_custom_artifact_types_survive_the_kubeflow_v2_runtime(artifact_type):
  """KFP's compiler wants `<namespace>.<Title>`; its runtime imports that name as a class path."""
  from tfx.orchestration.kubeflow.v2 import compiler_utils  # pylint: disable=g-import-not-at-top
  from tfx.utils import import_utils  # pylint: disable=g-import-not-at-top
  schema = compiler_utils.get_artifact_schema(artifact_type)  # raises on a bad title
  assert f'title: {artifact_type.TYPE_NAME}' in schema
  assert import_utils.import_class_by_path(artifact_type.TYPE_NAME) is artifact_type
