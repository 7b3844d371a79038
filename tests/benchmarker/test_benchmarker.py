"""DeviceBenchmarker: real LiteRT measurements, budgets, targets and the report."""
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest
from tfx.types import standard_artifacts

from components import errors
from components import spec_keys
from components.benchmarker import budgets as budgets_lib
from components.benchmarker import measure
from components.benchmarker import targets
from components.benchmarker.component import DeviceBenchmarker
from components.common import modes
from components.common import tflite
from components.ptq_converter import conversion
from tests.helpers import blessing_artifact
from tests.helpers import channel
from tests.helpers import run_benchmark
from tests.helpers import tflite_model_artifact


def _model_artifact(tmp_path, name, data, mode):
  return tflite_model_artifact(tmp_path / 'models' / name, data, mode)


def _blessing(tmp_path, name, model, blessed):
  return blessing_artifact(tmp_path / 'blessings' / name, model, blessed)


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

  with pytest.raises(errors.MeasurementError, match=r'broken\.tflite.*valid \.tflite'):
    measure.measure_isolated(str(path), threads=1, min_runs=1, min_duration_s=0.01)


def test_host_info_records_cpu_and_runtime():
  info = measure.host_info()
  assert info['cpu_model'] and info['cpu_count'] >= 1
  assert info['runtime'].startswith('ai-edge-litert ') and 'unknown' not in info['runtime']
  with open('/proc/cpuinfo') as f:
    cpuinfo = f.read()
  assert all(flag in cpuinfo for flag in info['cpu_flags'])


@pytest.mark.parametrize('target, message', [
    ('phone', "target='phone' is unknown; accepted: host"),
    ('', "target='' is not accepted: give one of host"),
    ('adb:emulator-5554', "target='adb:emulator-5554': the 'adb' target is designed but not "
     'available'),
    ('k8s:pool=arm64', "the 'k8s' target is designed but not available"),
    ('k8s:', "target='k8s:' is malformed"),
])
def test_unknown_or_unavailable_targets_fail_when_the_pipeline_is_built(target, message):
  with pytest.raises(errors.ConfigError, match=message):
    DeviceBenchmarker(model=channel(), target=target)


@pytest.mark.parametrize('kwargs, message', [
    (dict(settings={'threads': [1]}), "settings={'threads': \\[1\\]} is not accepted; it must "
     'be a MeasureSettings'),
    (dict(budgets=None), 'budgets=None is not accepted; it must be a Budgets'),
])
def test_settings_and_budgets_must_be_their_config_classes(kwargs, message):
  with pytest.raises(errors.ConfigError, match=message):
    DeviceBenchmarker(model=channel(), **kwargs)


def test_the_benchmarker_hands_its_settings_and_budgets_to_the_executor():
  budgets = budgets_lib.Budgets(max_p90_ms=5.0, max_gzip_bytes=20_000)
  settings = budgets_lib.MeasureSettings(threads=(1, 2), min_runs=10)

  component = DeviceBenchmarker(model=channel(), settings=settings, budgets=budgets,
                                variant='pcqat')

  props = component.exec_properties
  assert budgets_lib.Budgets.from_json(props[spec_keys.BUDGETS_KEY]) == budgets
  assert budgets_lib.MeasureSettings.from_json(props[spec_keys.BENCHMARK_SETTINGS_KEY]) == settings
  assert (props[spec_keys.TARGET_KEY], props[spec_keys.VARIANT_KEY]) == ('host', 'pcqat')


@pytest.mark.parametrize('kwargs, message', [
    (dict(max_p90_ms=0), 'max_p90_ms=0 is not accepted'),
    (dict(max_size_bytes=-5), 'max_size_bytes=-5'),
    (dict(max_size_bytes=1.5), 'positive integer'),
    (dict(max_peak_memory_mb=float('nan')), 'max_peak_memory_mb=nan'),
    (dict(max_gzip_bytes=True), 'max_gzip_bytes=True'),
])
def test_budgets_that_are_not_positive_are_rejected(kwargs, message):
  with pytest.raises(errors.ConfigError, match=message):
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
  with pytest.raises(errors.ConfigError, match=message):
    budgets_lib.MeasureSettings(**kwargs)


def test_model_within_budgets_is_marked_so_and_the_report_is_written(tmp_path, tflite_models):
  model = _model_artifact(tmp_path, 'int8', tflite_models['int8'], 'int8')
  budgets = budgets_lib.Budgets(max_p90_ms=1000.0, max_size_bytes=10**6, max_gzip_bytes=10**6,
                                max_peak_memory_mb=1024.0)

  out = run_benchmark(tmp_path, 'int8', model, _blessing(tmp_path, 'int8', model, True), budgets)

  assert out.get_int_custom_property(spec_keys.PROP_WITHIN_BUDGETS) == 1
  # `blessed` is the Evaluator's (TFMA) verdict; the budgets never set it.
  assert not out.has_custom_property('blessed')
  assert out.get_string_custom_property(spec_keys.PROP_BUDGET_REASON) == 'within budgets'
  doc = json.loads((tmp_path / 'benchmarks/int8/benchmark.json').read_text())
  entry = doc['models'][0]
  assert [m['threads'] for m in entry['measurements']] == [1, 2]
  assert entry['size_bytes'] == len(tflite_models['int8'])
  assert entry['gzip_bytes'] == tflite.gzip_size(tflite_models['int8'])
  assert entry['accuracy']['blessed'] is True
  assert entry['within_budget'] is True and entry['budget_violations'] == []
  first = entry['measurements'][0]
  assert out.get_float_custom_property(spec_keys.PROP_P50_MS) == first['p50_ms']
  assert out.get_float_custom_property(spec_keys.PROP_P90_MS) == first['p90_ms']
  assert out.get_int_custom_property(spec_keys.PROP_GZIP_SIZE_BYTES) == entry['gzip_bytes']
  assert doc['host']['runtime'].startswith('ai-edge-litert')
  html = (tmp_path / 'benchmarks/int8/index.html').read_text()
  assert 'within budgets' in html and 'p90 ms' in html and doc['host']['cpu_model'] in html


def test_model_over_a_budget_is_marked_so_and_the_reason_names_the_budget(tmp_path,
                                                                            tflite_models, caplog):
  model = _model_artifact(tmp_path, 'fp32', tflite_models['fp32'], 'float32')
  budgets = budgets_lib.Budgets(max_size_bytes=1000, max_p90_ms=1e-6)

  with caplog.at_level('WARNING'):
    out = run_benchmark(tmp_path, 'fp32', model, budgets=budgets)

  assert out.get_int_custom_property(spec_keys.PROP_WITHIN_BUDGETS) == 0
  assert not out.has_custom_property('blessed')
  reason = out.get_string_custom_property(spec_keys.PROP_BUDGET_REASON)
  assert f'size {len(tflite_models["fp32"]):,} B > max_size_bytes 1,000 B' in reason
  assert 'at 1 thread(s) > max_p90_ms' in reason and 'at 2 thread(s) > max_p90_ms' in reason
  assert reason.startswith(f'{model.uri}: ')
  assert f'DeviceBenchmarker: fp32: {reason}' in caplog.text


def test_a_model_artifact_without_a_tflite_file_is_named(tmp_path):
  model = standard_artifacts.Model()
  model.uri = str(tmp_path / 'empty')
  os.makedirs(model.uri)
  with pytest.raises(errors.ModelLoadError, match=f'DeviceBenchmarker: model artifact {model.uri} '
                     r'has no model\.tflite; give it a PTQConverter output'):
    run_benchmark(tmp_path, 'x', model)

  assert not os.path.exists(tmp_path / 'benchmarks' / 'x')


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


@pytest.mark.e2e  # MobileNetV2-224 measured by two tools, three times per setting: minutes.
@pytest.mark.parametrize('mode', ['fp32', 'int8'])
@pytest.mark.parametrize('threads', [1, 2])
def test_p50_agrees_with_litert_benchmark_tool_on_mobilenet_v2(mobilenet_v2_files, mode,
                                                                threads):
  """At one thread our p50 and LiteRT's own tool agree within 10%.

  At two threads on a two-vCPU machine the tools' thread pools are not comparable: on a shared CI
  host the tool read 43% slower than the Interpreter (4.79 against 3.34 ms, fp32) with both
  keeping 1.9 cores busy, while on other hosts they agreed within 3%; for int8 the tool keeps one
  core busy whatever --num_threads says. There the test checks what a broken harness would get
  wrong: ours is never slower than the tool (no overhead of our own), the second thread gives a
  speed-up, and never more than perfect scaling (a measurement that skipped work would).
  """
  path = mobilenet_v2_files[mode]
  ours, reference = [], []
  # Alternate the two tools and keep each one's best p50, so that a burst of load from another
  # process on a shared CI machine does not land on one tool only. Two rounds were not enough:
  # under CI's own load one tool read 10% off in both directions within a run.
  for _ in range(3):
    ours.append(measure.measure_isolated(str(path), threads, warmup_runs=5, min_runs=50,
                                         min_duration_s=1.0))
    reference.append(_reference(path, threads))
  best = min(ours, key=lambda m: m['p50_ms'])
  ref_p50, ref_cores = min(reference)
  ratio = best['p50_ms'] / ref_p50
  print(f'MobileNetV2 {mode} {threads} thread(s): ours p50 {best["p50_ms"]:.2f} ms (cv '
        f'{best["cv"]:.3f}, {best["cpu_cores_used"]:.2f} cores busy), benchmark_litert_model '
        f'median {ref_p50:.2f} ms ({ref_cores:.2f} cores busy), ratio {ratio:.3f}')
  if threads == 1:
    assert 0.9 <= ratio <= 1.1
    return
  one_thread = min(measure.measure_isolated(str(path), 1, min_runs=50, min_duration_s=1.0)['p50_ms']
                   for _ in range(2))
  print(f'  ours at 1 thread {one_thread:.2f} ms: speed-up {one_thread / best["p50_ms"]:.2f}x')
  assert ratio <= 1.1
  assert one_thread / threads * 0.8 <= best['p50_ms'] < 0.9 * one_thread
