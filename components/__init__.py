"""tfx-edge: TFX components that make a trained model small and fast for edge devices.

Public API::

    from components import Pruner, Clusterer, QATTrainer, PTQConverter, TFLitePusher
"""
import os

# tensorflow-model-optimization works only with Keras 2 (tf_keras). TensorFlow reads this variable
# once, at its first import, so it must be set before anything imports tensorflow.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

from components.clusterer.component import Clusterer  # noqa: E402
from components.ptq_converter.component import PTQConverter  # noqa: E402
from components.pruner.component import Pruner  # noqa: E402
from components.pusher.component import TFLitePusher  # noqa: E402
from components.qat_trainer.component import QATTrainer  # noqa: E402

__all__ = ['Clusterer', 'PTQConverter', 'Pruner', 'QATTrainer', 'TFLitePusher']
