"""tfx-edge: TFX components that make a trained model small and fast for edge devices.

Public API::

    from components import Pruner, Clusterer, QATTrainer, PTQConverter    # optimize, convert
    from components import GateExamplesGen                                 # feed the gate
    from components import RegressionGate                  # no worse than what devices run
    from components import DeviceBenchmarker, VariantSelector              # measure, choose
    from components import TFLitePusher, OTAPusher                         # publish
    from components import (FineTuneConfig, PruningConfig, ClusteringConfig, QATConfig,
                            Budgets, MeasureSettings, DeltaPolicy)         # their configs
    from components import TfxEdgeError, ConfigError                       # see components.errors

Everything loads on first use, so light users of the package (the device-side OTA client,
`tfx-edge ota ...`) do not import TFX.
"""
import importlib
import os

# tensorflow-model-optimization works only with Keras 2 (tf_keras). TensorFlow reads this variable
# once, at its first import, so it must be set before anything imports tensorflow.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

_PUBLIC = {
    # Components.
    'Clusterer': 'components.clusterer.component',
    'DeviceBenchmarker': 'components.benchmarker.component',
    'GateExamplesGen': 'components.gate.component',
    'OTAPusher': 'components.ota.component',
    'PTQConverter': 'components.ptq_converter.component',
    'Pruner': 'components.pruner.component',
    'QATTrainer': 'components.qat_trainer.component',
    'RegressionGate': 'components.regression_gate.component',
    'TFLitePusher': 'components.pusher.component',
    'VariantSelector': 'components.selector.component',
    # Their configuration classes.
    'Budgets': 'components.benchmarker.budgets',
    'ClusteringConfig': 'components.clusterer.clustering',
    'DeltaPolicy': 'components.ota.repository',
    'FineTuneConfig': 'components.common.finetune.config',
    'MeasureSettings': 'components.benchmarker.budgets',
    'PruningConfig': 'components.pruner.pruning',
    'QATConfig': 'components.qat_trainer.qat',
    # The errors every caller may want to catch.
    'ConfigError': 'components.errors',
    'TfxEdgeError': 'components.errors',
}
# Artifact types, under the names their TYPE_NAME gives (see components/artifact_types.py).
_ARTIFACT_TYPES = {
    'DeviceBenchmarkResult': 'DeviceBenchmark',
    'VariantSelectionResult': 'VariantSelection',
}
__all__ = sorted([*_PUBLIC, *_ARTIFACT_TYPES])


def __getattr__(name):
  if name in _PUBLIC:
    return getattr(importlib.import_module(_PUBLIC[name]), name)
  if name in _ARTIFACT_TYPES:
    return getattr(importlib.import_module('components.artifact_types'), _ARTIFACT_TYPES[name])
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
