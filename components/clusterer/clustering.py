"""Weight clustering logic on tf_keras models (tensorflow-model-optimization). No TFX needed."""
import dataclasses
import logging
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow_model_optimization as tfmot
# Not re-exported by tfmot's public API: the table of the weights it clusters per layer type.
from tensorflow_model_optimization.python.core.clustering.keras import clustering_registry
import tf_keras

from components.common import depthwise
from components.common import validation
from components.common.finetune.config import OptimizationConfig
from components.common.finetune.config import weighted_layers
from components.errors import ConfigError

_LOG = logging.getLogger(__name__)
_INIT = tfmot.clustering.keras.CentroidInitialization
CENTROID_INITS = {
    'kmeans++': _INIT.KMEANS_PLUS_PLUS,
    'linear': _INIT.LINEAR,
    'density': _INIT.DENSITY_BASED,
    'random': _INIT.RANDOM,
}


@dataclasses.dataclass(frozen=True)
class ClusteringConfig(OptimizationConfig):
  """How to cluster.

  Attributes:
    number_of_clusters: unique values per weight tensor (per channel with per_channel), >= 2.
    centroid_init: one of CENTROID_INITS.
    per_channel: cluster each output channel of Conv2D layers separately (more accurate; up to
      number_of_clusters values per channel).
    preserve_sparsity: keep pruned zeros at zero; None means "yes when the model was pruned".
    skip_layers: regex; layers whose name matches are not clustered.
  """
  number_of_clusters: int = 16
  centroid_init: str = 'kmeans++'
  per_channel: bool = False
  preserve_sparsity: Optional[bool] = None
  skip_layers: Optional[str] = None

  def __post_init__(self):
    n = self.number_of_clusters
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
      raise ConfigError(f'number_of_clusters={n!r} is not accepted; it must be an integer >= 2.')
    if self.centroid_init not in CENTROID_INITS:
      raise ConfigError(f'centroid_init={self.centroid_init!r} is not accepted; accepted: '
                       f'{", ".join(CENTROID_INITS)}.')
    if self.preserve_sparsity not in (None, True, False):
      raise ConfigError(
          f'preserve_sparsity={self.preserve_sparsity!r} must be True, False or None.')
    validation.regex('skip_layers', self.skip_layers)


def _per_channel(layer: tf_keras.layers.Layer, config: ClusteringConfig) -> bool:
  # tfmot clusters per channel only for Conv2D kernels.
  return config.per_channel and isinstance(layer, tf_keras.layers.Conv2D)


def too_small(layer: tf_keras.layers.Layer, config: ClusteringConfig,
              preserve_sparsity: bool) -> str:
  """Why `layer` has too few weights for config.number_of_clusters, or '' when it has enough.

  k-means cannot place more centroids than there are values: tfmot fails with a raw
  `KmeansPlusPlusInitialization` error for a Dense layer on a few inputs. With preserve_sparsity
  only the non-zero weights are clustered, so they must number at least as many.
  """
  kernel = layer.get_weights()[0]
  groups = ([kernel[..., c] for c in range(kernel.shape[-1])] if _per_channel(layer, config)
            else [kernel])
  counts = [int((g != 0).sum()) if preserve_sparsity else g.size for g in groups]
  what = 'non-zero weights' if preserve_sparsity else 'weights'
  where = ' per channel' if len(groups) > 1 else ''
  if min(counts) < config.number_of_clusters:
    return (f'{min(counts)} {what}{where}, fewer than number_of_clusters='
            f'{config.number_of_clusters}')
  return ''


def clusterable_layers(model: tf_keras.Model, config: ClusteringConfig,
                       preserve_sparsity: bool = False) -> Tuple[List[str], Dict[str, str]]:
  """(layers `cluster` will wrap, {layer left unclustered: why}), after skips (all logged)."""
  chosen, small = [], {}
  for layer in weighted_layers(model, config.skip_layers, 'clustering'):
    if not depthwise.is_depthwise(layer) and depthwise.listed_without_weights(
        clustering_registry.ClusteringRegistry, layer):
      _LOG.info('clustering: layer %r (%s) has no kernel tfmot clusters; left as is',
                layer.name, type(layer).__name__)
      continue
    reason = too_small(layer, config, preserve_sparsity)
    if reason:
      _LOG.warning('clustering: layer %r left unclustered: %s', layer.name, reason)
      small[layer.name] = reason
    else:
      chosen.append(layer.name)
  return chosen, small


def cluster(model: tf_keras.Model, config: ClusteringConfig,
            preserve_sparsity: bool) -> tf_keras.Model:
  """Wraps the chosen layers with cluster_weights; fine-tune, then strip()."""
  chosen, _ = clusterable_layers(model, config, preserve_sparsity)
  if not chosen:
    raise ConfigError(f'clustering: no layer left to cluster (skip_layers={config.skip_layers!r}, '
                      f'number_of_clusters={config.number_of_clusters}).')

  def wrap(layer):
    if layer.name not in chosen:
      return layer
    # A DepthwiseConv2D becomes its twin that tells tfmot to cluster the depthwise kernel.
    return tfmot.clustering.keras.cluster_weights(
        depthwise.optimizable(layer),
        number_of_clusters=config.number_of_clusters,
        cluster_centroids_init=CENTROID_INITS[config.centroid_init],
        preserve_sparsity=preserve_sparsity,
        cluster_per_channel=_per_channel(layer, config))

  return tf_keras.models.clone_model(model, clone_function=wrap)


def strip(model: tf_keras.Model) -> tf_keras.Model:
  """Removes the clustering wrappers, leaving each kernel with its clustered values (depthwise
  layers plain again)."""
  return depthwise.restore(tfmot.clustering.keras.strip_clustering(model))


def unique_weights(model: tf_keras.Model, layer_names: List[str]) -> Dict[str, int]:
  """{layer: number of distinct kernel values}."""
  return {name: int(np.unique(model.get_layer(name).get_weights()[0]).size)
          for name in layer_names}
