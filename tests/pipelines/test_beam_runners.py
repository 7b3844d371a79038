"""The pipeline's Beam steps on runners whose workers are other processes.

The local pipeline with the DirectRunner in multi-processing mode must reach the same decisions
as in-process (sampling is deterministic by hash, so the calibration sample is identical), and
the calibration transform must give the same sample on Dask's distributed scheduler.
"""
import logging
import os

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
import pytest
import tensorflow as tf

from benchmarks import data_scale
from components import spec_keys
from components.common import examples_io
from components.ptq_converter import calibration
from pipelines import data
from pipelines import pipeline as pipeline_lib
from pipelines import summary
from tests.pipelines.test_e2e import PIPELINE
from tests.pipelines.test_e2e import run_pipeline

QUICK = ['--variants', 'ptq', '--bench-threads', '1', '--bench-min-duration', '0.1']
MULTI_PROCESS = ['--beam-arg=--direct_running_mode=multi_processing',
                 '--beam-arg=--direct_num_workers=2']


def _outcome(output_dir):
  """What a run decided: blessing, selection, push, and the fingerprints of what it made."""
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = pipeline_lib.demo_paths(str(output_dir))['metadata_path']
  store = metadata_store.MetadataStore(config)
  model = summary.latest_artifacts(store, PIPELINE, pipeline_lib.int8_node(pipeline_lib.PTQ))[
      spec_keys.TFLITE_MODEL_KEY]
  props = {k: v.string_value or v.int_value for k, v in model.custom_properties.items()}
  [row] = [r for r in summary.summarize(str(config.sqlite.filename_uri), PIPELINE)
           if r.variant == pipeline_lib.PTQ]
  return {
      'blessed': row.blessed,
      'pushed_to': row.pushed_to,
      'push': summary.push_outcome(config.sqlite.filename_uri, PIPELINE),
      'calibration': (props[spec_keys.PROP_CALIBRATION_COUNT],
                      props[spec_keys.PROP_CALIBRATION_SHA256]),
      'model_sha256': props[spec_keys.PROP_MODEL_SHA256],
  }


@pytest.mark.e2e
def test_multi_process_direct_runner_decides_as_the_in_process_one(tmp_path):
  in_process = _outcome(_run(tmp_path / 'in_process'))
  multi_process = _outcome(_run(tmp_path / 'multi_process', *MULTI_PROCESS))

  assert in_process['blessed'] == 'BLESSED', in_process
  assert in_process['push'].startswith('pushed '), in_process
  count, digest = in_process['calibration']
  assert count > 0 and len(digest) == 64, in_process
  # Same sample, same decisions.
  assert multi_process.pop('model_sha256') and in_process.pop('model_sha256')
  assert multi_process == in_process


def _run(output_dir, *args):
  run_pipeline(output_dir, *QUICK, *args)
  assert os.path.exists(pipeline_lib.demo_paths(str(output_dir))['metadata_path'])
  return output_dir


def _in_other_feature_order(record):
  """The same tf.Example as other bytes: its features serialized in the reverse order.

  Two serialized messages concatenated parse as their merge, so the per-feature messages joined
  in reverse give the example another process could have written (map order is per process).
  """
  example = tf.train.Example.FromString(record)
  parts = []
  for name in reversed(sorted(example.features.feature)):
    one = tf.train.Example()
    one.features.feature[name].CopyFrom(example.features.feature[name])
    parts.append(one.SerializeToString())
  return b''.join(parts)


def _sample(records, out_dir, label_key=data.LABEL_KEY, n=100, beam_args=()):
  """The calibration transform's sample of records, written and read back as files."""
  with beam.Pipeline(options=PipelineOptions(list(beam_args))) as pipeline:
    _ = (pipeline
         | beam.Create(records)
         | calibration.SampleExamples(n, label_key=label_key)
         | beam.io.WriteToTFRecord(os.path.join(str(out_dir), 'sample'), num_shards=1))
  return examples_io.read_records(os.path.join(str(out_dir), 'sample*'))


def test_the_sample_and_fingerprint_follow_the_examples_not_their_stored_bytes(digits_records,
                                                                              tmp_path):
  reordered = [_in_other_feature_order(r) for r in digits_records]
  assert sum(a != b for a, b in zip(digits_records, reordered)) > 1000  # Really other bytes.

  for label_key in (data.LABEL_KEY, None):
    first = calibration.fingerprint(_sample(digits_records, tmp_path / f'a{label_key}', label_key))
    again = calibration.fingerprint(_sample(reordered, tmp_path / f'b{label_key}', label_key))
    assert first == again and first[0] == 100


# --- Beam's DaskRunner on a dask.distributed cluster of separate worker processes -------------


@pytest.fixture(scope='module')
def dask_args():
  distributed = pytest.importorskip('distributed')
  # Registers DaskOptions: without the import, Beam drops --dask_client_address as unknown and
  # the runner starts a cluster of its own.
  from apache_beam.runners.dask import dask_runner  # noqa: F401  pylint: disable=unused-import
  with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                dashboard_address=None) as cluster:
    yield ['--runner=apache_beam.runners.dask.dask_runner.DaskRunner',
           f'--dask_client_address={cluster.scheduler_address}']
    # The runner's clients outlive their pipelines and log reconnection attempts at shutdown.
    logging.getLogger('distributed').setLevel(logging.CRITICAL)


@pytest.fixture(scope='module')
def digits_case(tmp_path_factory, digits_records):
  root = tmp_path_factory.mktemp('dask')
  examples = data_scale.write_examples(str(root / 'examples'), {'eval': digits_records}, shards=2)
  return root, examples, data_scale.trained_model_artifact(str(root / 'trained'))


@pytest.mark.e2e
def test_dask_runner_samples_the_files_as_the_direct_runner(digits_case, dask_args, tmp_path):
  root, examples, _ = digits_case
  pattern = str(root / 'examples' / 'Split-eval' / '*')

  def sample(out, beam_args):
    with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
      _ = (pipeline
           | beam.Create([pattern])
           | beam.io.ReadAllFromTFRecord()
           | calibration.SampleExamples(100, label_key=data.LABEL_KEY)
           | beam.io.WriteToTFRecord(str(out / 'sample'), num_shards=1))
    return calibration.fingerprint(examples_io.read_records(str(out / 'sample-*')))

  on_dask = sample(tmp_path / 'dask', dask_args)

  assert on_dask[0] == 100
  assert on_dask == sample(tmp_path / 'direct', data_scale.BEAM_MODES['in_process'])


@pytest.mark.e2e
def test_dask_runner_runs_the_ptq_converter_with_the_same_sample_and_model(digits_case, dask_args,
                                                                            tmp_path):
  _, examples, trained = digits_case

  on_dask = data_scale.run_ptq(examples, trained, str(tmp_path / 'dask'), dask_args)
  direct = data_scale.run_ptq(examples, trained, str(tmp_path / 'direct'),
                              data_scale.BEAM_MODES['in_process'])

  for prop in (spec_keys.PROP_CALIBRATION_SHA256, spec_keys.PROP_MODEL_SHA256):
    assert on_dask.get_string_custom_property(prop) == direct.get_string_custom_property(prop)
  assert on_dask.get_int_custom_property(spec_keys.PROP_CALIBRATION_COUNT) == 300
  # Only the shard is left in the calibration split, which input_fn reads whole.
  assert [os.path.basename(p) for p in tf.io.gfile.glob(
      str(tmp_path / 'dask' / 'calibration' / 'Split-calibration' / '*'))] == [
          'data_tfrecord-00000-of-00001.gz']


@pytest.mark.e2e
def test_dask_runner_cannot_run_steps_that_read_with_beams_sources(digits_case, dask_args,
                                                                   tmp_path):
  # A tripwire: when Beam's DaskRunner translates Impulse (the root of ReadFromTFRecord and of
  # TFMA's TFXIO reads), GateExamplesGen and the Evaluator may run on it; update docs/scaling.md.
  _, examples, trained = digits_case
  baseline = data_scale.run_ptq(examples, trained, str(tmp_path / 'float32'),
                                data_scale.BEAM_MODES['in_process'], mode='float32')

  with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'map'"):
    data_scale.run_gate_examples_gen(examples, baseline, str(tmp_path / 'gen'), dask_args)
