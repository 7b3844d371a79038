"""GateExamplesGen executor: one Beam pass that counts, fills and writes the eval split."""
import json
import os
import tempfile
from typing import Any, Dict, List

from absl import logging
import apache_beam as beam
from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components import spec_keys
from components.common import examples_io
from components.common import model_io
from components.common import tasks
from components.common import tflite
from components.errors import ConfigError
from components.gate import schema as schema_lib


class Executor(base_beam_executor.BaseBeamExecutor):
  """Counts missing values per feature and fills the model inputs, then builds the schema."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    examples = artifact_utils.get_single_instance(input_dict[spec_keys.EXAMPLES_KEY])
    model = artifact_utils.get_single_instance(input_dict[spec_keys.MODEL_KEY])
    gate_examples = artifact_utils.get_single_instance(output_dict[spec_keys.GATE_EXAMPLES_KEY])
    schema_artifact = artifact_utils.get_single_instance(output_dict[spec_keys.SCHEMA_KEY])
    split = exec_properties[spec_keys.EVAL_SPLIT_KEY]
    label_key = exec_properties[spec_keys.LABEL_KEY]
    source = f'split {split!r} of Examples artifact {examples.uri}'

    tflite_model = model_io.read_tflite(model.uri, 'GateExamplesGen')
    task = exec_properties.get(spec_keys.TASK_KEY)
    # The first step that sees a converted model: a gate that cannot measure it stops here,
    # before every variant is fine-tuned, converted and evaluated for nothing.
    reason = tasks.misfit(task, tflite.output(tflite_model)) if task else ''
    if reason:
      raise ConfigError(f'GateExamplesGen: the gate cannot measure the model {model.uri}: '
                        f'{reason}')
    inputs = schema_lib.model_inputs(tflite_model)
    fill = schema_lib.resolve_fill_missing(json.loads(exec_properties[spec_keys.FILL_MISSING_KEY]),
                                           inputs)
    schema_lib.check_fill_names(fill, inputs)  # Before reading any data.
    pattern = examples_io.split_file_pattern(examples, split, spec_keys.EVAL_SPLIT_KEY)
    examples_io.check_split_not_empty(examples, split, spec_keys.EVAL_SPLIT_KEY)
    gate_examples.split_names = artifact_utils.encode_split_names([split])
    out_dir = artifact_utils.get_split_uri([gate_examples], split)
    # The summary travels through a file, so the combine can run on workers in other processes;
    # the run's tmp directory is under the pipeline root, which every worker reaches.
    tmp_dir = self._get_tmp_dir() if self._context else tempfile.mkdtemp()
    summary_path = os.path.join(tmp_dir, 'split_summary')
    logging.info('GateExamplesGen: counting missing values in %s, filling %s.', pattern,
                 sorted(fill) or 'nothing')
    with self._make_beam_pipeline() as pipeline:
      records = pipeline | 'ReadExamples' >> beam.io.ReadFromTFRecord(pattern)
      _ = (
          records
          | 'Summarize' >> beam.CombineGlobally(schema_lib.SummarizeFeatures())
          | 'ToJson' >> beam.Map(lambda summary: json.dumps(summary.to_json()))
          | 'WriteSummary' >> beam.io.WriteToText(summary_path, shard_name_template=''))
      _ = (
          records
          | 'Fill' >> beam.Map(schema_lib.fill_example, fill, inputs)
          | 'WriteExamples' >> beam.io.WriteToTFRecord(
              os.path.join(out_dir, 'data_tfrecord'), file_name_suffix='.gz'))
    examples_utils.set_payload_format(gate_examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
    summary = schema_lib.SplitSummary.from_json(
        json.loads(io_utils.read_string_file(summary_path)))

    missing = schema_lib.missing_counts(summary, [*inputs, label_key])
    filled = {k: v for k, v in fill.items() if k in missing}
    for artifact in (gate_examples, schema_artifact):
      artifact.set_string_custom_property(spec_keys.PROP_MISSING_VALUES,
                                          json.dumps(missing, sort_keys=True))
      artifact.set_string_custom_property(spec_keys.PROP_FILLED_FEATURES,
                                          json.dumps(filled, sort_keys=True))
      artifact.set_int_custom_property(spec_keys.PROP_EVAL_EXAMPLES, summary.examples)
    if missing:
      logging.info('GateExamplesGen: of %d examples, these lacked a value: %s; filled: %s.',
                   summary.examples, missing, filled)
    schema = schema_lib.gate_schema(summary, inputs, label_key, fill, source=source)
    io_utils.write_pbtxt_file(os.path.join(schema_artifact.uri, spec_keys.SCHEMA_FILE_NAME),
                              schema)
    logging.info('GateExamplesGen: %d examples; schema with %d features, %d model inputs dense.',
                 summary.examples, len(schema.feature), len(inputs))
