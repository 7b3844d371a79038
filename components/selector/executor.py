"""VariantSelector executor: Pareto front, the winner, its model and blessing, the report."""
import dataclasses
import json
import os
import tempfile
from typing import Any, Dict, List, Optional

from absl import logging
import tensorflow as tf
from tfx import types
from tfx.components.evaluator import constants as evaluator_constants
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components import spec_keys
from components.common import failures
from components.common import lineage
from components.errors import DataError
from components.selector import report
from components.selector import selection as selection_lib


def model_key(variant: str) -> str:
  return f'{spec_keys.MODEL_KEY}_{variant}'


def benchmark_key(variant: str) -> str:
  return f'{spec_keys.BENCHMARK_KEY}_{variant}'


def _benchmark_entry(variant: str, model: types.Artifact,
                     benchmark: types.Artifact) -> Dict[str, Any]:
  """The benchmark doc and its entry for `model`; an error when it measured another model."""
  path = os.path.join(benchmark.uri, spec_keys.BENCHMARK_JSON_FILE_NAME)
  if not tf.io.gfile.exists(path):
    raise DataError(f'VariantSelector: variant {variant!r}: benchmark artifact {benchmark.uri} '
                     f'has no {spec_keys.BENCHMARK_JSON_FILE_NAME}; wire a DeviceBenchmarker '
                     'output.')
  doc = json.loads(io_utils.read_string_file(path))
  for entry in doc['models']:
    if entry['uri'] == model.uri:
      return dict(entry, target=doc['target'], host=doc['host'])
  raise DataError(f'VariantSelector: variant {variant!r}: the benchmark {benchmark.uri} did not '
                   f'measure its model {model.uri}; wire the DeviceBenchmarker of that model.')


def candidate_of(variant: str, entry: Dict[str, Any]) -> selection_lib.Candidate:
  """A Candidate from one benchmark.json entry."""
  if entry.get('failed'):
    return selection_lib.Candidate.of_failed(variant, entry['failed'])
  acc = entry.get('accuracy') or {}
  return selection_lib.Candidate(
      name=variant,
      accuracy=acc.get('value'),
      higher_is_better=acc.get('higher_is_better', True),
      accuracy_blessed=bool(acc.get('blessed', False)),
      accuracy_reason=acc.get('reason', 'no Evaluator blessing was given to the '
                                        'DeviceBenchmarker'),
      within_budget=entry['within_budget'],
      budget_reason='; '.join(entry['budget_violations']) or 'within budgets',
      p50_ms=entry['measurements'][0]['p50_ms'],
      gzip_bytes=entry['gzip_bytes'],
      size_bytes=entry['size_bytes'])


def summary_of(variant: str, entry: Dict[str, Any]) -> Dict[str, Any]:
  """What travels with the chosen model into the OTA target's custom info."""
  acc = entry.get('accuracy') or {}
  return {
      'variant': variant,
      'target': entry['target'],
      'cpu': entry['host'].get('cpu_model'),
      'runtime': entry['host'].get('runtime'),
      'size_bytes': entry['size_bytes'],
      'gzip_bytes': entry['gzip_bytes'],
      # The Evaluator's figures, in the shape evaluation.metric_values returns.
      'tfma_metrics': {name: acc[field] for name, field in
                       (('candidate', 'value'), ('baseline', 'baseline'))
                       if acc.get(field) is not None},
      'latency_ms': {str(m['threads']): {'p50': round(m['p50_ms'], 4), 'p90': round(m['p90_ms'], 4)}
                     for m in entry['measurements']},
      'peak_memory_mb': round(max(m['peak_memory_mb'] for m in entry['measurements']), 2),
  }


def selection_doc(prefer: str, candidates: List[selection_lib.Candidate],
                  result: selection_lib.Selection, model_uris: Dict[str, str]) -> Dict[str, Any]:
  """selection.json's content (selection_lib.from_doc reads it back)."""
  return {
      'prefer': prefer,
      'winner': result.winner,
      'pareto_front': list(result.front),
      'reasons': result.reasons,
      'candidates': [dict(vars(c), eligible=c.eligible, model_uri=model_uris[c.name],
                          p50_ms=None if c.failed else c.p50_ms)
                     for c in candidates],
      'failed': {c.name: c.failed for c in candidates if c.failed},
  }


# The released model's row, which the RegressionGate adds to the report (rewrite_report).
Released = report.Released


def rewrite_report(selection: types.Artifact, output_uri: str, released: Optional[Released],
                   released_note: str = '') -> None:
  """Writes a selection's report and selection.json again, into output_uri, with a row of the
  model devices run now beside the candidates (the RegressionGate measured it after selection).

  Args:
    selection: VariantSelector's `selection` output.
    output_uri: where to write index.html, the PNGs and selection.json (with `released`).
    released: the released model's row; None when there is none (first release).
    released_note: why there is no row, shown instead.
  """
  doc = json.loads(io_utils.read_string_file(
      os.path.join(selection.uri, spec_keys.SELECTION_JSON_FILE_NAME)))
  candidates, result = selection_lib.from_doc(doc)
  with tempfile.TemporaryDirectory() as tmp:
    report.write(tmp, candidates, result, doc, released, released_note)
    with open(os.path.join(tmp, spec_keys.SELECTION_JSON_FILE_NAME), 'w') as f:
      json.dump(dict(doc, released=dataclasses.asdict(released) if released else None), f,
                indent=2, sort_keys=True)
    io_utils.copy_dir(tmp, output_uri)


class Executor(base_executor.BaseExecutor):
  """Chooses the variant to ship; only that model leaves on the `model` output."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    variants = json.loads(exec_properties[spec_keys.VARIANTS_KEY])
    prefer = exec_properties[spec_keys.PREFER_KEY]
    models, entries, candidates = {}, {}, []
    for variant in variants:
      models[variant] = artifact_utils.get_single_instance(input_dict[model_key(variant)])
      failed = failures.failure_of(models[variant])
      if failed:
        # Its optimizer or conversion failed: nothing was gated or measured, and it cannot win.
        candidates.append(selection_lib.Candidate.of_failed(variant, failed))
        continue
      benchmark = artifact_utils.get_single_instance(input_dict[benchmark_key(variant)])
      entries[variant] = _benchmark_entry(variant, models[variant], benchmark)
      candidates.append(candidate_of(variant, entries[variant]))
    result = selection_lib.select(candidates, prefer)
    for c in candidates:
      logging.info('VariantSelector: %s: %s', c.name, result.reasons[c.name])

    out_model = artifact_utils.get_single_instance(output_dict[spec_keys.SELECTED_MODEL_KEY])
    blessing = artifact_utils.get_single_instance(output_dict[spec_keys.SELECTED_BLESSING_KEY])
    selection = artifact_utils.get_single_instance(output_dict[spec_keys.SELECTION_KEY])
    doc = selection_doc(prefer, candidates, result, {k: m.uri for k, m in models.items()})
    with tempfile.TemporaryDirectory() as tmp:
      with open(os.path.join(tmp, spec_keys.SELECTION_JSON_FILE_NAME), 'w') as f:
        json.dump(doc, f, indent=2, sort_keys=True)
      report.write(tmp, candidates, result, doc)
      io_utils.copy_dir(tmp, selection.uri)

    if result.winner is None:
      # Each variant's reason (the failed thresholds, the budgets broken) travels to the pusher's
      # refusal and the log: the one place a user looks when nothing shipped.
      reason = ('no variant is both blessed by the accuracy gate and within the device budgets: '
                + '; '.join(f'{c.name}: {result.reasons[c.name]}' for c in candidates))
      logging.warning('VariantSelector: %s. Nothing goes on to the push.', reason)
    else:
      winner = models[result.winner]
      io_utils.copy_dir(winner.uri, out_model.uri)
      lineage.carry_properties(winner, out_model)
      out_model.set_string_custom_property(spec_keys.PROP_SELECTED_VARIANT, result.winner)
      out_model.set_string_custom_property(
          spec_keys.PROP_BENCHMARK, json.dumps(summary_of(result.winner, entries[result.winner]),
                                          sort_keys=True))
      reason = result.reasons[result.winner]
      logging.info('VariantSelector: selected %s (%s).', result.winner, winner.uri)
    # A blessing of the output model, so a pusher's usual check (blessed, and for this very
    # model) covers the accuracy gate, the budgets and the selection at once.
    blessing.set_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY,
                                     int(result.winner is not None))
    blessing.set_string_custom_property(
        evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, out_model.uri)
    blessing.set_string_custom_property(spec_keys.PROP_SELECTION_REASON, reason)
    # The marker file the TFX Evaluator also writes, for tools that look for it.
    io_utils.write_string_file(os.path.join(
        blessing.uri, evaluator_constants.BLESSED_FILE_NAME if result.winner else
        evaluator_constants.NOT_BLESSED_FILE_NAME), '')
    for artifact in (out_model, blessing, selection):
      artifact.set_string_custom_property(spec_keys.PROP_SELECTED_VARIANT, result.winner or '')
    logging.info('VariantSelector: report at %s',
                 os.path.join(selection.uri, spec_keys.REPORT_HTML_FILE_NAME))
