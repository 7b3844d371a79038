"""PTQConverter executor: parses the artifacts and delegates to calibration and conversion."""
import hashlib
import json
import os
from typing import Any, Dict, List, Optional

from absl import logging
import apache_beam as beam
import tensorflow as tf
from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components import spec_keys
from components.common import examples_io
from components.common import failures
from components.common import lineage
from components.common import model_io
from components.common import modes
from components.common import tasks
from components.common import tflite
from components.common import user_code
from components.errors import ConversionError
from components.errors import DataError
from components.ptq_converter import auto
from components.ptq_converter import calibration
from components.ptq_converter import conversion


# Batch size asked of the user's input_fn when it reads the calibration sample.
_INPUT_FN_BATCH = 32


class Executor(base_beam_executor.BaseBeamExecutor):
  """Samples calibration data with Beam, converts to TFLite, and records what it made."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    model_artifact = artifact_utils.get_single_instance(input_dict[spec_keys.MODEL_KEY])
    tflite_artifact = artifact_utils.get_single_instance(output_dict[spec_keys.TFLITE_MODEL_KEY])
    record = bool(exec_properties.get(spec_keys.RECORD_FAILURE_KEY))
    upstream = failures.failure_of(model_artifact)
    if upstream and not record:
      raise ConversionError(failures.input_failed_error('PTQConverter', model_artifact.uri,
                                                        upstream))
    if not upstream:
      try:
        self._convert(input_dict, output_dict, exec_properties)
        return
      except Exception as e:  # pylint: disable=broad-except
        if not record or not failures.recordable(e):
          raise
        # Only this variant fails; the run goes on with the others (components.common.failures).
        upstream = failures.describe('PTQConverter', e)
        logging.warning('PTQConverter: recorded as a failed variant, the run goes on: %s',
                        upstream)
    else:
      logging.warning('PTQConverter: %s is a failed variant (%s); passed on without work.',
                      model_artifact.uri, upstream)
    artifact_utils.get_single_instance(
        output_dict[spec_keys.CALIBRATION_KEY]).split_names = artifact_utils.encode_split_names([])
    lineage.carry_properties(model_artifact, tflite_artifact)
    tflite_artifact.set_string_custom_property(spec_keys.PROP_MODE,
                                               exec_properties[spec_keys.MODE_KEY])
    failures.mark_failed(tflite_artifact, upstream)

  def _convert(self, input_dict: Dict[str, List[types.Artifact]],
               output_dict: Dict[str, List[types.Artifact]],
               exec_properties: Dict[str, Any]) -> None:
    """Samples, converts, checks and writes: the work whose failure a variant may record."""
    mode = exec_properties[spec_keys.MODE_KEY]
    inference_io = exec_properties[spec_keys.INFERENCE_IO_KEY]
    model_artifact = artifact_utils.get_single_instance(input_dict[spec_keys.MODEL_KEY])
    tflite_artifact = artifact_utils.get_single_instance(output_dict[spec_keys.TFLITE_MODEL_KEY])
    calibration_artifact = artifact_utils.get_single_instance(
        output_dict[spec_keys.CALIBRATION_KEY])

    # A tf_keras model, or else (Keras 3, a tf.Module, a subclassed model) the SavedModel's
    # serving signature: PTQ needs no Keras.
    model = model_io.load_model_source(model_artifact.uri)
    if model.kind == model_io.SAVED_MODEL:
      logging.info('PTQConverter: %s: %s; converting from %s (the PTQ-only route).',
                   model_artifact.uri, model.not_keras, model.describe())
    representative_data = None
    count, digest = 0, ''
    calibration_artifact.split_names = artifact_utils.encode_split_names([])
    if mode in modes.CALIBRATED_MODES:
      examples = artifact_utils.get_single_instance(input_dict[spec_keys.EXAMPLES_KEY])
      records = self._sample(
          examples, exec_properties[spec_keys.CALIBRATION_SPLIT_KEY],
          exec_properties[spec_keys.CALIBRATION_SAMPLES_KEY],
          exec_properties.get(spec_keys.LABEL_KEY),
          exec_properties[spec_keys.SEED_KEY], calibration_artifact)
      label_key = exec_properties.get(spec_keys.LABEL_KEY)
      classes = model_io.num_classes(model)
      if label_key and classes:
        calibration.check_labels(
            records, label_key, classes, source=f'Examples artifact {examples.uri}, split '
            f'{exec_properties[spec_keys.CALIBRATION_SPLIT_KEY]!r}')
      count, digest = calibration.fingerprint(records)
      bound = user_code.bind_input_fn(exec_properties, [calibration_artifact],
                                      [spec_keys.CALIBRATION_SPLIT_NAME], required=False)
      if bound is None:  # No input_fn: parse the examples by model input name.
        arrays = calibration.to_input_arrays(records, model, source=examples.uri)
      else:
        logging.info('PTQConverter: reading the %d calibration examples through input_fn.', count)
        arrays = calibration.arrays_from_dataset(
            bound.dataset(spec_keys.CALIBRATION_SPLIT_NAME, _INPUT_FN_BATCH), model, count,
            source=f'the calibration sample of {examples.uri} read by input_fn')
      representative_data = calibration.representative_dataset(arrays)
    for artifact in (calibration_artifact, tflite_artifact):
      artifact.set_int_custom_property(spec_keys.PROP_CALIBRATION_COUNT, count)
      artifact.set_string_custom_property(spec_keys.PROP_CALIBRATION_SHA256, digest)

    logging.info('PTQConverter: converting to TFLite, mode=%s inference_io=%s.', mode,
                 inference_io)
    if mode == modes.INT8_AUTO:
      tflite_model = self._convert_auto(model, representative_data, input_dict, exec_properties,
                                        tflite_artifact)
    else:
      clusters = _clusters_to_keep(model_artifact, mode)
      if clusters:
        clustered = [layer for layer, n in json.loads(model_artifact.get_string_custom_property(
            spec_keys.PROP_UNIQUE_WEIGHTS)).items() if n <= clusters]
        tflite_model, kept = conversion.convert_keeping_clusters(
            model.convertible, mode, representative_data, inference_io, clusters, clustered)
        if kept is not None:
          tflite_artifact.set_string_custom_property(spec_keys.PROP_INT8_UNIQUE_WEIGHTS,
                                                     json.dumps(kept, sort_keys=True))
      else:
        tflite_model = conversion.convert(model.convertible, mode, representative_data,
                                          inference_io)
    lineage.carry_properties(model_artifact, tflite_artifact)
    if (model_artifact.get_string_custom_property(spec_keys.PROP_SPARSITY_STRUCTURE) ==
        spec_keys.TWO_FOUR):
      # The pattern only speeds up inference if it survives conversion; prove it does.
      # Only the layers the Pruner pruned (its per-layer record): a skipped layer is dense.
      pruned = json.loads(model_artifact.get_string_custom_property(
          spec_keys.PROP_SPARSITY_PER_LAYER) or 'null')
      checked, broken = tflite.weights_violating_2by4(tflite_model,
                                                      sorted(pruned) if pruned else None)
      if broken:
        raise ConversionError(f'PTQConverter: the 2:4 pattern of {model_artifact.uri} is lost in '
                           f'the {mode} TFLite model, in tensors {broken}.')
      logging.info('PTQConverter: 2:4 pattern verified in %d TFLite weight tensors: %s',
                   len(checked), checked)
      tflite_artifact.set_string_custom_property(spec_keys.PROP_2BY4_VERIFIED, json.dumps(checked))
    model_io.write_tflite(tflite_model, tflite_artifact.uri)

    details = tflite.io_details(tflite_model)
    tflite_artifact.set_string_custom_property(spec_keys.PROP_MODE, mode)
    tflite_artifact.set_string_custom_property(spec_keys.PROP_INFERENCE_IO, inference_io)
    tflite_artifact.set_int_custom_property(spec_keys.PROP_SIZE_BYTES, len(tflite_model))
    # What an over-the-air download costs: zeros from pruning and repeated values from clustering
    # only shrink the payload once compressed.
    tflite_artifact.set_int_custom_property(spec_keys.PROP_GZIP_SIZE_BYTES,
                                            tflite.gzip_size(tflite_model))
    # What a device checks the downloaded file against.
    tflite_artifact.set_string_custom_property(spec_keys.PROP_MODEL_SHA256,
                                               hashlib.sha256(tflite_model).hexdigest())
    for prop, tensors in ((spec_keys.PROP_INPUT_DTYPES, details['inputs']),
                          (spec_keys.PROP_OUTPUT_DTYPES, details['outputs'])):
      tflite_artifact.set_string_custom_property(
          prop, json.dumps({t.name: t.dtype for t in tensors}, sort_keys=True))
    # The choice made for integer inputs: int8 I/O applies to the float inputs; an integer input
    # keeps its dtype and is cast and quantized inside the model. A device reads here which
    # inputs take the integers themselves.
    integer_inputs = tflite.integer_inputs(tflite_model)
    tflite_artifact.set_string_custom_property(spec_keys.PROP_INTEGER_INPUTS,
                                               json.dumps(integer_inputs, sort_keys=True))
    if integer_inputs:
      logging.info('PTQConverter: integer inputs kept as such: %s.', integer_inputs)
    logging.info('PTQConverter: wrote %d bytes (%s) to %s.', len(tflite_model), mode,
                 tflite_artifact.uri)

  def _convert_auto(self, model: model_io.ModelSource,
                    representative_data: conversion.RepresentativeData,
                    input_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any],
                    tflite_artifact: types.Artifact) -> bytes:
    """int8 with the fewest layers in float that keep the accuracy (ptq_converter/auto.py)."""
    config = auto.AutoConfig.from_json(exec_properties.get(spec_keys.INT8_AUTO_KEY) or '{}')
    label_key = exec_properties.get(spec_keys.LABEL_KEY)
    examples = artifact_utils.get_single_instance(input_dict[spec_keys.EXAMPLES_KEY])
    float_model = conversion.convert(model.convertible, modes.FLOAT32)
    try:
      int8_model = conversion.convert(model.convertible, modes.INT8, representative_data,
                                      modes.IO_FLOAT32)
    except ConversionError as e:
      # Ops with no int8 kernel: those stay float anyway; start from int8 with float fallback.
      logging.info('PTQConverter: int8_auto starts from int8_float_fallback: %s', e)
      int8_model = conversion.convert(model.convertible, modes.INT8_FLOAT_FALLBACK,
                                      representative_data)
    pattern = examples_io.split_file_pattern(examples, config.eval_split,
                                             'int8_auto eval_split')
    examples_io.check_split_not_empty(examples, config.eval_split, 'int8_auto eval_split')
    records = examples_io.read_records(pattern, limit=config.eval_examples)
    source = f'Examples artifact {examples.uri}, split {config.eval_split!r} (int8_auto)'
    inputs = calibration.to_input_arrays(records, model, source=source)
    labels = calibration.label_array(records, label_key, source)
    task = config.task or tasks.infer(tflite.output(float_model))
    logging.info('PTQConverter: int8_auto measures %s (%s) on %d examples of %s.',
                 tasks.GATE_METRIC[task][1], task, len(records), source)
    result = auto.convert_auto(
        conversion.converter_for(model.convertible), representative_data, int8_model,
        float_model, lambda m: auto.score(task, auto.predictions(m, inputs), labels),
        config.max_drop, config.fallback_budget,
        layer_names=[layer.name for layer in model.keras_model.layers] if model.keras_model
        else ())
    summary = result.summary()
    summary.update(task=task, eval_examples=len(records), metric=tasks.GATE_METRIC[task][1])
    tflite_artifact.set_string_custom_property(spec_keys.PROP_FLOAT_LAYERS,
                                               json.dumps(result.float_layers))
    tflite_artifact.set_string_custom_property(spec_keys.PROP_INT8_AUTO,
                                               json.dumps(summary, sort_keys=True))
    logging.info('PTQConverter: int8_auto kept %d of %d layers in float (%s): %s %.4f against '
                 'float32 %.4f and int8 %.4f; %d bytes against %d for int8.',
                 len(result.float_layers), result.layers, ', '.join(result.float_layers) or
                 'none', summary['metric'], result.accuracy['int8_auto'],
                 result.accuracy['float32'], result.accuracy['int8'],
                 result.size_bytes['int8_auto'], result.size_bytes['int8'])
    return result.model

  def _sample(self, examples: types.Artifact, split: str, n: int, label_key: Optional[str],
              seed: int, calibration_artifact: types.Artifact) -> List[bytes]:
    """Samples with Beam into the calibration artifact and returns the sampled records."""
    pattern = examples_io.split_file_pattern(examples, split, spec_keys.CALIBRATION_SPLIT_KEY)
    examples_io.check_split_not_empty(examples, split, spec_keys.CALIBRATION_SPLIT_KEY)
    calibration_artifact.split_names = artifact_utils.encode_split_names(
        [spec_keys.CALIBRATION_SPLIT_NAME])
    out_dir = artifact_utils.get_split_uri([calibration_artifact], spec_keys.CALIBRATION_SPLIT_NAME)
    logging.info('PTQConverter: sampling %d calibration examples from %s (stratified by %s).', n,
                 pattern, label_key or 'nothing')
    with self._make_beam_pipeline() as pipeline:
      _ = (
          pipeline
          # ReadAll from a created pattern rather than ReadFromTFRecord: runners without Beam's
          # Impulse-rooted sources (Beam's DaskRunner translates only Create, ParDo, GroupByKey
          # and Flatten) can run it too; the files are still split into ranges and shuffled.
          | 'Pattern' >> beam.Create([pattern])
          | 'ReadExamples' >> beam.io.ReadAllFromTFRecord()
          | 'Sample' >> calibration.SampleExamples(n, label_key=label_key, seed=seed)
          | 'Write' >> beam.io.WriteToTFRecord(
              os.path.join(out_dir, 'data_tfrecord'), file_name_suffix='.gz', num_shards=1))
    # A runner that recomputes the write's initialization for each consumer (Beam's DaskRunner
    # does) leaves temporary directories beside the shard; readers of the split (input_fn)
    # read every file in it.
    for leftover in tf.io.gfile.glob(os.path.join(out_dir, 'beam-temp-*')):
      tf.io.gfile.rmtree(leftover)
    examples_utils.set_payload_format(calibration_artifact, example_gen_pb2.FORMAT_TF_EXAMPLE)
    records = examples_io.read_records(io_utils.all_files_pattern(out_dir))
    floor = min(n, calibration.MIN_CALIBRATION_SAMPLES)
    if len(records) < floor:
      raise DataError(
          f'Examples artifact {examples.uri}, split {split!r}: {len(records)} examples, fewer '
          f'than the {floor} that calibration needs at least.')
    if len(records) < n:
      logging.warning(
          'PTQConverter: split %r of %s holds only %d examples, fewer than calibration_samples='
          '%d; calibrating on all of them.', split, examples.uri, len(records), n)
    return records


def _clusters_to_keep(model_artifact: types.Artifact, mode: str) -> int:
  """The clusters a model's kernels hold when its last step was clustering, else 0.

  Then int8 weights are quantized per tensor, so that k shared values stay k int8 values. After
  QAT (PCQAT) the quantization scheme is the one QAT trained with, and is left alone.
  """
  history = lineage.history_of(model_artifact)
  if mode not in (modes.INT8, modes.INT8_FLOAT_FALLBACK) or not history or (
      history[-1] != lineage.CLUSTER):
    return 0
  clusters = model_artifact.get_int_custom_property(spec_keys.PROP_CLUSTERS)
  unique = json.loads(model_artifact.get_string_custom_property(
      spec_keys.PROP_UNIQUE_WEIGHTS) or '{}')
  # Per-channel clustering (k values in each channel, different across channels) or kept zeros
  # beside k centroids: one scale per tensor would not keep the values apart; leave per channel.
  if not unique or any(n > clusters for n in unique.values()):
    return 0
  return clusters
