"""Quantization-aware training logic on tf_keras models (tfmot). No TFX needed."""
import dataclasses
import logging
from typing import List, Optional, Sequence, Tuple

import tensorflow as tf
import tensorflow_model_optimization as tfmot
# The registry that decides which layers default 8-bit QAT supports; not re-exported by tfmot.
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_registry)
import tf_keras

from components.common import lineage
from components.common import validation
from components.common.finetune.config import OptimizationConfig
from components.errors import ConfigError

_LOG = logging.getLogger(__name__)

AUTO = 'auto'
DEFAULT = 'default'
PRUNE_PRESERVE = 'prune_preserve'  # PQAT
CLUSTER_PRESERVE = 'cluster_preserve'  # CQAT
PRUNE_CLUSTER_PRESERVE = 'prune_cluster_preserve'  # PCQAT
SCHEMES = (AUTO, DEFAULT, PRUNE_PRESERVE, CLUSTER_PRESERVE, PRUNE_CLUSTER_PRESERVE)


@dataclasses.dataclass(frozen=True)
class QATConfig(OptimizationConfig):
  """How to train with fake quantization.

  Attributes:
    scheme: `auto` (chosen from the model's history: pruned -> prune_preserve, clustered ->
      cluster_preserve, both -> prune_cluster_preserve, neither -> default), or one of those.
    skip_layers: regex; matching layers stay float.
    allow_float_layers: leave layers tfmot cannot quantize in float (logged by name) instead of
      failing before training.
  """
  scheme: str = AUTO
  skip_layers: Optional[str] = None
  allow_float_layers: bool = False

  def __post_init__(self):
    if self.scheme not in SCHEMES:
      raise ConfigError(f'scheme={self.scheme!r} is not a QAT scheme; accepted: '
                       f'{", ".join(SCHEMES)}.')
    if not isinstance(self.allow_float_layers, bool):
      raise ConfigError(f'allow_float_layers={self.allow_float_layers!r} must be True or False.')
    validation.regex('skip_layers', self.skip_layers)


def choose_scheme(requested: str, history: Sequence[str]) -> str:
  """The scheme to use: the requested one, or for `auto` the one the model's history calls for."""
  if requested != AUTO:
    return requested
  pruned, clustered = lineage.PRUNE in history, lineage.CLUSTER in history
  if pruned and clustered:
    return PRUNE_CLUSTER_PRESERVE
  if clustered:
    return CLUSTER_PRESERVE
  if pruned:
    return PRUNE_PRESERVE
  return DEFAULT


def _scheme_object(scheme: str) -> tfmot.quantization.keras.QuantizeScheme:
  combine = tfmot.experimental.combine
  return {
      DEFAULT: tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme,
      PRUNE_PRESERVE: combine.Default8BitPrunePreserveQuantizeScheme,
      CLUSTER_PRESERVE: lambda: combine.Default8BitClusterPreserveQuantizeScheme(False),
      PRUNE_CLUSTER_PRESERVE: lambda: combine.Default8BitClusterPreserveQuantizeScheme(True),
  }[scheme]()


def plan(model: tf_keras.Model, config: QATConfig) -> Tuple[List[str], List[str]]:
  """(layers to quantize, layers left float), checked before any training.

  Raises:
    ConfigError: a layer tfmot cannot quantize, when allow_float_layers is False; the message
      names the layer, its type and the two ways out.
  """
  registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()
  skip = validation.regex('skip_layers', config.skip_layers)
  quantized, floats = [], []
  for layer in model.layers:
    if isinstance(layer, tf_keras.layers.InputLayer):
      continue
    if casts_integer_input(model, layer):
      # Part of the input, as the int8 converter treats it: the TFLite model keeps the integer
      # input, casts it and quantizes the result; there is nothing to train here.
      _LOG.info('QAT: layer %r casts integer model inputs to float; left as part of the input',
                layer.name)
      continue
    if skip and skip.search(layer.name):
      _LOG.info('QAT: layer %r stays float (matches skip_layers)', layer.name)
      floats.append(layer.name)
    elif registry.supports(layer):
      quantized.append(layer.name)
    elif (conv := _folded_conv(model, layer)) is not None and conv.name in quantized:
      # tfmot's default 8-bit transforms fold Conv/DepthwiseConv + BatchNormalization (+ ReLU)
      # into one quantized unit when both are annotated; the registry alone does not know BN.
      quantized.append(layer.name)
    elif config.allow_float_layers:
      _LOG.warning('QAT: layer %r (%s) cannot be quantized by tfmot; left float '
                   '(allow_float_layers=True)', layer.name, type(layer).__name__)
      floats.append(layer.name)
    else:
      raise ConfigError(
          f'QAT: layer {layer.name!r} of type {type(layer).__name__} cannot be quantized by '
          'tensorflow-model-optimization (supported: Conv2D, DepthwiseConv2D, Dense, pooling, '
          'activations, BatchNormalization after conv, Reshape/Flatten and similar). Skip it with '
          'skip_layers, or pass allow_float_layers=True to leave it float (the runners: '
          '--skip-layers, --qat-allow-float-layers).')
  return quantized, floats


_FOLDABLE_CONVS = (tf_keras.layers.Conv2D, tf_keras.layers.DepthwiseConv2D)


def _folded_conv(model: tf_keras.Model,
                 layer: tf_keras.layers.Layer) -> Optional[tf_keras.layers.Layer]:
  """The Conv2D/DepthwiseConv2D a BatchNormalization layer folds into in `model`, or None."""
  if not isinstance(layer, tf_keras.layers.BatchNormalization):
    return None
  # Only this model's nodes: a layer a clone reuses (strip_pruning, strip_clustering and
  # clone_model keep unchanged layers) has a node in each model that calls it. Keras keys a
  # model's nodes as '<layer name>_ib-<index>' (tf_keras' functional._make_node_key).
  own = getattr(model, '_network_nodes', None)
  nodes = [node for i, node in enumerate(layer.inbound_nodes)
           if own is None or f'{layer.name}_ib-{i}' in own]
  if len(nodes) != 1:
    return None
  inbound = tf.nest.flatten(nodes[0].inbound_layers)
  if len(inbound) == 1 and isinstance(inbound[0], _FOLDABLE_CONVS):
    return inbound[0]
  return None


def folded_batchnorm(model: tf_keras.Model, quantized_layers: Sequence[str]) -> List[List[str]]:
  """[conv, batchnorm] pairs that QAT trains as one folded unit (both in quantized_layers)."""
  chosen = set(quantized_layers)
  pairs = []
  for layer in model.layers:
    conv = _folded_conv(model, layer)
    if conv is not None and layer.name in chosen and conv.name in chosen:
      pairs.append([conv.name, layer.name])
  return pairs


def casts_integer_input(model: tf_keras.Model, layer: tf_keras.layers.Layer) -> bool:
  """True for a layer without weights that turns integer model inputs into floats (a cast).

  tfmot has no quantize config for such a layer (a `tf.cast` op layer or a Lambda), and needs
  none: its inputs are integers, and the layers after it quantize its float output.
  """
  if layer.weights:
    return False
  model_inputs = {id(t) for t in model.inputs}
  # Only the nodes of this model: a layer that a clone reuses has nodes in the clone too.
  nodes = [node for node in layer.inbound_nodes
           if node.keras_inputs and all(id(t) in model_inputs for t in node.keras_inputs)]
  return bool(nodes) and all(
      all(tf.as_dtype(t.dtype).is_integer for t in node.keras_inputs) and
      all(tf.as_dtype(t.dtype).is_floating for t in tf.nest.flatten(node.outputs))
      for node in nodes)


def quantize(model: tf_keras.Model, config: QATConfig, scheme: str,
             quantized_layers: Sequence[str]) -> tf_keras.Model:
  """Annotates the chosen layers and applies the scheme; fine-tune the result (no strip needed)."""
  chosen = set(quantized_layers)

  def annotate(layer):
    if layer.name in chosen:
      return tfmot.quantization.keras.quantize_annotate_layer(layer)
    return layer

  annotated = tf_keras.models.clone_model(model, clone_function=annotate)
  try:
    with tfmot.quantization.keras.quantize_scope():
      return tfmot.quantization.keras.quantize_apply(annotated, _scheme_object(scheme))
  except ValueError as e:
    lambdas = [layer.name for layer in model.layers if isinstance(layer, tf_keras.layers.Lambda)]
    if not lambdas or 'Lambda' not in str(e):
      raise
    # tfmot rebuilds the whole model from its config, and tf_keras refuses to rebuild a Python
    # lambda from a config (safe mode), even the user's own.
    raise ConfigError(
        f'QAT: tensorflow-model-optimization cannot rebuild the Lambda layers {lambdas} (it '
        'rebuilds the model from its config, and tf_keras refuses a Python lambda there). Write '
        'them as TensorFlow ops in the functional model (for a cast: '
        'tf.cast(inputs, tf.float32)) or as a layer class, or leave QAT out.') from e
