"""RegressionGate executor: the released model, fetched through TUF, TFMA-ed against the candidate.

The evaluation itself is the TFX Evaluator's (this executor subclasses it), so the metrics, the
validation result and the blessing are written exactly as the float32 gate's are; what this
executor adds is the baseline (the released model, verified as a device verifies it) and the
verdict's reason, recorded on the blessing for the pushers and the run summary.
"""
import dataclasses
import gzip
import json
import os
import tempfile
from typing import Any, Dict, List, Optional, Sequence

from absl import logging
from google.protobuf import json_format
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx import types
from tfx.components.evaluator import constants as evaluator_constants
from tfx.components.evaluator import executor as evaluator_executor
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils

from components import spec_keys
from components.common import evaluation
from components.common import model_io
from components.common import tasks
from components.common import tflite
from components.errors import ConfigError
from components.regression_gate import regression
from components.regression_gate import released as released_lib
from components.regression_gate import report
from components.selector import executor as selector_executor

# What the blessing's PROP_REGRESSION_STATUS says.
FIRST_RELEASE = 'first_release'  # Nothing released on the channel yet: the gate is skipped.
PASSED = 'passed'
REGRESSED = 'regressed'
SIGNATURE_MISMATCH = 'signature_mismatch'
NOT_EVALUATED = 'not_evaluated'  # The candidate was not blessed by the float32 gate.
NOT_MEASURED = 'not_measured'  # A slice the user asked for has no examples: refused.


def _bless(blessing: types.Artifact, model: types.Artifact, blessed: bool, status: str,
           reason: str) -> None:
  blessing.set_string_custom_property(
      evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri)
  blessing.set_int_custom_property(
      evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY,
      evaluator_constants.BLESSED_VALUE if blessed else evaluator_constants.NOT_BLESSED_VALUE)
  blessing.set_string_custom_property(spec_keys.PROP_REGRESSION_STATUS, status)
  blessing.set_string_custom_property(spec_keys.PROP_REASON, reason)
  files = (evaluator_constants.BLESSED_FILE_NAME, evaluator_constants.NOT_BLESSED_FILE_NAME)
  keep, drop = files if blessed else files[::-1]
  # The Evaluator underneath may have written the other verdict (a slice drop TFMA failed that
  # is within sampling noise): one verdict file only.
  if tf.io.gfile.exists(os.path.join(blessing.uri, drop)):
    tf.io.gfile.remove(os.path.join(blessing.uri, drop))
  io_utils.write_string_file(os.path.join(blessing.uri, keep), '')
  (logging.info if blessed else logging.warning)('RegressionGate: %s: %s', status, reason)


class Executor(evaluator_executor.Executor):
  """Blesses the candidate only when it is no worse than the released model (or none exists)."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    model = artifact_utils.get_single_instance(input_dict[spec_keys.MODEL_KEY])
    blessing = artifact_utils.get_single_instance(output_dict[spec_keys.BLESSING_KEY])
    evaluation_uri = artifact_utils.get_single_uri(output_dict[spec_keys.EVALUATION_KEY])
    verdict = self._judge(model, input_dict, output_dict, exec_properties)
    _bless(blessing, model, verdict.blessed, verdict.status, verdict.reason)
    report.write(evaluation_uri, verdict.title, verdict.blessed, verdict.reason, verdict.metric,
                 verdict.results)
    selections = input_dict.get(spec_keys.SELECTION_KEY) or []
    if selections:
      released = artifact_utils.get_single_instance(output_dict[spec_keys.RELEASED_MODEL_KEY])
      _write_selection_report(selections[0], released, verdict, evaluation_uri)

  def _judge(self, model: types.Artifact, input_dict: Dict[str, List[types.Artifact]],
             output_dict: Dict[str, List[types.Artifact]],
             exec_properties: Dict[str, Any]) -> '_Verdict':
    """Fetches the released model, compares the candidate with it, and says what it found."""
    float_blessing = artifact_utils.get_single_instance(
        input_dict[spec_keys.MODEL_BLESSING_KEY])
    released_model = artifact_utils.get_single_instance(output_dict[spec_keys.RELEASED_MODEL_KEY])
    blessing = artifact_utils.get_single_instance(output_dict[spec_keys.BLESSING_KEY])
    name = exec_properties[spec_keys.MODEL_NAME_KEY]
    channel = exec_properties[spec_keys.OTA_CHANNEL_KEY]
    location = exec_properties[spec_keys.OTA_REPOSITORY_KEY]
    title = f'{name} on channel {channel!r}'
    eval_config = json_format.Parse(exec_properties[spec_keys.EVAL_CONFIG_KEY], tfma.EvalConfig())
    # A slice on a feature the examples lack would be silently empty: a gate that measures
    # nothing there. Before the release is even fetched.
    _check_slice_features(eval_config, input_dict[spec_keys.SCHEMA_KEY], name)

    refusal = evaluation.blessing_refusal(model, float_blessing)
    if refusal:
      return _Verdict(False, NOT_EVALUATED,
                      f'not compared with the released model: {refusal}', title)

    trusted_root = (exec_properties.get(spec_keys.OTA_TRUSTED_ROOT_KEY) or
                    f'{location.rstrip("/")}/metadata/1.root.json')
    if not released_lib.repository_exists(location):
      released = None
    else:
      with tempfile.TemporaryDirectory() as workdir:
        released = released_lib.fetch_released(location, trusted_root, name, channel, workdir)
    if released is None:
      released_model.set_string_custom_property(spec_keys.PROP_RELEASED_VERSION, 'none')
      return _Verdict(True, FIRST_RELEASE, (
          f'nothing of {name!r} is released on channel {channel!r} in {location}: this is the '
          'first release, so there is no model to compare with; the gate is skipped.'), title)

    title = f'{name} against version {released.version} on channel {channel!r}'
    model_io.write_tflite(released.model, released_model.uri)
    released_model.set_string_custom_property(spec_keys.PROP_RELEASED_VERSION,
                                              str(released.version))
    released_model.set_string_custom_property(spec_keys.PROP_MODEL_SHA256, released.sha256)
    # What the run summary shows in the released model's row, beside the candidates'.
    released_model.set_int_custom_property(spec_keys.PROP_SIZE_BYTES, len(released.model))
    released_model.set_int_custom_property(spec_keys.PROP_GZIP_SIZE_BYTES,
                                           len(gzip.compress(released.model)))
    released_model.set_string_custom_property(spec_keys.PROP_MODE,
                                              str(released.custom.get('mode', '?')))
    blessing.set_string_custom_property(spec_keys.PROP_RELEASED_VERSION, str(released.version))
    candidate_bytes = model_io.read_tflite(model.uri, 'RegressionGate')
    mismatch = regression.signature_mismatch(tflite.io_specs(candidate_bytes),
                                             tflite.io_specs(released.model))
    if mismatch:
      return _Verdict(False, SIGNATURE_MISMATCH,
                      f'{name} version {released.version} on {channel!r}: {mismatch}', title)

    super().Do(
        {standard_component_specs.EXAMPLES_KEY: input_dict[spec_keys.EXAMPLES_KEY],
         standard_component_specs.MODEL_KEY: [model],
         standard_component_specs.BASELINE_MODEL_KEY: [released_model],
         standard_component_specs.SCHEMA_KEY: input_dict[spec_keys.SCHEMA_KEY]},
        {standard_component_specs.EVALUATION_KEY: output_dict[spec_keys.EVALUATION_KEY],
         standard_component_specs.BLESSING_KEY: [blessing]},
        {standard_component_specs.EVAL_CONFIG_KEY: exec_properties[spec_keys.EVAL_CONFIG_KEY],
         standard_component_specs.MODULE_PATH_KEY: exec_properties[spec_keys.MODULE_PATH_KEY],
         standard_component_specs.EXAMPLE_SPLITS_KEY: json.dumps(
             [exec_properties[spec_keys.EVAL_SPLIT_KEY]])})
    evaluation_uri = artifact_utils.get_single_uri(output_dict[spec_keys.EVALUATION_KEY])
    metric = evaluation.gate_metric(evaluation_uri)
    results = regression.compare(
        evaluation_uri, metric, exec_properties[spec_keys.MAX_REGRESSION_KEY],
        exec_properties[spec_keys.MAX_SLICE_REGRESSION_KEY],
        higher_is_better=metric not in tasks.LOWER_IS_BETTER,
        # .get: pipelines compiled before the parameter existed keep the default.
        z=exec_properties.get(spec_keys.SLICE_NOISE_Z_KEY, regression.SLICE_Z))
    measured = {r.slice for r in results}
    unmeasured = [one for one in map(regression.single_slice, eval_config.slicing_specs)
                  if one is not None and one not in measured]
    if unmeasured:
      return _Verdict(False, NOT_MEASURED, (
          f'the slice(s) {"; ".join(unmeasured)} asked for in slicing_specs have no example in '
          f'split {exec_properties[spec_keys.EVAL_SPLIT_KEY]!r}, so the gate cannot tell whether '
          'the candidate regressed there'), title, metric, results)
    failed = [r.line(metric) for r in results if r.verdict == regression.REGRESSED]
    noise = [r.line(metric) for r in results if r.verdict == regression.NOISE]
    if not failed and not noise and not tfma.load_validation_result(evaluation_uri).validation_ok:
      # A threshold on something compare() does not list (another metric of a user's config).
      failed = evaluation.validation_failures(evaluation_uri) or ['validation failed']
    within_noise = (f'; within sampling noise on {len(noise)} slice(s): {"; ".join(noise)}'
                    if noise else '')
    if failed:
      return _Verdict(False, REGRESSED,
                      f'worse than the released model: {"; ".join(failed)}{within_noise}',
                      title, metric, results)
    values = evaluation.metric_values(evaluation_uri, metric)
    return _Verdict(True, PASSED, (
        f'no regression: {metric} {values.get(evaluation.CANDIDATE, float("nan")):.4f} against '
        f'{values.get(evaluation.BASELINE, float("nan")):.4f} of {name} version '
        f'{released.version} on {channel!r}, and on every slice{within_noise}.'), title, metric,
                    results)


def _write_selection_report(selection: types.Artifact, released: types.Artifact,
                            verdict: '_Verdict', evaluation_uri: str) -> None:
  """VariantSelector's report again, with the released model's row beside the candidates."""
  version = released.get_string_custom_property(spec_keys.PROP_RELEASED_VERSION)
  row = None
  if version not in ('', 'none'):
    overall = [r for r in verdict.results if r.slice == evaluation.OVERALL]
    row = selector_executor.Released(
        label=f'released v{version}',
        accuracy=overall[0].released if overall else None,
        size_bytes=released.get_int_custom_property(spec_keys.PROP_SIZE_BYTES),
        gzip_bytes=released.get_int_custom_property(spec_keys.PROP_GZIP_SIZE_BYTES),
        note=f'regression gate: {verdict.status}: {verdict.reason}')
  selector_executor.rewrite_report(
      selection, os.path.join(evaluation_uri, spec_keys.SELECTION_REPORT_DIR), row,
      released_note=f'No released model row: {verdict.reason}')


def _check_slice_features(eval_config: tfma.EvalConfig, schemas: List[types.Artifact],
                          name: str) -> None:
  """ConfigError when a slicing spec names a feature the gate's examples do not have."""
  schema = io_utils.SchemaReader().read(os.path.join(
      artifact_utils.get_single_uri(schemas), spec_keys.SCHEMA_FILE_NAME))
  known = {f.name for f in schema.feature}
  for spec in eval_config.slicing_specs:
    unknown = [f for f in regression.spec_features(spec) if f not in known]
    if unknown:
      raise ConfigError(
          f'RegressionGate ({name}): the slice {json_format.MessageToDict(spec)} names '
          f'{unknown}, which the eval examples do not have, so the gate could not measure it. '
          f'Features they have: {sorted(known)}.')


@dataclasses.dataclass(frozen=True)
class _Verdict:
  """What the gate found: the blessing's verdict and reason, and the report's content."""
  blessed: bool
  status: str
  reason: str
  title: str
  metric: Optional[str] = None
  results: Sequence[regression.SliceResult] = ()
