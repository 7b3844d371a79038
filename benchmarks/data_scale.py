"""How the Beam steps' cost grows with the data: calibration, PTQConverter and the gate at scale.

```
.venv/bin/python -m benchmarks.data_scale [--sizes 10000 100000] [--modes in_process multi_process]
    [--stages STAGE ...] [--merge] [--output-dir benchmarks/results] [--work-dir DIR]
    [--report-only]
```

For each size it writes an Examples artifact of that many digits (shifted by up to a pixel, with
Gaussian noise: 64 floats and a label, as the demo's examples), then runs, each in a fresh
process and with each Beam setting, the calibration sampling transform alone, one int8
PTQConverter run (sampling + conversion) and the gate (GateExamplesGen, then the Evaluator with
the pipeline's EvalConfig, int8 candidate against its float32 baseline), the Evaluator twice:
`evaluator_tfma` predicts with TFMA's TFLite extractor (builtin kernels, per-example input
assembly; inputs rounded as on a device), the gate before DevicePredictionDoFn, and `evaluator`
with the pipeline's extractors (components/common/device_extractors.py: XNNPACK, whole batches).
It records the wall time of the step (imports and the model excluded) and the peak resident
memory of the whole process tree (Beam's worker processes included), prints time per example and
peak RSS side by side, and writes results/data_scale.{md,json,png}. `--stages` measures some
steps only; `--merge` keeps the runs of the existing data_scale.json that this run does not
measure again (same step, Beam setting and size), for example to add 1M examples for two steps.

Goals: time per example at the largest size within 1.5x of the size before it (linear cost) and
peak memory flat (the calibration sample is bounded by its size, not by the data).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Sequence

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipelines import data  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLIT = 'eval'
CALIBRATION_SAMPLES = 300
STAGES = ('calibration', 'ptq_converter', 'gate_examples_gen', 'evaluator_tfma', 'evaluator',
          'predict_tfma', 'predict_device')
# The TFLite prediction DoFn alone, in-process only, on batches of PREDICT_BATCH examples (TFMA's
# in-process batches averaged 253 examples here): TFMA's against the gate's.
PREDICT_STAGES = {'predict_tfma': 'DeviceQuantizationDoFn',
                  'predict_device': 'DevicePredictionDoFn'}
PREDICT_BATCH = 256
# The Evaluator stages: the extractors' module (the Evaluator's module_path) of each.
GATE_STAGES = {'evaluator_tfma': 'benchmarks.data_scale',
               'evaluator': 'components.common.device_extractors'}
BEAM_MODES = {
    'in_process': ['--direct_running_mode=in_memory', '--direct_num_workers=1'],
    'multi_process': ['--direct_running_mode=multi_processing', '--direct_num_workers=2'],
}
# Time per example at a size may be at most this many times that at the size before it.
LINEAR_GOAL = 1.5
# Peak memory at the largest size may be at most this many times that at the smallest.
FLAT_MEMORY_GOAL = 1.25


def scaled_digits(n: int, seed: int = 0, chunk: int = 10000) -> Iterator[bytes]:
  """n serialized digits tf.Examples: each a digit shifted by -1..1 pixel with noise (sd 0.05).

  Args:
    n: how many examples.
    seed: numpy seed; the same seed gives the same examples.
    chunk: examples made per numpy batch (bounds the memory used).
  """
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)
  rng = np.random.default_rng(seed)
  for start in range(0, n, chunk):
    count = min(chunk, n - start)
    picks = rng.integers(0, len(images), count)
    shifts = rng.integers(-1, 2, (count, 2))
    batch = images[picks]
    for axis in (1, 2):  # Same shift per example along each axis.
      for s in (-1, 1):
        rows = shifts[:, axis - 1] == s
        batch[rows] = np.roll(batch[rows], s, axis=axis)
    noisy = np.clip(batch + rng.normal(0, 0.05, batch.shape), 0, 1).astype(np.float32)
    noisy = noisy.reshape(count, data.NUM_PIXELS)
    for pixels, label in zip(noisy, digits.target[picks]):
      yield tf.train.Example(features=tf.train.Features(feature={
          data.PIXELS_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=pixels)),
          data.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
      })).SerializeToString(deterministic=True)  # Map order varies otherwise.


def write_examples(uri: str, splits: Dict[str, Any], shards: int = 1):
  """An Examples artifact at uri (any tf.io.gfile path) with gzip TFRecords per split."""
  from tfx.types import artifact_utils  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  options = tf.io.TFRecordOptions(compression_type='GZIP')
  for split, records in splits.items():
    split_dir = f'{uri}/Split-{split}'
    tf.io.gfile.makedirs(split_dir)
    writers = [tf.io.TFRecordWriter(f'{split_dir}/data_tfrecord-{i:05d}-of-{shards:05d}.gz',
                                    options) for i in range(shards)]
    for i, record in enumerate(records):
      writers[i % shards].write(record)
    for writer in writers:
      writer.close()
  examples = standard_artifacts.Examples()
  examples.uri = uri
  examples.split_names = artifact_utils.encode_split_names(list(splits))
  return examples


def trained_model_artifact(uri: str):
  """A Model artifact at uri: a small dense digits classifier, trained for a few seconds."""
  import tf_keras  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from components.common import model_io  # pylint: disable=g-import-not-at-top
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  x = (digits.images.reshape(-1, data.NUM_PIXELS) / 16.0).astype(np.float32)
  tf_keras.utils.set_random_seed(0)
  inputs = tf_keras.Input((data.NUM_PIXELS,), name=data.PIXELS_KEY)
  hidden = tf_keras.layers.Dense(32, activation='relu')(inputs)
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(data.NUM_CLASSES, activation='softmax')(
      hidden))
  model.compile('adam', 'sparse_categorical_crossentropy')
  model.fit(x, digits.target, epochs=20, batch_size=64, verbose=0)
  artifact = standard_artifacts.Model()
  artifact.uri = uri
  model_io.save_keras_model(model, model_io.serving_model_dir(uri))
  return artifact


def run_calibration(examples, out_uri: str, beam_args: Sequence[str]) -> int:
  """The calibration sampling transform alone, between a TFRecord read and a write."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from components import spec_keys  # pylint: disable=g-import-not-at-top
  from components.common import examples_io  # pylint: disable=g-import-not-at-top
  from components.ptq_converter import calibration  # pylint: disable=g-import-not-at-top
  pattern = examples_io.split_file_pattern(examples, SPLIT, spec_keys.CALIBRATION_SPLIT_KEY)
  with beam.Pipeline(argv=list(beam_args)) as pipeline:
    _ = (pipeline
         | 'Read' >> beam.io.ReadFromTFRecord(pattern)
         | 'Sample' >> calibration.SampleExamples(CALIBRATION_SAMPLES, label_key=data.LABEL_KEY)
         | 'Write' >> beam.io.WriteToTFRecord(f'{out_uri}/sample', num_shards=1))
  return len(examples_io.read_records(f'{out_uri}/sample*'))


def run_ptq(examples, model, out_uri: str, beam_args: Sequence[str], mode: str = 'int8'):
  """One PTQConverter executor run; returns its tflite_model artifact."""
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from components import PTQConverter  # pylint: disable=g-import-not-at-top
  from components import spec_keys  # pylint: disable=g-import-not-at-top
  kwargs = {}
  if mode == 'int8':
    kwargs = dict(examples=channel(standard_artifacts.Examples), calibration_samples=(
        CALIBRATION_SAMPLES), calibration_split=SPLIT, label_key=data.LABEL_KEY)
  component = PTQConverter(model=channel(), mode=mode, **kwargs)
  tflite_model, calib = standard_artifacts.Model(), standard_artifacts.Examples()
  tflite_model.uri, calib.uri = f'{out_uri}/tflite_model', f'{out_uri}/calibration'
  inputs = {spec_keys.MODEL_KEY: [model]}
  if mode == 'int8':
    inputs[spec_keys.EXAMPLES_KEY] = [examples]
  executor = component.EXECUTOR_SPEC.executor_class(_context(beam_args, out_uri))
  executor.Do(inputs, {spec_keys.TFLITE_MODEL_KEY: [tflite_model],
                       spec_keys.CALIBRATION_KEY: [calib]}, dict(component.exec_properties))
  return tflite_model


def run_gate_examples_gen(examples, baseline, out_uri: str, beam_args: Sequence[str]):
  """GateExamplesGen as the pipeline runs it; returns (schema, gate examples) artifacts."""
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from components import GateExamplesGen  # pylint: disable=g-import-not-at-top
  from components import spec_keys  # pylint: disable=g-import-not-at-top
  component = GateExamplesGen(examples=channel(standard_artifacts.Examples), model=channel(),
                              label_key=data.LABEL_KEY, eval_split=SPLIT)
  schema, gate_examples = standard_artifacts.Schema(), standard_artifacts.Examples()
  schema.uri, gate_examples.uri = f'{out_uri}/schema', f'{out_uri}/gate_examples'
  component.EXECUTOR_SPEC.executor_class(_context(beam_args, out_uri)).Do(
      {spec_keys.EXAMPLES_KEY: [examples], spec_keys.MODEL_KEY: [baseline]},
      {spec_keys.SCHEMA_KEY: [schema], spec_keys.GATE_EXAMPLES_KEY: [gate_examples]},
      dict(component.exec_properties))
  return schema, gate_examples


def custom_extractors(eval_shared_model: Any, eval_config: Any, tensor_adapter_config: Any):
  """The gate before DevicePredictionDoFn, for the `evaluator_tfma` stage's module_path."""
  from components.common import device_extractors  # pylint: disable=g-import-not-at-top
  return device_extractors.reference_extractors(eval_shared_model, eval_config,
                                                tensor_adapter_config)


def run_evaluator(gate_examples, schema, candidate, baseline, out_uri: str,
                  beam_args: Sequence[str], module_path: str = GATE_STAGES['evaluator']):
  """The pipeline's Evaluator gate; returns (evaluation, blessing) artifacts.

  Args:
    module_path: the module whose custom_extractors the Evaluator uses (GATE_STAGES).
  """
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from tfx.components.evaluator import executor as evaluator_executor  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from components.gate import gate_config  # pylint: disable=g-import-not-at-top
  component = tfx.components.Evaluator(
      examples=channel(standard_artifacts.Examples), model=channel(),
      baseline_model=channel(), schema=channel(standard_artifacts.Schema),
      eval_config=gate_config(data.LABEL_KEY), module_path=module_path)
  evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
  evaluation.uri, blessing.uri = f'{out_uri}/evaluation', f'{out_uri}/blessing'
  evaluator_executor.Executor(_context(beam_args, out_uri)).Do(
      {'examples': [gate_examples], 'model': [candidate], 'baseline_model': [baseline],
       'schema': [schema]},
      {'evaluation': [evaluation], 'blessing': [blessing]}, dict(component.exec_properties))
  return evaluation, blessing


def channel(artifact_type=None):
  """An unconnected channel, enough to build a component whose executor is run directly."""
  from tfx import types  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  return types.Channel(type=artifact_type or standard_artifacts.Model)


def _context(beam_args: Sequence[str], out_uri: str):
  from tfx.dsl.components.base import base_beam_executor  # pylint: disable=g-import-not-at-top
  tmp_dir = f'{out_uri}/.temp/'
  tf.io.gfile.makedirs(tmp_dir)
  return base_beam_executor.BaseBeamExecutor.Context(
      beam_pipeline_args=list(beam_args), tmp_dir=tmp_dir, unique_id='data_scale')


# --- One measurement, in its own process -----------------------------------------------------


def _measure_stage(stage: str, work_dir: str, mode: str) -> Dict[str, Any]:
  """Runs one stage on the prepared data in work_dir; returns its wall time and result."""
  from tfx.types import artifact_utils  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top

  def load(kind, name):
    artifact = kind()
    artifact.uri = os.path.join(work_dir, name)
    return artifact

  examples = load(standard_artifacts.Examples, 'examples')
  examples.split_names = artifact_utils.encode_split_names([SPLIT])
  out = os.path.join(work_dir, f'{stage}_{mode}')
  tf.io.gfile.makedirs(out)
  beam_args = BEAM_MODES[mode]
  baseline = _prepared_model(work_dir, 'baseline')
  start, cpu_start = time.perf_counter(), time.process_time()
  result = {}
  if stage == 'calibration':
    result['sampled'] = run_calibration(examples, out, beam_args)
  elif stage == 'ptq_converter':
    model = run_ptq(examples, load(standard_artifacts.Model, 'trained'), out, beam_args)
    from components import spec_keys  # pylint: disable=g-import-not-at-top
    result['calibration_sha256'] = model.get_string_custom_property(
        spec_keys.PROP_CALIBRATION_SHA256)
  elif stage == 'gate_examples_gen':
    run_gate_examples_gen(examples, baseline, out, beam_args)
  elif stage in PREDICT_STAGES:
    return measure_predictions(work_dir, PREDICT_STAGES[stage])
  else:  # An Evaluator stage: on GateExamplesGen's output, prepared once per size.
    schema = load(standard_artifacts.Schema, 'prepared/schema')
    gate_examples = load(standard_artifacts.Examples, 'prepared/gate_examples')
    gate_examples.split_names = artifact_utils.encode_split_names([SPLIT])
    from components.common import evaluation  # pylint: disable=g-import-not-at-top
    output, blessing = run_evaluator(gate_examples, schema, _prepared_model(work_dir, 'candidate'),
                                     baseline, out, beam_args, GATE_STAGES[stage])
    result['accuracy'] = evaluation.metric_values(output.uri, 'sparse_categorical_accuracy')
    result['blessed'] = blessing.get_int_custom_property('blessed')
  result['seconds'] = time.perf_counter() - start
  # CPU time of this process: less disturbed than wall time by other work on a busy host; with
  # worker processes it leaves the workers out.
  result['cpu_seconds'] = time.process_time() - cpu_start
  return result


def measure_predictions(work_dir: str, do_fn_name: str) -> Dict[str, Any]:
  """Times one prediction DoFn on the prepared gate examples, candidate and baseline at once.

  The examples are parsed to one array first (not timed); `seconds` and `cpu_seconds` cover
  the DoFn's process() calls on batches of PREDICT_BATCH, as the Evaluator makes them.
  """
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  from tensorflow_model_analysis import constants  # pylint: disable=g-import-not-at-top
  from components.common import device_extractors  # pylint: disable=g-import-not-at-top
  from components.common import examples_io  # pylint: disable=g-import-not-at-top
  from components.gate import gate_config  # pylint: disable=g-import-not-at-top
  records = examples_io.read_records(os.path.join(work_dir, 'prepared', 'gate_examples',
                                                  f'Split-{SPLIT}', '*'))
  parsed = tf.io.parse_example(tf.constant(records), {
      data.PIXELS_KEY: tf.io.FixedLenFeature([data.NUM_PIXELS], tf.float32),
      data.LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64)})
  x, y = parsed[data.PIXELS_KEY].numpy(), parsed[data.LABEL_KEY].numpy()[:, 0]
  config = gate_config(data.LABEL_KEY)
  from tfx.utils import path_utils  # pylint: disable=g-import-not-at-top
  shared = {spec.name: tfma.default_eval_shared_model(
      eval_saved_model_path=path_utils.serving_model_path(
          os.path.join(work_dir, 'prepared', spec.name)),
      model_name=spec.name, eval_config=config) for spec in config.model_specs}
  do_fn = getattr(device_extractors, do_fn_name)(eval_config=config, eval_shared_models=shared)
  do_fn.setup()
  correct = dict.fromkeys(shared, 0)
  start, cpu_start = time.perf_counter(), time.process_time()
  for i in range(0, len(x), PREDICT_BATCH):
    [out] = do_fn.process({constants.FEATURES_KEY: {data.PIXELS_KEY: x[i:i + PREDICT_BATCH]}})
    for name, scores in out[constants.PREDICTIONS_KEY].items():
      correct[name] += int(np.sum(np.argmax(scores, axis=1) == y[i:i + PREDICT_BATCH]))
  return {'seconds': time.perf_counter() - start, 'cpu_seconds': time.process_time() - cpu_start,
          'accuracy': {name: n / len(x) for name, n in correct.items()}}


def _prepared_model(work_dir: str, name: str):
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from components import spec_keys  # pylint: disable=g-import-not-at-top
  model = standard_artifacts.Model()
  model.uri = os.path.join(work_dir, 'prepared', name)
  with open(os.path.join(work_dir, 'prepared', f'{name}.json')) as f:
    props = json.load(f)
  for key in (spec_keys.PROP_MODE, spec_keys.PROP_INPUT_DTYPES, spec_keys.PROP_OUTPUT_DTYPES):
    model.set_string_custom_property(key, props[key])
  return model


def _prepare(work_dir: str, size: int) -> None:
  """Writes the examples, trains the model and makes the gate's inputs once per size."""
  from components import spec_keys  # pylint: disable=g-import-not-at-top
  examples = write_examples(os.path.join(work_dir, 'examples'), {SPLIT: scaled_digits(size)},
                            shards=4)
  trained = trained_model_artifact(os.path.join(work_dir, 'trained'))
  prepared = os.path.join(work_dir, 'prepared')
  setup = BEAM_MODES['in_process']
  for name, mode in (('baseline', 'float32'), ('candidate', 'int8')):
    model = run_ptq(examples, trained, os.path.join(prepared, f'{name}_run'), setup, mode)
    tf.io.gfile.rename(model.uri, os.path.join(prepared, name))
    props = {k: model.get_string_custom_property(k) for k in (
        spec_keys.PROP_MODE, spec_keys.PROP_INPUT_DTYPES, spec_keys.PROP_OUTPUT_DTYPES)}
    with open(os.path.join(prepared, f'{name}.json'), 'w') as f:
      json.dump(props, f)
  schema, gate_examples = run_gate_examples_gen(examples, _prepared_model(work_dir, 'baseline'),
                                                os.path.join(prepared, 'gen_run'), setup)
  tf.io.gfile.rename(schema.uri, os.path.join(prepared, 'schema'))
  tf.io.gfile.rename(gate_examples.uri, os.path.join(prepared, 'gate_examples'))


def _tree_rss(proc) -> int:
  import psutil  # pylint: disable=g-import-not-at-top
  try:
    procs = [proc] + proc.children(recursive=True)
  except psutil.Error:
    return 0
  total = 0
  for p in procs:
    try:
      total += p.memory_info().rss
    except psutil.Error:
      pass
  return total


def _run_child(args: List[str]) -> Dict[str, Any]:
  """Runs this module with args in a new process; returns its JSON line and peak tree RSS."""
  import psutil  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='2',
             PYTHONPATH=REPO_ROOT)
  popen = subprocess.Popen([sys.executable, '-m', 'benchmarks.data_scale', *args], cwd=REPO_ROOT,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  peak, done = [0], threading.Event()
  proc = psutil.Process(popen.pid)

  def sample():
    while not done.is_set():
      peak[0] = max(peak[0], _tree_rss(proc))
      done.wait(0.1)

  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  stdout, stderr = popen.communicate()
  done.set()
  sampler.join()
  if popen.returncode != 0:
    raise RuntimeError(f'{args} failed:\n{stderr[-4000:]}')
  result = json.loads(stdout.strip().splitlines()[-1])
  result['peak_rss_mb'] = peak[0] / 2**20
  return result


# --- The suite and its report ----------------------------------------------------------------


def run_suite(sizes: Sequence[int], modes: Sequence[str], work_root: str,
              stages: Sequence[str] = STAGES) -> Dict[str, Any]:
  from components.benchmarker import measure  # pylint: disable=g-import-not-at-top
  started = time.time()
  results = {'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
             'host': measure.host_info(), 'calibration_samples': CALIBRATION_SAMPLES,
             'beam_modes': {m: BEAM_MODES[m] for m in modes}, 'runs': []}
  for size in sizes:
    work_dir = os.path.join(work_root, f'n{size}')
    t = time.perf_counter()
    if not os.path.exists(os.path.join(work_dir, 'prepared', 'candidate.json')):
      _run_child(['--_prepare', work_dir, '--_size', str(size)])  # Else a --work-dir's, reused.
    examples_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in
                         os.walk(os.path.join(work_dir, 'examples')) for f in fs)
    print(f'n={size:,}: data and models ready in {time.perf_counter() - t:.0f} s '
          f'({examples_bytes / 2**20:.1f} MB gzip)', flush=True)
    for stage in [s for s in STAGES if s in stages]:
      for mode in modes:
        if stage in PREDICT_STAGES and mode != 'in_process':
          continue  # No Beam: one setting is enough.
        run = _run_child(['--_stage', stage, '--_mode', mode, '--_work', work_dir])
        run.update(size=size, stage=stage, mode=mode, examples_gzip_bytes=examples_bytes,
                   started=results['started'])
        run['us_per_example'] = run['seconds'] / size * 1e6
        results['runs'].append(run)
        print(f'  {stage:18s} {mode:14s} {run["seconds"]:8.1f} s  '
              f'{run["us_per_example"]:8.1f} us/example  peak RSS {run["peak_rss_mb"]:7.0f} MB',
              flush=True)
  results['duration_s'] = time.time() - started
  results['goals'] = goals(results)
  return results


def merge(old: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Any]:
  """new, plus the runs of old that new did not measure again (same step, Beam setting, size).

  A data_scale.json from before `evaluator_tfma` existed measured TFMA's extractor under the
  name `evaluator`: those runs are read as `evaluator_tfma`.
  """
  runs = []
  for run in old['runs']:
    run = dict(run, started=run.get('started', old['started']))
    if 'evaluator_tfma' not in {r['stage'] for r in old['runs']} and run['stage'] == 'evaluator':
      run['stage'] = 'evaluator_tfma'
    runs.append(run)
  new_runs = [dict(r, started=r.get('started', new['started'])) for r in new['runs']]
  measured = {(r['stage'], r['mode'], r['size']) for r in new_runs}
  kept = [r for r in runs if (r['stage'], r['mode'], r['size']) not in measured]
  merged = dict(new, runs=kept + new_runs,
                beam_modes=dict(old['beam_modes'], **new['beam_modes']),
                duration_s=old['duration_s'] + new['duration_s'])
  merged['started'] = ' and '.join(sorted({r['started'] for r in merged['runs']}))
  merged['goals'] = goals(merged)
  return merged


def _by(results, stage, mode):
  return sorted((r for r in results['runs'] if r['stage'] == stage and r['mode'] == mode),
                key=lambda r: r['size'])


def goals(results: Dict[str, Any]) -> List[Dict[str, Any]]:
  """Linear time (per-example ratio of the two largest sizes) and flat memory, per step."""
  out = []
  for stage in STAGES:
    for mode in results['beam_modes']:
      runs = _by(results, stage, mode)
      if len(runs) < 2:
        continue
      prev, last = runs[-2], runs[-1]
      ratio = last['us_per_example'] / prev['us_per_example']
      memory = last['peak_rss_mb'] / runs[0]['peak_rss_mb']
      out.append({'stage': stage, 'mode': mode, 'sizes': [prev['size'], last['size']],
                  'time_ratio': ratio, 'time_ok': ratio <= LINEAR_GOAL,
                  'memory_ratio': memory, 'memory_ok': memory <= FLAT_MEMORY_GOAL})
  return out


def extrapolations(results: Dict[str, Any]) -> List[Dict[str, Any]]:
  """Per step and Beam setting: the slope between the two largest sizes and its projections."""
  out = []
  for stage in STAGES:
    for mode in results['beam_modes']:
      runs = _by(results, stage, mode)
      if len(runs) < 2:
        continue
      prev, last = runs[-2], runs[-1]
      slope = max(0.0, (last['seconds'] - prev['seconds']) / (last['size'] - prev['size']))
      out.append({'stage': stage, 'mode': mode, 'marginal_us': slope * 1e6,
                  'fixed_s': last['seconds'] - slope * last['size'],
                  'at_1m_s': last['seconds'] + slope * (10**6 - last['size']),
                  'at_10m_s': last['seconds'] + slope * (10**7 - last['size'])})
  return out


def _duration(seconds: float) -> str:
  return f'{seconds / 60:.1f} min' if seconds >= 120 else f'{seconds:.0f} s'


def report(results: Dict[str, Any]) -> str:
  host = results['host']
  modes = list(results['beam_modes'])
  sizes = sorted({r['size'] for r in results['runs']})
  lines = [
      '# Data scale: calibration, PTQConverter and the gate against the number of examples',
      '',
      f'Generated by `python -m benchmarks.data_scale` on {results["started"]}, in '
      f'{results["duration_s"] / 60:.1f} min. See [docs/scaling.md](../../docs/scaling.md).',
      '',
      f'- Host: {host["cpu_model"]}, {host["cpu_count"]} cores, {host["machine"]}, '
      f'{host["system"]}, Python {host["python"]}; CPU flags of interest: '
      f'{", ".join(host["cpu_flags"]) or "none"}.',
      f'- Data: digits shifted by up to one pixel with noise, 64 floats + label per example; '
      f'calibration samples {results["calibration_samples"]} (stratified by label).',
      '- Beam: ' + '; '.join(f'{m}: `{" ".join(a)}`' for m, a in results['beam_modes'].items()),
      '- Time: the step alone (process start, imports and model training excluded). Peak RSS: '
      'the whole process tree (Beam workers included), sampled every 0.1 s.',
      *(f'- Note: {note}' for note in results.get('notes', [])),
      '',
      '| step | examples | ' + ' | '.join(f'{m} s | {m} us/example | {m} peak RSS MB'
                                          for m in modes) + ' |',
      '|---|---:|' + '---:|---:|---:|' * len(modes),
  ]
  for stage in STAGES:
    for size in sizes:
      row = [stage, f'{size:,}']
      for mode in modes:
        [run] = [r for r in results['runs'] if (r['stage'], r['mode'], r['size']) == (
            stage, mode, size)] or [None]
        row += ([f'{run["seconds"]:.1f}', f'{run["us_per_example"]:.1f}',
                 f'{run["peak_rss_mb"]:.0f}'] if run else ['-'] * 3)
      lines.append('| ' + ' | '.join(row) + ' |')
  lines += ['', '## Goals', '',
            f'Time per example at the largest size within {LINEAR_GOAL}x of the size before it; '
            f'peak RSS at the largest size within {FLAT_MEMORY_GOAL}x of the smallest. While a '
            'step\'s fixed part dominates, time per example falls with the size and the time goal '
            'is met trivially; the marginal cost below is the figure that carries to larger '
            'data.', '',
            '| step | Beam | sizes | time/example ratio | linear | peak RSS ratio | flat |',
            '|---|---|---|---:|---|---:|---|']
  for g in results['goals']:
    lines.append(f'| {g["stage"]} | {g["mode"]} | {g["sizes"][0]:,} -> {g["sizes"][1]:,} | '
                 f'{g["time_ratio"]:.2f}x | {"met" if g["time_ok"] else "MISSED"} | '
                 f'{g["memory_ratio"]:.2f}x | {"met" if g["memory_ok"] else "MISSED"} |')
  lines += ['', '## Marginal cost and extrapolation', '',
            'At these sizes a step\'s time is a fixed part (process start of the Beam workers, '
            'pipeline construction, conversion) plus a part per example. The marginal cost is '
            'the slope between the two largest sizes; the time at 10M examples is '
            '**extrapolated** from it (time at the largest size + slope x the extra examples), '
            'not measured.', '',
            '| step | Beam | marginal us/example | fixed s | 10M examples (extrapolated) |',
            '|---|---|---:|---:|---:|']
  for e in extrapolations(results):
    lines.append(f'| {e["stage"]} | {e["mode"]} | {e["marginal_us"]:.1f} | {e["fixed_s"]:.1f} | '
                 f'{_duration(e["at_10m_s"])} |')
  lines += ['', '## The gate: TFMA\'s TFLite extractor against the device extractor', '',
            '`evaluator_tfma`: TFMA 0.47\'s TFLite predict extractor (builtin kernels, '
            'each batch assembled one example at a time, the interpreter re-allocated per '
            'batch; int8 inputs rounded as on a device), the gate before. `evaluator`: the '
            'pipeline\'s extractors now (DevicePredictionDoFn: XNNPACK, one reshape per batch, '
            're-allocated only when the batch size changes). Same EvalConfig, data and models; '
            'both measured in the same run.', '',
            '`predict_tfma` / `predict_device`: the prediction DoFn alone (both models, '
            f'batches of {PREDICT_BATCH}, no Beam), accuracy from the argmax.', '',
            '| step | Beam | examples | TFMA extractor s | device extractor s | speed-up | '
            'CPU s of the launching process, TFMA / device | accuracy (candidate, baseline), '
            'TFMA / device |',
            '|---|---|---:|---:|---:|---:|---:|---|']
  for row in gate_comparison(results):
    cpu = (f'{row["tfma_cpu_s"]:.2f} / {row["fast_cpu_s"]:.2f}' if row['fast_cpu_s'] is not None
           and row['tfma_cpu_s'] is not None else '-')
    lines.append(f'| {row["step"]} | {row["mode"]} | {row["size"]:,} | {row["tfma_s"]:.2f} | '
                 f'{row["fast_s"]:.2f} | {row["speedup"]:.2f}x | {cpu} | '
                 f'{_accuracies(row["tfma_accuracy"])} / {_accuracies(row["fast_accuracy"])} |')
  lines += ['', '## Share of the gate', '']
  for mode in modes:
    for size in sizes:
      spent = {r['stage']: r['seconds'] for r in results['runs']
               if r['mode'] == mode and r['size'] == size}
      before = spent.get('ptq_converter', 0) + spent.get('gate_examples_gen', 0)
      shares = [f'{spent[s] / (before + spent[s]):.0%} with {label} ({before + spent[s]:.0f} s)'
                for s, label in (('evaluator_tfma', 'TFMA\'s extractor'),
                                 ('evaluator', 'the device extractor')) if s in spent]
      if before and shares:
        lines.append(f'- {mode}, {size:,} examples: the Evaluator takes '
                     f'{" and ".join(shares)} of PTQConverter + GateExamplesGen + Evaluator.')
  return '\n'.join(lines) + '\n'


def gate_comparison(results: Dict[str, Any]) -> List[Dict[str, Any]]:
  """Per Beam setting and size measured with both Evaluator stages: times and speed-up."""
  out = []
  for (old_stage, new_stage), mode in [(s, m) for s in (('evaluator_tfma', 'evaluator'),
                                                        ('predict_tfma', 'predict_device'))
                                       for m in results['beam_modes']]:
    tfma_runs = {r['size']: r for r in _by(results, old_stage, mode)}
    for fast in _by(results, new_stage, mode):
      old = tfma_runs.get(fast['size'])
      if old is None:
        continue
      out.append({'step': new_stage, 'mode': mode, 'size': fast['size'],
                  'tfma_s': old['seconds'],
                  'fast_s': fast['seconds'], 'speedup': old['seconds'] / fast['seconds'],
                  'tfma_cpu_s': old.get('cpu_seconds'), 'fast_cpu_s': fast.get('cpu_seconds'),
                  'tfma_accuracy': old.get('accuracy'), 'fast_accuracy': fast.get('accuracy')})
  return out


def _accuracies(accuracy) -> str:
  if not accuracy:
    return '-'
  return ', '.join(f'{accuracy[k]:.4f}' for k in ('candidate', 'baseline') if k in accuracy)


def plot(results: Dict[str, Any], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.5))
  for i, stage in enumerate(STAGES):  # A colour per step, a line style per Beam setting.
    for mode, style in zip(results['beam_modes'], ('-o', '--s')):
      runs = _by(results, stage, mode)
      if not runs:
        continue
      x = [r['size'] for r in runs]
      ax_time.plot(x, [r['us_per_example'] for r in runs], style, color=f'C{i}',
                   label=f'{stage} ({mode})')
      ax_mem.plot(x, [r['peak_rss_mb'] for r in runs], style, color=f'C{i}',
                  label=f'{stage} ({mode})')
  for ax, label in ((ax_time, 'time per example (us)'), (ax_mem, 'peak RSS of the tree (MB)')):
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('examples')
    ax.set_ylabel(label)
    ax.grid(True, which='both', alpha=0.3)
  ax_mem.legend(fontsize=7)
  fig.suptitle(f'Beam steps vs data size on {results["host"]["cpu_model"]} '
               f'({results["host"]["cpu_count"]} cores)')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--sizes', type=int, nargs='+', default=[10000, 100000])
  parser.add_argument('--modes', nargs='+', choices=list(BEAM_MODES), default=list(BEAM_MODES))
  parser.add_argument('--output-dir', default=os.path.join(REPO_ROOT, 'benchmarks', 'results'))
  parser.add_argument('--report-only', action='store_true',
                      help='rewrite data_scale.md and .png from the data_scale.json in '
                      '--output-dir, measuring nothing.')
  parser.add_argument('--stages', nargs='+', choices=STAGES, default=list(STAGES),
                      help='the steps to measure (default: all).')
  parser.add_argument('--merge', action='store_true',
                      help='keep the runs of the existing data_scale.json in --output-dir that '
                      'this run does not measure again.')
  parser.add_argument('--work-dir', default=None,
                      help='where the generated data goes (default: a temporary directory); '
                      'data and models already prepared there are reused.')
  # Internal: one step in a child process.
  parser.add_argument('--_prepare', help=argparse.SUPPRESS)
  parser.add_argument('--_size', type=int, help=argparse.SUPPRESS)
  parser.add_argument('--_stage', choices=STAGES, help=argparse.SUPPRESS)
  parser.add_argument('--_mode', help=argparse.SUPPRESS)
  parser.add_argument('--_work', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args._prepare:  # pylint: disable=protected-access
    _prepare(args._prepare, args._size)  # pylint: disable=protected-access
    print(json.dumps({'prepared': True}))
    return 0
  if args._stage:  # pylint: disable=protected-access
    print(json.dumps(_measure_stage(args._stage, args._work, args._mode)))  # pylint: disable=protected-access
    return 0
  import tempfile  # pylint: disable=g-import-not-at-top
  json_path = os.path.join(args.output_dir, 'data_scale.json')
  if args.report_only:
    with open(json_path) as f:
      results = json.load(f)
  else:
    work_root = args.work_dir or tempfile.mkdtemp(prefix='data-scale-')
    results = run_suite(args.sizes, args.modes, work_root, args.stages)
    if args.merge and os.path.exists(json_path):
      with open(json_path) as f:
        results = merge(json.load(f), results)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(json_path, 'w') as f:
      json.dump(results, f, indent=1)
  text = report(results)
  with open(os.path.join(args.output_dir, 'data_scale.md'), 'w') as f:
    f.write(text)
  plot(results, os.path.join(args.output_dir, 'data_scale.png'))
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
