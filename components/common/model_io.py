"""The files inside Model artifacts: a Trainer's Keras SavedModel, a converter's TFLite model."""
import os
from typing import Dict, Optional

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


def load_keras_model(model_uri: str) -> tf_keras.Model:
  """Reloads the Keras 2 model from a Model artifact's SavedModel.

  Args:
    model_uri: URI of a Model artifact, as written by the TFX Trainer.

  Returns:
    The tf_keras Functional or Sequential model (not compiled for training).

  Raises:
    ModelLoadError: no SavedModel, an unreadable one, one that is not a Keras 2
      Functional/Sequential model, or one with NaN or Inf in its weights.
  """
  path = serving_model_dir(model_uri)
  if not tf.io.gfile.exists(os.path.join(path, 'saved_model.pb')):
    raise ModelLoadError(
        f'Model artifact {model_uri}: no SavedModel at {path} (expected saved_model.pb). The '
        'Trainer module must save the model with model.save(fn_args.serving_model_dir).')
  if not tf.io.gfile.exists(os.path.join(path, 'keras_metadata.pb')):
    raise ModelLoadError(
        f'Model artifact {model_uri}: the SavedModel at {path} has no Keras 2 metadata '
        '(keras_metadata.pb), so it was not saved from a tf_keras model: Keras 3 '
        '(keras.Model.export, model.save("*.keras")) and tf.saved_model.save write none. '
        'tensorflow-model-optimization supports tf_keras Functional and Sequential models only: '
        'build the model with `import tf_keras` (or TF_USE_LEGACY_KERAS=1) and save it with '
        'model.save(dir).')
  try:
    # quantize_scope knows the wrapper layers a QATTrainer's model is saved with.
    with tfmot.quantization.keras.quantize_scope():
      model = tf_keras.models.load_model(path, compile=False)
  except Exception as e:  # Keras raises many types for unreadable models.
    raise ModelLoadError(
        f'Model artifact {model_uri}: the SavedModel at {path} cannot be reloaded as a Keras 2 '
        f'(tf_keras) model: {type(e).__name__}: {e}. Save it from a tf_keras model with '
        'model.save(dir) (SavedModel format).') from e
  if not isinstance(model, tf_keras.Model) or not (
      isinstance(model, tf_keras.Sequential) or getattr(model, '_is_graph_network', False)):
    raise ModelLoadError(
        f'Model artifact {model_uri}: reloaded a {type(model).__name__}, a subclassed model; '
        'tensorflow-model-optimization supports tf_keras Functional and Sequential models only. '
        'Rebuild it with the functional API (tf_keras.Model(inputs, outputs)).')
  _check_finite_weights(model, model_uri)
  return model


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


def num_classes(model: tf_keras.Model) -> Optional[int]:
  """The number of classes of a classifier: the units of its single output, when there are 2+.

  None when the model has several outputs or one output unit (a regression or a binary sigmoid
  output, whose 0/1 labels are not class indices into the output).
  """
  if len(model.outputs) != 1:
    return None
  units = model.outputs[0].shape[-1]
  return units if units is not None and units >= 2 else None


def input_feature_spec(model: tf.keras.Model) -> Dict[str, tf.io.FixedLenFeature]:
  """A tf.Example parsing spec for the model's inputs, derived from their names and shapes.

  Model inputs are named after the features they read (the module-file contract), so the model
  alone says how to parse calibration examples.
  """
  spec = {}
  for name, tensor in zip(model.input_names, model.inputs):
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
