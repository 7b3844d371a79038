"""The PTQ, gate and benchmark steps with every artifact on a filesystem other than the disk.

`ram://` is TensorFlow's in-memory filesystem: tf.io.gfile reads and writes it, Python's open()
and os.path do not, so any step that assumed a local path would fail here. Beam has no `ram://`
filesystem of its own (it ships local, gs://, s3://, hdfs:// and Azure), so this test registers
a small Beam FileSystem that delegates to tf.io.gfile, as Beam's own remote filesystems
delegate to their client libraries. On gs:// or s3:// nothing needs registering.
"""
import os

from apache_beam.io import filesystem as beam_fs
from apache_beam.io.filesystem import CompressedFile
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystem import FileMetadata
import pytest
import tensorflow as tf

from benchmarks import data_scale
from components import DeviceBenchmarker
from components import spec_keys
from components.benchmarker import budgets
from components.common import evaluation
from components.ptq_converter import conversion
from tests.helpers import channel
from tests.helpers import small_model
from tests.helpers import tflite_model_artifact


class GfileRamFileSystem(beam_fs.FileSystem):
  """Beam FileSystem for ram:// paths, through tf.io.gfile (registered by being defined)."""

  @classmethod
  def scheme(cls):
    return 'ram'

  def join(self, basepath, *paths):
    return '/'.join([basepath.rstrip('/'), *(p.strip('/') for p in paths)])

  def split(self, path):
    head, _, tail = path.rstrip('/').rpartition('/')
    return head, tail

  def mkdirs(self, path):
    tf.io.gfile.makedirs(path)

  def has_dirs(self):
    return True

  def _list(self, dir_or_prefix):
    if not tf.io.gfile.exists(dir_or_prefix):
      return
    for root, _, files in tf.io.gfile.walk(dir_or_prefix):
      for name in files:
        path = self.join(root, name)
        yield FileMetadata(path, tf.io.gfile.stat(path).length)

  def _open(self, path, mode, compression_type):
    compression_type = beam_fs.FileSystem._get_compression_type(path, compression_type)
    raw = tf.io.gfile.GFile(path, mode) if mode == 'rb' else _Writer(path)
    if compression_type == CompressionTypes.UNCOMPRESSED:
      return raw
    return CompressedFile(raw, compression_type=compression_type)

  def create(self, path, mime_type='application/octet-stream',
             compression_type=CompressionTypes.AUTO):
    tf.io.gfile.makedirs(self.split(path)[0])
    return self._open(path, 'wb', compression_type)

  def open(self, path, mime_type='application/octet-stream',
           compression_type=CompressionTypes.AUTO):
    return self._open(path, 'rb', compression_type)

  def copy(self, source_file_names, destination_file_names):
    for src, dst in zip(source_file_names, destination_file_names):
      tf.io.gfile.copy(src, dst, overwrite=True)

  def rename(self, source_file_names, destination_file_names):
    for src, dst in zip(source_file_names, destination_file_names):
      tf.io.gfile.rename(src, dst, overwrite=True)

  def exists(self, path):
    return tf.io.gfile.exists(path)

  def size(self, path):
    return tf.io.gfile.stat(path).length

  def last_updated(self, path):
    return tf.io.gfile.stat(path).mtime_nsec / 1e9

  def checksum(self, path):
    return str(self.size(path))

  def metadata(self, path):
    return FileMetadata(path, self.size(path), self.last_updated(path))

  def delete(self, paths):
    for path in paths:
      if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
      elif tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)

  def report_lineage(self, path, lineage):
    del path, lineage  # Nothing to report for a test filesystem.


class _Writer:
  """A write-only gfile that knows its position: ram:// files cannot tell() while writing."""

  def __init__(self, path):
    self._file, self._position = tf.io.gfile.GFile(path, 'wb'), 0
    self.closed, self.mode = False, 'wb'

  def write(self, data):
    self._file.write(data)
    self._position += len(data)

  def tell(self):
    return self._position

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()
    self.closed = True

  def writable(self):
    return True

  def seekable(self):
    return False

  def __enter__(self):
    return self

  def __exit__(self, *args):
    self.close()


IN_PROCESS = data_scale.BEAM_MODES['in_process']  # ram:// lives in this process only.


@pytest.fixture(scope='module')
def ram_root():
  root = 'ram://tfx_edge_nonlocal'
  yield root
  tf.io.gfile.rmtree(root)


@pytest.mark.e2e
def test_ptq_gate_and_benchmark_run_with_every_artifact_on_ram(ram_root, digits_records):
  examples = data_scale.write_examples(f'{ram_root}/examples', {'eval': digits_records})
  trained = data_scale.trained_model_artifact(f'{ram_root}/trained')

  baseline = data_scale.run_ptq(examples, trained, f'{ram_root}/float32', IN_PROCESS,
                                mode='float32')
  candidate = data_scale.run_ptq(examples, trained, f'{ram_root}/int8', IN_PROCESS)
  schema, gate_examples = data_scale.run_gate_examples_gen(examples, baseline, f'{ram_root}/gen',
                                                           IN_PROCESS)
  output, blessing = data_scale.run_evaluator(gate_examples, schema, candidate, baseline,
                                              f'{ram_root}/evaluator', IN_PROCESS)

  # Everything was written where the artifacts point, and nothing under the working directory.
  assert candidate.uri.startswith('ram://')
  assert tf.io.gfile.glob(f'{ram_root}/int8/calibration/Split-calibration/*.gz')
  assert candidate.get_int_custom_property(spec_keys.PROP_CALIBRATION_COUNT) == (
      data_scale.CALIBRATION_SAMPLES)
  assert schema.get_int_custom_property(spec_keys.PROP_EVAL_EXAMPLES) == len(digits_records)
  accuracy = evaluation.metric_values(output.uri, 'sparse_categorical_accuracy')
  assert accuracy[evaluation.CANDIDATE] > 0.9
  assert abs(accuracy[evaluation.CANDIDATE] - accuracy[evaluation.BASELINE]) < 0.02
  assert blessing.get_int_custom_property('blessed') == 1
  assert not os.path.exists('ram:')

  # The benchmarker reads the model from ram:// and writes its report there, with its own
  # tmp_dir on ram:// as TFX would put it under the pipeline root.
  bench = _benchmark(candidate, f'{ram_root}/benchmark', tmp_dir=f'{ram_root}/.temp/bench/')
  assert bench.get_float_custom_property(spec_keys.PROP_P50_MS) > 0
  assert tf.io.gfile.listdir(bench.uri)


def test_the_benchmarker_measures_with_its_tmp_dir_on_a_non_local_filesystem(ram_root):
  # TFX puts the executor's tmp_dir under the pipeline root; the interpreter process still
  # needs a local file, so the benchmarker keeps its scratch copy in a local temp directory.
  model = tflite_model_artifact(f'{ram_root}/remote_tmp/model', conversion.convert(
      small_model(), 'float32'), mode='float32')
  bench = _benchmark(model, f'{ram_root}/remote_tmp/benchmark',
                     tmp_dir=f'{ram_root}/remote_tmp/.temp/')
  assert bench.get_float_custom_property(spec_keys.PROP_P50_MS) > 0
  assert tf.io.gfile.exists(f'{ram_root}/remote_tmp/benchmark/{spec_keys.BENCHMARK_JSON_FILE_NAME}')
  assert not tf.io.gfile.glob(f'{ram_root}/remote_tmp/.temp/*')


def _benchmark(model, uri, tmp_dir):
  from tfx.dsl.components.base import base_executor  # pylint: disable=g-import-not-at-top
  component = DeviceBenchmarker(model=channel(), settings=budgets.MeasureSettings(
      min_runs=5, min_duration_s=0.05))
  output = component.outputs[spec_keys.BENCHMARK_KEY].type()
  output.uri = uri
  tf.io.gfile.makedirs(tmp_dir)
  component.EXECUTOR_SPEC.executor_class(base_executor.BaseExecutor.Context(
      tmp_dir=tmp_dir, unique_id='bench')).Do(
          {spec_keys.MODEL_KEY: [model]}, {spec_keys.BENCHMARK_KEY: [output]},
          dict(component.exec_properties))
  return output
