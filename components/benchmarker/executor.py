"""DeviceBenchmarker executor: measures each model on the target and checks the budgets."""
import json
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.components.evaluator import constants as evaluator_constants
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components import spec_keys
from components.benchmarker import budgets as budgets_lib
from components.benchmarker import report
from components.benchmarker import targets
from components.common import evaluation as evaluation_lib
from components.common import failures
from components.common import model_io
from components.common import tasks
from components.common import tflite
from components.errors import DataError


def accuracy_of(model: types.Artifact, tflite_model: bytes, blessing: Optional[types.Artifact],
                evaluation: Optional[types.Artifact]) -> Dict[str, Any]:
  """The TFMA verdict and the gate metric for `model`, from its Evaluator's outputs (when wired).

  A blessing counts only when the gate's metric can measure the model's output: one whose
  metric cannot (for example accuracy over the argmax of one sigmoid unit) is refused here.
  """
  out: Dict[str, Any] = {'metric': evaluation_lib.ACCURACY_METRIC, 'higher_is_better': True}
  if evaluation is not None:
    metric = evaluation_lib.gate_metric(evaluation.uri)
    values = evaluation_lib.metric_values(evaluation.uri, metric)
    out.update(metric=metric, higher_is_better=metric not in tasks.LOWER_IS_BETTER,
               value=values.get(evaluation_lib.CANDIDATE),
               baseline=values.get(evaluation_lib.BASELINE))
  if blessing is not None:
    reason = evaluation_lib.blessing_refusal(model, blessing,
                                             evaluation.uri if evaluation is not None else '')
    if not reason and evaluation is not None:
      reason = _misfit(evaluation.uri, tflite_model)
    out['blessed'] = not reason
    out['reason'] = reason or 'BLESSED by the Evaluator'
  return out


def _misfit(evaluation_uri: str, tflite_model: bytes) -> str:
  try:
    return evaluation_lib.gate_misfit(evaluation_uri, tflite.output(tflite_model))
  except DataError as e:  # More than one output: the gate cannot say which one it measured.
    return f'the gate cannot measure this model: {e}'


class Executor(base_executor.BaseExecutor):
  """Measures every input model at every thread count, each in its own process."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    models = input_dict[spec_keys.MODEL_KEY]
    if not models:
      raise DataError('DeviceBenchmarker: the `model` channel holds no artifact.')
    blessings = input_dict.get(spec_keys.MODEL_BLESSING_KEY) or []
    evaluations = input_dict.get(spec_keys.EVALUATION_KEY) or []
    output = artifact_utils.get_single_instance(output_dict[spec_keys.BENCHMARK_KEY])
    target = targets.create(exec_properties[spec_keys.TARGET_KEY])
    settings = budgets_lib.MeasureSettings.from_json(
        exec_properties[spec_keys.BENCHMARK_SETTINGS_KEY])
    budgets = budgets_lib.Budgets.from_json(exec_properties[spec_keys.BUDGETS_KEY])
    variant = exec_properties.get(spec_keys.VARIANT_KEY) or ''

    entries = []
    # The interpreter process needs a plain local file even when the artifact lives on gs://,
    # s3:// or ram://. TFX puts the executor's tmp_dir under the pipeline root, which is not
    # local then, so the copies go to a local temporary directory of their own.
    scratch = tempfile.mkdtemp(prefix='tfx-edge-benchmark-')
    try:
      for i, model in enumerate(models):
        failed = failures.failure_of(model)
        if failed:
          # A variant that failed before it was converted: nothing to measure, never eligible.
          logging.warning('DeviceBenchmarker: %s is a failed variant, not measured: %s',
                          model.uri, failed)
          entries.append(_failed_entry(model, failed))
          continue
        data = model_io.read_tflite(model.uri, 'DeviceBenchmarker')
        local = os.path.join(scratch, f'model-{i}.tflite')
        with open(local, 'wb') as f:
          f.write(data)
        measurements = []
        for threads in settings.threads:
          logging.info('DeviceBenchmarker: measuring %s (%d/%d) at %d thread(s) on %s...',
                       model.uri, i + 1, len(models), threads, target.spec)
          m = target.measure(local, threads, settings)
          logging.info('DeviceBenchmarker:   p50 %.4f ms, p90 %.4f ms, p99 %.4f ms (cv %.2f, '
                       '%d runs), init %.1f ms, peak memory %.2f MB, XNNPACK %s.', m['p50_ms'],
                       m['p90_ms'], m['p99_ms'], m['cv'], m['runs'], m['init_ms'],
                       m['peak_memory_mb'], 'on' if m.get('xnnpack') else 'NOT reported')
          measurements.append(m)
        gzip_bytes = tflite.gzip_size(data)
        violations = budgets.violations(len(data), gzip_bytes, measurements)
        entries.append({
            'uri': model.uri,
            'artifact_id': model.id,
            'mode': model.get_string_custom_property(spec_keys.PROP_MODE),
            'history': json.loads(model.get_string_custom_property(spec_keys.PROP_HISTORY) or '[]'),
            'size_bytes': len(data),
            'gzip_bytes': gzip_bytes,
            'measurements': measurements,
            # The Evaluator's outputs describe one model: they are used when one model is given.
            'accuracy': accuracy_of(model, data, _for_model(model, blessings),
                                    evaluations[0] if len(models) == len(evaluations) == 1 else
                                    None),
            'within_budget': not violations,
            'budget_violations': violations,
        })
    finally:
      shutil.rmtree(scratch, ignore_errors=True)

    doc = {
        'variant': variant,
        'target': target.spec,
        'host': target.describe(),
        'settings': json.loads(settings.to_json()),
        'budgets': json.loads(budgets.to_json()),
        'models': entries,
    }
    io_utils.write_string_file(os.path.join(output.uri, spec_keys.BENCHMARK_JSON_FILE_NAME),
                               json.dumps(doc, indent=2, sort_keys=True))
    io_utils.write_string_file(os.path.join(output.uri, spec_keys.REPORT_HTML_FILE_NAME),
                               report.benchmark_html(doc))

    within = all(e['within_budget'] for e in entries)
    reason = ('within budgets' if within else '; '.join(
        f'{e["uri"]}: {", ".join(e["budget_violations"])}' for e in entries
        if e['budget_violations']))
    output.set_int_custom_property(spec_keys.PROP_WITHIN_BUDGETS, int(within))
    output.set_string_custom_property(spec_keys.PROP_BUDGET_REASON, reason)
    output.set_string_custom_property(spec_keys.VARIANT_KEY, variant)
    measured = [e for e in entries if not e.get('failed')]
    if not measured:
      failures.mark_failed(output, entries[0]['failed'])
      return
    first = measured[0]['measurements'][0]
    output.set_float_custom_property(spec_keys.PROP_P50_MS, first['p50_ms'])
    output.set_float_custom_property(spec_keys.PROP_P90_MS, first['p90_ms'])
    output.set_float_custom_property(spec_keys.PROP_PEAK_MEMORY_MB, first['peak_memory_mb'])
    output.set_int_custom_property(spec_keys.PROP_SIZE_BYTES, measured[0]['size_bytes'])
    output.set_int_custom_property(spec_keys.PROP_GZIP_SIZE_BYTES, measured[0]['gzip_bytes'])
    log = logging.info if within else logging.warning
    log('DeviceBenchmarker: %s: %s. Report: %s', variant or 'models', reason,
        os.path.join(output.uri, spec_keys.REPORT_HTML_FILE_NAME))


def _failed_entry(model: types.Artifact, reason: str) -> Dict[str, Any]:
  """The benchmark.json entry of a failed variant: refused by the gate, not measured."""
  return {
      'uri': model.uri,
      'artifact_id': model.id,
      'mode': model.get_string_custom_property(spec_keys.PROP_MODE),
      'history': json.loads(model.get_string_custom_property(spec_keys.PROP_HISTORY) or '[]'),
      'failed': reason,
      'size_bytes': 0,
      'gzip_bytes': 0,
      'measurements': [],
      'accuracy': {'metric': evaluation_lib.ACCURACY_METRIC, 'higher_is_better': True,
                   'blessed': False, 'reason': f'the variant failed: {reason}'},
      'within_budget': False,
      'budget_violations': [f'not measured: the variant failed: {reason}'],
  }


def _for_model(model: types.Artifact,
               blessings: List[types.Artifact]) -> Optional[types.Artifact]:
  """The blessing that names `model`, else the only blessing (whose mismatch is then reported)."""
  for blessing in blessings:
    if blessing.get_string_custom_property(
        evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY) == model.uri:
      return blessing
  return blessings[0] if len(blessings) == 1 else None
