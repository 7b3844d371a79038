"""Loading the Keras model inside a Trainer's (or another component's) Model artifact."""
import os

import tensorflow as tf
import tf_keras
from tfx.utils import path_utils


class ModelLoadError(ValueError):
  """A Model artifact holds no model the components can use; the message says why."""


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
    ModelLoadError: no SavedModel, an unreadable one, or one that is not a Keras 2
      Functional/Sequential model.
  """
  path = serving_model_dir(model_uri)
  if not tf.io.gfile.exists(os.path.join(path, 'saved_model.pb')):
    raise ModelLoadError(
        f'Model artifact {model_uri}: no SavedModel at {path} (expected saved_model.pb). The '
        'Trainer module must save the model with model.save(fn_args.serving_model_dir).')
  try:
    model = tf_keras.models.load_model(path, compile=False)
  except Exception as e:  # Keras raises many types for unreadable models.
    raise ModelLoadError(
        f'Model artifact {model_uri}: the SavedModel at {path} cannot be reloaded as a Keras 2 '
        f'(tf_keras) model: {type(e).__name__}: {e}. Save it from a tf_keras model with '
        'model.save(dir) (SavedModel format).') from e
  if not isinstance(model, tf_keras.Model) or not (
      isinstance(model, tf_keras.Sequential) or getattr(model, '_is_graph_network', False)):
    raise ModelLoadError(
        f'Model artifact {model_uri}: reloaded a {type(model).__name__}, which is not a tf_keras '
        'Functional or Sequential model; only those can be converted and optimized.')
  return model
