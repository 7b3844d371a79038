"""The artifact types tfx-edge adds to TFX's standard ones.

One module, so that producers and consumers (and MLMD queries) share one TYPE_NAME.

Kubeflow's V2 runtime re-creates a custom artifact by importing its TYPE_NAME as a class path,
and its compiler accepts only `<namespace>.<Title>` names. So each TYPE_NAME is the name under
which the `components` package exports the class.
"""
from tfx.types import artifact


class DeviceBenchmark(artifact.Artifact):
  """DeviceBenchmarker output: benchmark.json (every measurement) and index.html.

  Custom properties: `tfx_edge_within_budgets` (1 when every model is within the budgets; the TFMA
  verdict is the Evaluator's `blessed`), the budget reason, and the headline p50/p90 latency,
  peak memory and sizes.
  """
  TYPE_NAME = 'components.DeviceBenchmarkResult'


class VariantSelection(artifact.Artifact):
  """VariantSelector output: selection.json, index.html and the PNG plots."""
  TYPE_NAME = 'components.VariantSelectionResult'
