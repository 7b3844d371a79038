"""Reads a finished run back from ML Metadata into the table `make demo` prints."""
import dataclasses
from typing import Dict, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components import keys
from components.gate import eval_config
from components.gate import results
from pipelines import pipeline as pipeline_lib


@dataclasses.dataclass
class VariantRow:
  """One converted model and what happened to it."""
  variant: str
  mode: str
  size_bytes: int
  accuracy: Optional[float]
  blessed: str
  pushed_to: str


def _props(artifact: metadata_store_pb2.Artifact) -> Dict[str, object]:
  out = {}
  for k, v in artifact.custom_properties.items():
    kind = v.WhichOneof('value')
    out[k] = getattr(v, kind) if kind else None
  return out


def latest_outputs(store: metadata_store.MetadataStore, pipeline_name: str,
                   node_id: str) -> Dict[str, metadata_store_pb2.Artifact]:
  """Output artifacts, by output key, of the newest execution of one pipeline node."""
  context = store.get_context_by_type_and_name('node', f'{pipeline_name}.{node_id}')
  if context is None:
    return {}
  executions = store.get_executions_by_context(context.id)
  if not executions:
    return {}
  latest = max(executions, key=lambda e: e.id)
  events = [
      e for e in store.get_events_by_execution_ids([latest.id])
      if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
  ]
  artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
  return {e.path.steps[0].key: artifacts[e.artifact_id] for e in events if e.path.steps}


def summarize(metadata_path: str, pipeline_name: str) -> List[VariantRow]:
  """The float32 baseline and each gated variant of the latest run, from ML Metadata."""
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = metadata_path
  config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
  store = metadata_store.MetadataStore(config)

  evaluation = latest_outputs(store, pipeline_name, pipeline_lib.EVALUATOR_INT8)
  accuracy = {}
  if 'evaluation' in evaluation:
    accuracy = results.metric_values(evaluation['evaluation'].uri, eval_config.ACCURACY_METRIC)
  blessing = evaluation.get('blessing')
  blessed = 'n/a'
  if blessing is not None:
    blessed = 'BLESSED' if _props(blessing).get(keys.PROP_BLESSED) == 1 else 'NOT_BLESSED'
  pushed = latest_outputs(store, pipeline_name, pipeline_lib.PUSHER_INT8).get(
      keys.PUSHED_MODEL_KEY)
  pushed_to = '-'
  if pushed is not None:
    props = _props(pushed)
    pushed_to = (props.get(keys.PROP_PUSHED_DESTINATION, '') if props.get(keys.PROP_PUSHED) == 1
                 else f'not pushed: {props.get(keys.PROP_PUSH_REASON, "")}')

  rows = []
  for node_id, model_name, row_blessed, row_pushed in (
      (pipeline_lib.PTQ_FLOAT32, eval_config.BASELINE, 'baseline', '-'),
      (pipeline_lib.PTQ_INT8, eval_config.CANDIDATE, blessed, pushed_to)):
    model = latest_outputs(store, pipeline_name, node_id).get(keys.TFLITE_MODEL_KEY)
    if model is None:
      continue
    props = _props(model)
    rows.append(
        VariantRow(
            variant=node_id,
            mode=str(props.get(keys.PROP_MODE, '?')),
            size_bytes=int(props.get(keys.PROP_SIZE_BYTES, 0)),
            accuracy=accuracy.get(model_name),
            blessed=row_blessed,
            pushed_to=row_pushed))
  return rows


def format_table(rows: List[VariantRow]) -> str:
  """A plain-text table of the rows."""
  header = ('variant', 'mode', 'size (bytes)', 'accuracy', 'blessed', 'pushed to')
  cells = [header] + [(r.variant, r.mode, f'{r.size_bytes:,}',
                       '-' if r.accuracy is None else f'{r.accuracy:.4f}', r.blessed, r.pushed_to)
                      for r in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
  lines = []
  for i, row in enumerate(cells):
    lines.append('  '.join(c.ljust(w) for c, w in zip(row, widths)) + '  ' + row[-1])
    if i == 0:
      lines.append('  '.join('-' * w for w in widths) + '  ' + '-' * len(header[-1]))
  return '\n'.join(lines)
