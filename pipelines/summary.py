"""Reads a finished run back from ML Metadata into the table `make demo` prints."""
import dataclasses
import json
from typing import Dict, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
import tensorflow as tf

from components import spec_keys
from components.common import evaluation
from components.common import failures
from components.regression_gate import executor as regression_executor
from pipelines import pipeline as pipeline_lib


@dataclasses.dataclass
class VariantRow:
  """One converted model and what happened to it."""
  variant: str
  chain: str
  mode: str
  sparsity: Optional[float]
  clusters: Optional[int]
  size_bytes: int
  gzip_bytes: int
  accuracy: Optional[float]
  blessed: str
  p50_ms: Optional[float]
  budget: str
  pushed_to: str
  failed: str = ''  # Why the variant's optimizer or conversion failed ('' when it did not).


def _props(artifact: metadata_store_pb2.Artifact) -> Dict[str, object]:
  out = {}
  for k, v in artifact.custom_properties.items():
    kind = v.WhichOneof('value')
    out[k] = getattr(v, kind) if kind else None
  return out


_OUTPUTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)


def latest_artifacts(store: metadata_store.MetadataStore, pipeline_name: str, node_id: str,
                     event_types=_OUTPUTS) -> Dict[str, metadata_store_pb2.Artifact]:
  """Artifacts, by key, of the newest execution of one node (its outputs unless told)."""
  context = store.get_context_by_type_and_name('node', f'{pipeline_name}.{node_id}')
  if context is None:
    return {}
  executions = store.get_executions_by_context(context.id)
  if not executions:
    return {}
  latest = max(executions, key=lambda e: e.id)
  events = [
      e for e in store.get_events_by_execution_ids([latest.id])
      if e.type in event_types
  ]
  artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
  return {e.path.steps[0].key: artifacts[e.artifact_id] for e in events if e.path.steps}


def _row(variant: str, model: metadata_store_pb2.Artifact, accuracy: Optional[float],
         blessed: str, pushed_to: str, p50_ms: Optional[float] = None,
         budget: str = '-') -> VariantRow:
  props = _props(model)
  history = json.loads(props.get(spec_keys.PROP_HISTORY) or '[]')
  return VariantRow(
      variant=variant,
      chain=' > '.join(history + [str(props.get(spec_keys.PROP_MODE, '?'))]),
      mode=str(props.get(spec_keys.PROP_MODE, '?')),
      sparsity=props.get(spec_keys.PROP_SPARSITY),
      clusters=props.get(spec_keys.PROP_CLUSTERS),
      size_bytes=int(props.get(spec_keys.PROP_SIZE_BYTES, 0)),
      gzip_bytes=int(props.get(spec_keys.PROP_GZIP_SIZE_BYTES, 0)),
      accuracy=accuracy,
      blessed=blessed,
      p50_ms=p50_ms,
      budget=budget,
      pushed_to=pushed_to)


def _store(metadata_path: str) -> metadata_store.MetadataStore:
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = metadata_path
  config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
  return metadata_store.MetadataStore(config)


def selection_report(metadata_path: str, pipeline_name: str) -> Optional[str]:
  """Where the latest run's selection report (index.html) is, if VariantSelector ran: the
  RegressionGate's copy, with the released model's row, when the gate wrote one."""
  store = _store(metadata_path)
  gate = latest_artifacts(store, pipeline_name, pipeline_lib.REGRESSION_GATE)
  if spec_keys.EVALUATION_KEY in gate:
    page = (f'{gate[spec_keys.EVALUATION_KEY].uri}/{spec_keys.SELECTION_REPORT_DIR}/'
            f'{spec_keys.REPORT_HTML_FILE_NAME}')
    if tf.io.gfile.exists(page):
      return page
  selection = latest_artifacts(store, pipeline_name, pipeline_lib.SELECTOR).get(
      spec_keys.SELECTION_KEY)
  return f'{selection.uri}/{spec_keys.REPORT_HTML_FILE_NAME}' if selection is not None else None


def node_seconds(metadata_path: str, pipeline_name: str) -> Dict[str, float]:
  """Wall time of each node's newest execution, from ML Metadata's timestamps."""
  store, out = _store(metadata_path), {}
  for context in store.get_contexts_by_type('node'):
    prefix, _, node = context.name.partition('.')
    executions = store.get_executions_by_context(context.id)
    if prefix == pipeline_name and executions:
      latest = max(executions, key=lambda e: e.id)
      out[node] = (latest.last_update_time_since_epoch - latest.create_time_since_epoch) / 1e3
  return out


def format_gate_share(seconds: Dict[str, float]) -> str:
  """How much of the run the accuracy gates (the Evaluators) and the benchmarks took."""
  total = sum(seconds.values())
  if not total:
    return ''
  parts = []
  for label, suffix in (('accuracy gates (Evaluators)', '_evaluator'),
                        ('device benchmarks', '_benchmark')):
    spent = sum(v for k, v in seconds.items() if k.endswith(suffix))
    parts.append(f'{label} {spent:.0f}s ({spent / total:.0%})')
  slowest = max(seconds, key=seconds.get)
  return (f'Step time: {total:.0f}s in all; ' + ', '.join(parts) +
          f'; slowest step {slowest} {seconds[slowest]:.0f}s.')


def push_outcome(metadata_path: str, pipeline_name: str) -> str:
  """What the pusher did in the latest run: the target path, or why nothing was pushed."""
  pushed = latest_artifacts(_store(metadata_path), pipeline_name, pipeline_lib.PUSHER).get(
      spec_keys.PUSHED_MODEL_KEY)
  if pushed is None:
    return 'the pusher did not run'
  props = _props(pushed)
  if props.get(spec_keys.PROP_PUSHED) == 1:
    return f'pushed {props.get(spec_keys.PROP_PUSHED_DESTINATION, "")}'
  return f'not pushed: {props.get(spec_keys.PROP_PUSH_REASON, "")}'


def summarize(metadata_path: str, pipeline_name: str) -> List[VariantRow]:
  """The float32 baseline and each gated variant of the latest run, from ML Metadata."""
  store = _store(metadata_path)

  pushed = latest_artifacts(store, pipeline_name, pipeline_lib.PUSHER).get(
      spec_keys.PUSHED_MODEL_KEY)
  selection = latest_artifacts(store, pipeline_name, pipeline_lib.SELECTOR).get(
      spec_keys.SELECTION_KEY)
  selected = (_props(selection).get(spec_keys.PROP_SELECTED_VARIANT)
              if selection is not None else None)
  pushed_to = '-'
  if pushed is not None:
    props = _props(pushed)
    pushed_to = (props.get(spec_keys.PROP_PUSHED_DESTINATION, '')
                 if props.get(spec_keys.PROP_PUSHED) == 1
                 else f'not pushed: {props.get(spec_keys.PROP_PUSH_REASON, "")}')

  rows, baseline_accuracy = [], None
  for variant in pipeline_lib.VARIANTS:
    model = latest_artifacts(store, pipeline_name, pipeline_lib.int8_node(variant)).get(
        spec_keys.TFLITE_MODEL_KEY)
    if model is None:
      continue
    failed = failures.failure_of(model)
    if failed:  # Nothing was evaluated or measured; the run went on with the other variants.
      row = _row(variant, model, None, 'FAILED', '-')
      row.failed = failed
      rows.append(row)
      continue
    evaluator = latest_artifacts(store, pipeline_name, pipeline_lib.evaluator_node(variant))
    accuracy, blessed = {}, 'n/a'
    if 'evaluation' in evaluator:
      uri = evaluator['evaluation'].uri
      accuracy = evaluation.metric_values(uri, evaluation.gate_metric(uri))
      baseline_accuracy = accuracy.get(evaluation.BASELINE, baseline_accuracy)
    if 'blessing' in evaluator:
      blessing = _props(evaluator['blessing'])
      blessed = 'BLESSED' if blessing.get(spec_keys.PROP_BLESSED) == 1 else 'NOT_BLESSED'
    benchmark = latest_artifacts(store, pipeline_name, pipeline_lib.benchmark_node(variant)).get(
        spec_keys.BENCHMARK_KEY)
    p50, budget = None, '-'
    if benchmark is not None:
      bench = _props(benchmark)
      p50 = bench.get(spec_keys.PROP_P50_MS)
      budget = 'within' if bench.get(spec_keys.PROP_WITHIN_BUDGETS) == 1 else 'OVER'
    rows.append(_row(variant, model, accuracy.get(evaluation.CANDIDATE), blessed,
                     pushed_to if variant == selected else '-', p50, budget))
  baseline = latest_artifacts(store, pipeline_name, pipeline_lib.PTQ_FLOAT32).get(
      spec_keys.TFLITE_MODEL_KEY)
  if baseline is not None:
    rows.insert(0, _row('baseline', baseline, baseline_accuracy, 'baseline', '-'))
  released = _released_row(store, pipeline_name)
  if released is not None:
    rows.append(released)
  return rows


def _released_row(store: metadata_store.MetadataStore, pipeline_name: str) -> Optional[VariantRow]:
  """The model devices ran before this run, as the RegressionGate measured it, if there was one."""
  gate = latest_artifacts(store, pipeline_name, pipeline_lib.REGRESSION_GATE)
  model = gate.get(spec_keys.RELEASED_MODEL_KEY)
  version = _props(model).get(spec_keys.PROP_RELEASED_VERSION) if model is not None else None
  if version in (None, 'none'):
    return None
  accuracy = None
  status = _props(gate[spec_keys.BLESSING_KEY]).get(spec_keys.PROP_REGRESSION_STATUS)
  if status in (regression_executor.PASSED, regression_executor.REGRESSED):  # TFMA ran.
    uri = gate[spec_keys.EVALUATION_KEY].uri
    accuracy = evaluation.metric_values(uri, evaluation.gate_metric(uri)).get(
        evaluation.BASELINE)
  return _row(f'released v{version}', model, accuracy, 'released', '-')


def regression_report(metadata_path: str, pipeline_name: str) -> Optional[str]:
  """Where the latest run's RegressionGate report (index.html) is, if it ran."""
  gate = latest_artifacts(_store(metadata_path), pipeline_name, pipeline_lib.REGRESSION_GATE)
  if spec_keys.EVALUATION_KEY not in gate:
    return None
  return f'{gate[spec_keys.EVALUATION_KEY].uri}/{spec_keys.REPORT_HTML_FILE_NAME}'


def regression_outcome(metadata_path: str, pipeline_name: str) -> str:
  """The RegressionGate's verdict in the latest run, with its reason ('' when it did not run)."""
  blessing = latest_artifacts(_store(metadata_path), pipeline_name,
                              pipeline_lib.REGRESSION_GATE).get(spec_keys.BLESSING_KEY)
  if blessing is None:
    return ''
  props = _props(blessing)
  return (f'{props.get(spec_keys.PROP_REGRESSION_STATUS, "?")}: '
          f'{props.get(spec_keys.PROP_REASON, "")}')


def format_table(rows: List[VariantRow]) -> str:
  """A plain-text table of the rows, sizes also as ratios to the float32 baseline."""
  base = next((r for r in rows if r.variant == 'baseline'), None)

  def ratio(value, reference):
    return f' ({reference / value:.1f}x)' if base and value else ''

  header = ('variant', 'chain', 'sparsity', 'clusters', 'size (bytes)', 'gzip (bytes)',
            'accuracy', 'blessed', 'p50 ms', 'budgets', 'pushed to')
  cells = [header] + [
      (r.variant, r.chain, '-' if r.sparsity is None else f'{r.sparsity:.2f}',
       '-' if r.clusters is None else str(r.clusters),
       '-' if r.failed else f'{r.size_bytes:,}' + ratio(r.size_bytes,
                                                         base.size_bytes if base else 0),
       '-' if r.failed else f'{r.gzip_bytes:,}' + ratio(r.gzip_bytes,
                                                         base.gzip_bytes if base else 0),
       '-' if r.accuracy is None else f'{r.accuracy:.4f}', r.blessed,
       '-' if r.p50_ms is None else f'{r.p50_ms:.4f}', r.budget, r.pushed_to)
      for r in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
  lines = []
  for i, row in enumerate(cells):
    lines.append('  '.join(c.ljust(w) for c, w in zip(row, widths)) + '  ' + row[-1])
    if i == 0:
      lines.append('  '.join('-' * w for w in widths) + '  ' + '-' * len(header[-1]))
  failed = [r for r in rows if r.failed]
  if failed:
    lines.append('')
    lines.append(f'{len(failed)} variant(s) FAILED and were left out; the run went on with the '
                 'others:')
    lines += [f'  {r.variant}: {r.failed}' for r in failed]
  return '\n'.join(lines)
