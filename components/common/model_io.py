"""The files inside Model artifacts: a Trainer's Keras SavedModel, a converter's TFLite model.

A Trainer's Model artifact holds either a tf_keras Functional or Sequential model, which every
component can use, or another SavedModel (Keras 3, a tf.Module, a subclassed tf_keras model),
which only PTQConverter can: it converts from the SavedModel's `serving_default` signature
(load_model_source), while the optimizers, which need tfmot, refuse it (load_keras_model).
"""
import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras
from tfx.utils import path_utils

from components import spec_keys
from components.errors import DataError
from components.errors import ModelLoadError


def serving_model_dir(model_uri: str) -> str:
  """The SavedModel directory inside a Model artifact (`Format-Serving`, as TFX writes it)."""
  return path_utils.serving_model_path(model_uri)


# The signature PTQConverter converts a model from when it is not a tf_keras Functional or
# Sequential model. TFMA assumes this key too: it strips `serving_default_` from a TFLite input's
# name to find the feature that feeds it.
SERVING_SIGNATURE = 'serving_default'
# What a Model artifact holds, which decides the components that can use it.
KERAS = 'tf_keras'  # A tf_keras Functional or Sequential model: every component.
SAVED_MODEL = 'saved_model'  # Only a SavedModel's serving signature: PTQConverter alone.
# The way out for a model that tensorflow-model-optimization cannot take.
PTQ_ONLY_ROUTE = (
    "PTQConverter does not need tf_keras: it converts such a model from its SavedModel's "
    f"{SERVING_SIGNATURE!r} signature, so build the PTQ variant only (variants=['ptq'] in "
    'create_pipeline, --variants ptq with pipelines.run_local and pipelines.run_kubeflow).')


@dataclasses.dataclass(frozen=True)
class ModelSource:
  """What PTQConverter converts: the tf_keras model, or else the SavedModel's serving signature.

  Attributes:
    uri: the Model artifact.
    path: its SavedModel directory.
    keras_model: the tf_keras Functional or Sequential model; None on the PTQ-only route.
    not_keras: why the artifact holds no such model ('' when it does).
    inputs: the inputs, one named tf.TensorSpec each, named as TFLite and TFMA will name them
      (for a signature: its input keys, which must be the features' names).
    outputs: the outputs, one named tf.TensorSpec each (for a signature: its output keys).
  """
  uri: str
  path: str
  keras_model: Optional[tf_keras.Model]
  not_keras: str
  inputs: Tuple[tf.TensorSpec, ...]
  outputs: Tuple[tf.TensorSpec, ...]

  @property
  def kind(self) -> str:
    """KERAS or SAVED_MODEL."""
    return KERAS if self.keras_model is not None else SAVED_MODEL

  @property
  def input_names(self) -> List[str]:
    return [spec.name for spec in self.inputs]

  @property
  def convertible(self) -> Union[tf_keras.Model, str]:
    """What conversion.convert takes: the tf_keras model, or the SavedModel directory."""
    return self.keras_model if self.keras_model is not None else self.path

  def describe(self) -> str:
    """One line for the log: the route, and the signature's inputs and outputs."""
    def specs(tensors):
      return ', '.join(f'{t.name} {t.dtype.name}{t.shape}' for t in tensors)
    if self.keras_model is not None:
      return f'a tf_keras {type(self.keras_model).__name__} model'
    return (f'the SavedModel signature {SERVING_SIGNATURE!r} (inputs: {specs(self.inputs)}; '
            f'outputs: {specs(self.outputs)})')


def load_model_source(model_uri: str) -> ModelSource:
  """What a Model artifact holds, loaded for PTQConverter.

  A tf_keras Functional or Sequential model is loaded as such (load_keras_model's checks). Any
  other SavedModel (Keras 3 `model.export`, `tf.saved_model.save` of a tf.Module, a subclassed
  tf_keras model) is described by its `serving_default` signature: PTQ needs no Keras, only the
  signature, whose input names must be the features' names (TFMA feeds TFLite inputs by name).

  Raises:
    ModelLoadError: no SavedModel, an unreadable one, no `serving_default` signature, a string
      input (a signature that parses serialized tf.Examples), or NaN or Inf in the weights.
  """
  path = _saved_model_path(model_uri)
  model, (not_keras, _) = _try_keras(path)
  if model is not None:
    _check_finite_weights(model, model_uri)
    return ModelSource(model_uri, path, model, '', input_specs(model), _output_specs(model))
  try:
    loaded = tf.saved_model.load(path)
  except Exception as e:  # TF raises many types for unreadable SavedModels.
    raise ModelLoadError(
        f'Model artifact {model_uri}: {not_keras}, and it cannot be loaded as a SavedModel '
        f'either: {type(e).__name__}: {e}. Save the model with model.save(dir) (tf_keras), '
        'model.export(dir) (Keras 3) or tf.saved_model.save(module, dir, signatures=...).') from e
  # Why the SavedModel's signature is what gets converted, for the messages below.
  route = (f'Model artifact {model_uri}: the SavedModel at {path} holds no tf_keras Functional or '
           'Sequential model, so PTQConverter converts it from its')
  signatures = dict(loaded.signatures)
  if SERVING_SIGNATURE not in signatures:
    raise ModelLoadError(
        f'{route} {SERVING_SIGNATURE!r} signature, which it lacks (its signatures: '
        f'{sorted(signatures) or "none"}). Export it with one: model.export(dir) (Keras 3), or '
        f'tf.saved_model.save(module, dir, signatures={{{SERVING_SIGNATURE!r}: module.serve}}) '
        'with @tf.function(input_signature=[tf.TensorSpec(shape, dtype, name=FEATURE)]).')
  function = signatures[SERVING_SIGNATURE]
  inputs = tuple(tf.TensorSpec(spec.shape, spec.dtype, name)
                 for name, spec in function.structured_input_signature[1].items())
  outputs = tuple(tf.TensorSpec(spec.shape, spec.dtype, name)
                  for name, spec in function.structured_outputs.items())
  strings = [spec.name for spec in inputs if spec.dtype == tf.string]
  if strings:
    raise ModelLoadError(
        f'{route} {SERVING_SIGNATURE!r} signature, whose inputs {strings} are strings: a signature '
        'that parses serialized tf.Examples, which TFLite cannot run. Export a signature that '
        'takes the features themselves, one input per feature named after it '
        '(keras.Input(name=...) or tf.TensorSpec(name=...)); parse tf.Examples outside the model.')
  _check_finite_variables(path, model_uri)
  return ModelSource(model_uri, path, None, not_keras, inputs, outputs)


def load_keras_model(model_uri: str) -> tf_keras.Model:
  """Reloads the Keras 2 model from a Model artifact's SavedModel, for tfmot (the optimizers).

  Args:
    model_uri: URI of a Model artifact, as written by the TFX Trainer.

  Returns:
    The tf_keras Functional or Sequential model (not compiled for training).

  Raises:
    ModelLoadError: no SavedModel, an unreadable one, one that is not a Keras 2
      Functional/Sequential model (the message names the PTQ-only route), or one with NaN or
      Inf in its weights.
  """
  path = _saved_model_path(model_uri)
  model, not_keras = _try_keras(path)
  if model is None:
    what, fix = not_keras
    raise ModelLoadError(
        f'Model artifact {model_uri}: {what}. tensorflow-model-optimization (Pruner, Clusterer, '
        f'QATTrainer) supports tf_keras Functional and Sequential models only: {fix}. Or: '
        f'{PTQ_ONLY_ROUTE}')
  _check_finite_weights(model, model_uri)
  return model


def _saved_model_path(model_uri: str) -> str:
  """The artifact's SavedModel directory; ModelLoadError when it holds none."""
  path = serving_model_dir(model_uri)
  if not tf.io.gfile.exists(os.path.join(path, 'saved_model.pb')):
    raise ModelLoadError(
        f'Model artifact {model_uri}: no SavedModel at {path} (expected saved_model.pb). The '
        'Trainer module must save the model with model.save(fn_args.serving_model_dir).')
  return path


def _try_keras(path: str) -> Tuple[Optional[tf_keras.Model], Tuple[str, str]]:
  """(the tf_keras Functional/Sequential model, ('', '')), or (None, (what it is, the fix))."""
  if not tf.io.gfile.exists(os.path.join(path, 'keras_metadata.pb')):
    return None, (
        f'the SavedModel at {path} has no Keras 2 metadata (keras_metadata.pb), so it was not '
        'saved from a tf_keras model: Keras 3 (keras.Model.export, model.save("*.keras")) and '
        'tf.saved_model.save write none',
        'build the model with `import tf_keras` (or TF_USE_LEGACY_KERAS=1) and save it with '
        'model.save(dir)')
  try:
    # quantize_scope knows the wrapper layers a QATTrainer's model is saved with.
    with tfmot.quantization.keras.quantize_scope():
      model = tf_keras.models.load_model(path, compile=False)
  except Exception as e:  # Keras raises many types for unreadable models.
    return None, (f'the SavedModel at {path} cannot be reloaded as a Keras 2 (tf_keras) model: '
                  f'{type(e).__name__}: {e}',
                  'save it from a tf_keras model with model.save(dir) (SavedModel format)')
  if not isinstance(model, tf_keras.Model) or not (
      isinstance(model, tf_keras.Sequential) or getattr(model, '_is_graph_network', False)):
    return None, (f'reloaded a {type(model).__name__}, a subclassed model',
                  'rebuild it with the functional API (tf_keras.Model(inputs, outputs))')
  return model, ('', '')


def _check_finite_weights(model: tf_keras.Model, model_uri: str) -> None:
  """Raises ModelLoadError naming the first layer whose weights hold NaN or Inf.

  Fine-tuning such a model only spreads the NaNs, and quantization ranges computed from them are
  meaningless, so every component stops here rather than produce a broken model.
  """
  for layer in model.layers:
    for weight in layer.weights:
      value = np.asarray(weight.numpy())
      if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
        bad = int(np.sum(~np.isfinite(value)))
        raise ModelLoadError(
            f'Model artifact {model_uri}: layer {layer.name!r} holds {bad} NaN or Inf values of '
            f'{value.size} in weight {weight.name!r}. Its training diverged: retrain it (for '
            'example with a lower learning rate or gradient clipping) and check the training data '
            'for NaN or Inf.')


def _check_finite_variables(path: str, model_uri: str) -> None:
  """_check_finite_weights for a SavedModel without Keras: its checkpoint's float variables."""
  try:
    reader = tf.train.load_checkpoint(os.path.join(path, 'variables', 'variables'))
  except (tf.errors.NotFoundError, ValueError):  # No variables: a model of constants only.
    return
  for key, dtype in sorted(reader.get_variable_to_dtype_map().items()):
    if not dtype.is_floating:
      continue
    value = np.asarray(reader.get_tensor(key))
    if not np.all(np.isfinite(value)):
      bad = int(np.sum(~np.isfinite(value)))
      name = key.replace('/.ATTRIBUTES/VARIABLE_VALUE', '')
      raise ModelLoadError(
          f'Model artifact {model_uri}: variable {name!r} of the SavedModel at {path} holds {bad} '
          f'NaN or Inf values of {value.size}. Its training diverged: retrain it (for example '
          'with a lower learning rate or gradient clipping) and check the training data for NaN '
          'or Inf.')


# A model, as far as its inputs and outputs go: a tf_keras model, or a ModelSource (which may
# describe a SavedModel signature). input_specs also takes the named tf.TensorSpecs themselves.
AnyModel = Union[tf_keras.Model, ModelSource]


def input_specs(model: Union[AnyModel, Sequence[tf.TensorSpec]]) -> Tuple[tf.TensorSpec, ...]:
  """The inputs a model reads, one tf.TensorSpec each, named after the feature it reads."""
  if isinstance(model, ModelSource):
    return model.inputs
  if isinstance(model, (list, tuple)):
    return tuple(model)
  return tuple(tf.TensorSpec(tensor.shape, tensor.dtype, name)
               for name, tensor in zip(model.input_names, model.inputs))


def _output_specs(model: tf_keras.Model) -> Tuple[tf.TensorSpec, ...]:
  return tuple(tf.TensorSpec(tensor.shape, tensor.dtype, name)
               for name, tensor in zip(model.output_names, model.outputs))


def num_classes(model: AnyModel) -> Optional[int]:
  """The number of classes of a classifier: the units of its single output, when there are 2+.

  None when the model has several outputs or one output unit (a regression or a binary sigmoid
  output, whose 0/1 labels are not class indices into the output), or an output whose last
  dimension is unknown.
  """
  if len(model.outputs) != 1:
    return None
  units = model.outputs[0].shape[-1] if model.outputs[0].shape.rank else None
  return units if units is not None and units >= 2 else None


def input_feature_spec(
    model: Union[AnyModel, Sequence[tf.TensorSpec]]) -> Dict[str, tf.io.FixedLenFeature]:
  """A tf.Example parsing spec for the model's inputs, derived from their names and shapes.

  Model inputs are named after the features they read (the module-file contract; for a
  SavedModel, its signature's input names), so the model alone says how to parse calibration
  examples.
  """
  spec = {}
  for tensor in input_specs(model):
    name = tensor.name
    dtype = tf.as_dtype(tensor.dtype)
    if dtype.is_floating:
      parse_dtype = tf.float32
    elif dtype.is_integer or dtype.is_bool:
      parse_dtype = tf.int64
    else:
      parse_dtype = tf.string
    shape = tensor.shape[1:]
    if not shape.is_fully_defined():
      raise DataError(f'model input {name!r} has shape {tensor.shape}; calibration needs every '
                      'dimension but the batch dimension to be fixed.')
    spec[name] = tf.io.FixedLenFeature(shape.as_list(), parse_dtype)
  return spec


def save_keras_model(model: tf_keras.Model, serving_dir: str) -> None:
  """Saves a model so the next component (or TF Serving) can use it.

  The SavedModel gets a `serving_default` signature that parses serialized tf.Examples with the
  spec derived from the model inputs, like the Trainer module's, and the Keras metadata that
  `load_keras_model` needs.
  """
  spec = input_feature_spec(model)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def serve_tf_examples(serialized):
    return {'outputs': model(tf.io.parse_example(serialized, spec))}

  model.save(serving_dir, save_format='tf', signatures={'serving_default': serve_tf_examples})


def tflite_paths(model_uri: str) -> Dict[str, str]:
  """Where a converted model's bytes go in its Model artifact.

  `serving`: Format-Serving/tflite, where TFMA and the TFX Evaluator load a TFLite model;
  `plain`: model.tflite, the same bytes under the name people and device tools expect.
  """
  return {'serving': os.path.join(serving_model_dir(model_uri), spec_keys.TFLITE_FILE_NAME),
          'plain': os.path.join(model_uri, spec_keys.PLAIN_TFLITE_FILE_NAME)}


def write_tflite(tflite_model: bytes, model_uri: str) -> None:
  """Writes a converted model into a Model artifact (both paths of tflite_paths)."""
  tf.io.gfile.makedirs(serving_model_dir(model_uri))
  for path in tflite_paths(model_uri).values():
    with tf.io.gfile.GFile(path, 'wb') as f:
      f.write(tflite_model)


def read_tflite(model_uri: str, reader: str) -> bytes:
  """The TFLite bytes of a converted Model artifact (PTQConverter's output).

  Args:
    model_uri: the Model artifact.
    reader: the component that reads it, for the message.

  Raises:
    ModelLoadError: the artifact holds no model.tflite.
  """
  path = tflite_paths(model_uri)['plain']
  if not tf.io.gfile.exists(path):
    raise ModelLoadError(f'{reader}: model artifact {model_uri} has no '
                         f'{spec_keys.PLAIN_TFLITE_FILE_NAME}; give it a PTQConverter output.')
  with tf.io.gfile.GFile(path, 'rb') as f:
    return f.read()
