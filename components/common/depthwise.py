"""DepthwiseConv2D kernels pruned and clustered through tfmot's extension points.

tfmot's pruning and clustering registries list DepthwiseConv2D with no weights to optimize, so
`prune_low_magnitude` and `cluster_weights` wrap it and leave its kernel dense: on a MobileNet
that is every depthwise kernel. tfmot's way to optimize a layer its registries do not cover is a
layer that says which weights to prune (`PrunableLayer.get_prunable_weights`) and cluster
(`ClusterableLayer.get_clusterable_weights`). OptimizableDepthwiseConv2D is DepthwiseConv2D with
those two methods: the optimizers swap it in (`optimizable`, weights kept) before wrapping, and
`restore` swaps plain DepthwiseConv2D layers back after the wrappers are stripped, so the saved
model holds only standard Keras layers.
"""
from typing import Callable, Optional

import tensorflow_model_optimization as tfmot
import tf_keras


class OptimizableDepthwiseConv2D(tf_keras.layers.DepthwiseConv2D,
                                 tfmot.sparsity.keras.PrunableLayer,
                                 tfmot.clustering.keras.ClusterableLayer):
  """DepthwiseConv2D whose depthwise kernel tfmot prunes and clusters (the bias stays as is)."""

  def get_prunable_weights(self):
    return [self.depthwise_kernel]

  def get_clusterable_weights(self):
    return [('depthwise_kernel', self.depthwise_kernel)]


def is_depthwise(layer: tf_keras.layers.Layer) -> bool:
  return isinstance(layer, tf_keras.layers.DepthwiseConv2D)


def _rebuilt(layer: tf_keras.layers.Layer, cls: type) -> tf_keras.layers.Layer:
  """A `cls` layer with the config and trained weights of `layer`."""
  new = cls.from_config(layer.get_config())
  new.build(layer.input_shape)
  new.set_weights(layer.get_weights())
  return new


def optimizable(layer: tf_keras.layers.Layer) -> tf_keras.layers.Layer:
  """For a DepthwiseConv2D, its OptimizableDepthwiseConv2D twin (same name and weights)."""
  if is_depthwise(layer) and not isinstance(layer, OptimizableDepthwiseConv2D):
    return _rebuilt(layer, OptimizableDepthwiseConv2D)
  return layer


def restore(model: tf_keras.Model,
            clone_function: Optional[Callable] = None) -> tf_keras.Model:
  """The model with every OptimizableDepthwiseConv2D back as a plain DepthwiseConv2D.

  Call it after strip_pruning / strip_clustering: those return the wrapped layer itself.
  """
  if not any(isinstance(layer, OptimizableDepthwiseConv2D) for layer in model.layers):
    return model

  def plain(layer):
    if isinstance(layer, OptimizableDepthwiseConv2D):
      return _rebuilt(layer, tf_keras.layers.DepthwiseConv2D)
    return clone_function(layer) if clone_function else layer

  return tf_keras.models.clone_model(model, clone_function=plain)


def listed_without_weights(registry: type, layer: tf_keras.layers.Layer) -> bool:
  """True for a layer a tfmot registry lists with no weights to optimize (BatchNormalization).

  Wrapping such a layer optimizes nothing, and its records (sparsity, unique values) would
  describe a BatchNormalization scale rather than a kernel. A DepthwiseConv2D is listed so too,
  but is optimized through OptimizableDepthwiseConv2D: callers check is_depthwise first.
  """
  # The registries' own table (class attribute) of the weights they optimize per layer type.
  return registry._LAYERS_WEIGHTS_MAP.get(type(layer)) == []  # pylint: disable=protected-access
