"""tfx-edge: TFX components that make a trained model small and fast for edge devices.

Public API::

    from components import Pruner, Clusterer, QATTrainer, PTQConverter, OTAPusher, TFLitePusher
    from components import DeviceBenchmarker, Budgets, MeasureSettings, VariantSelector

The component classes load on first use, so light users of the package (the device-side OTA
client, `tfx-edge ota ...`) do not import TFX.
"""
import importlib
import os

# tensorflow-model-optimization works only with Keras 2 (tf_keras). TensorFlow reads this variable
# once, at its first import, so it must be set before anything imports tensorflow.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

_COMPONENTS = {
    'Budgets': 'components.benchmarker.budgets',
    'DeviceBenchmarker': 'components.benchmarker.component',
    'MeasureSettings': 'components.benchmarker.budgets',
    'VariantSelector': 'components.selector.component',
    'Clusterer': 'components.clusterer.component',
    'OTAPusher': 'components.ota.component',
    'PTQConverter': 'components.ptq_converter.component',
    'Pruner': 'components.pruner.component',
    'QATTrainer': 'components.qat_trainer.component',
    'TFLitePusher': 'components.pusher.component',
}
# Artifact types, under the names their TYPE_NAME gives (see components/artifact_types.py).
_ARTIFACT_TYPES = {
    'DeviceBenchmarkResult': 'DeviceBenchmark',
    'VariantSelectionResult': 'VariantSelection',
}
__all__ = sorted([*_COMPONENTS, *_ARTIFACT_TYPES])


def __getattr__(name):
  if name in _COMPONENTS:
    return getattr(importlib.import_module(_COMPONENTS[name]), name)
  if name in _ARTIFACT_TYPES:
    return getattr(importlib.import_module('components.artifact_types'), _ARTIFACT_TYPES[name])
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
