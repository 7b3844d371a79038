"""Trainer module for a pipeline with a TFX Transform: the model reads transformed features.

scikit-learn's breast-cancer data (binary), ten of its features as CSV columns with empty cells.
Transform scales every feature to z-scores over the training split and fills each missing value
with the feature's mean (a feature with empty cells is a sparse, variable-length feature in the
inferred schema). The model reads the transformed features, named `<feature>_xf`, and holds no
transform graph: TFLite and TFMA feed it the transformed Examples by input name.

`input_fn` keeps the project's 3-argument contract (docs/module_contract.md): it gets no
TFTransformOutput, so the module states the transformed spec itself (TRANSFORMED_FEATURE_SPEC,
what `preprocessing_fn` outputs) and `run_fn` checks it against the Transform's real output
schema, so the two cannot drift apart silently.
"""
from typing import Dict, List

from absl import logging
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from tfx import v1 as tfx
from tfx_bsl.public import tfxio
from tensorflow_transform.tf_metadata import schema_utils

from components.common import model_io

# The raw CSV columns (scikit-learn's ten "mean ..." features, in snake case) and the label.
FEATURES = ('mean_radius', 'mean_texture', 'mean_perimeter', 'mean_area', 'mean_smoothness',
            'mean_compactness', 'mean_concavity', 'mean_concave_points', 'mean_symmetry',
            'mean_fractal_dimension')
LABEL_KEY = 'label'
SEED = 0
EPOCHS = 5


def transformed_name(feature: str) -> str:
  return f'{feature}_xf'


# What preprocessing_fn outputs: one float per example and feature, and the label as it was.
TRANSFORMED_FEATURE_SPEC = {
    **{transformed_name(f): tf.io.FixedLenFeature([1], tf.float32) for f in FEATURES},
    LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64),
}


def _z_score_filling_missing_with_mean(x) -> tf.Tensor:
  """A [batch, 1] float tensor: x as z-scores, each missing value replaced by the mean (0).

  A feature with empty cells arrives as a SparseTensor (no shape in the schema). Its z-scores
  come from the mean and deviation of the values present in the analyzed (train) split, so the
  mean of a missing value is 0. Scaling first and filling after keeps the analysis to one
  phase: TFX 1.16's Transform deep-copies the data for a second phase (for example z-scores of
  mean-imputed values), which fails with the locked Apache Beam (AppliedPTransform arguments).
  """
  z = tft.scale_to_z_score(tf.cast(x, tf.float32))
  if isinstance(z, tf.SparseTensor):
    z = tf.sparse.to_dense(tf.SparseTensor(z.indices, z.values, [z.dense_shape[0], 1]),
                           default_value=0.0)
  return tf.reshape(z, [-1, 1])


def preprocessing_fn(inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """Transform's entry point: z-scores with mean imputation; the label passes through."""
  outputs = {transformed_name(f): _z_score_filling_missing_with_mean(inputs[f])
             for f in FEATURES}
  outputs[LABEL_KEY] = tf.reshape(tf.cast(inputs[LABEL_KEY], tf.int64), [-1, 1])
  return outputs


def input_fn(file_pattern: List[str], data_accessor: tfx.components.DataAccessor,
             batch_size: int = 32) -> tf.data.Dataset:
  """(features, label) batches from transformed Examples, features keyed by transformed name."""
  return data_accessor.tf_dataset_factory(
      file_pattern,
      tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=LABEL_KEY,
                                     shuffle_seed=SEED),
      schema_utils.schema_from_feature_spec(TRANSFORMED_FEATURE_SPEC))


def check_transformed_spec(transform_graph_path: str) -> None:
  """Raises ValueError when TRANSFORMED_FEATURE_SPEC is not what the Transform wrote."""
  written = tft.TFTransformOutput(transform_graph_path).transformed_feature_spec()
  if written != TRANSFORMED_FEATURE_SPEC:
    differ = sorted(k for k in {*written, *TRANSFORMED_FEATURE_SPEC}
                    if written.get(k) != TRANSFORMED_FEATURE_SPEC.get(k))
    raise ValueError(f'TRANSFORMED_FEATURE_SPEC differs from the transformed schema in '
                     f'{transform_graph_path} for {differ}: update it to what preprocessing_fn '
                     'outputs, since input_fn parses the transformed Examples with it.')


def build_model() -> tf_keras.Model:
  """One input per transformed feature, concatenated, a small hidden layer, one sigmoid unit."""
  inputs = [tf_keras.Input(shape=(1,), name=transformed_name(f)) for f in FEATURES]
  x = tf_keras.layers.Concatenate(name='features')(inputs)
  x = tf_keras.layers.Dense(16, activation='relu', name='hidden')(x)
  outputs = tf_keras.layers.Dense(1, activation='sigmoid', name='malignant')(x)
  model = tf_keras.Model(inputs, outputs, name='breast_cancer_xf')
  model.compile(optimizer=tf_keras.optimizers.Adam(1e-2),
                loss=tf_keras.losses.BinaryCrossentropy(),
                metrics=[tf_keras.metrics.BinaryAccuracy()])
  return model


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  """Trains on the transformed Examples and saves the model without the transform graph."""
  check_transformed_spec(fn_args.transform_graph_path)
  tf_keras.utils.set_random_seed(SEED)
  train = input_fn(fn_args.train_files, fn_args.data_accessor, 32)
  evaluation = input_fn(fn_args.eval_files, fn_args.data_accessor, 32)
  model = build_model()
  history = model.fit(train, epochs=EPOCHS, steps_per_epoch=max(1, fn_args.train_steps // EPOCHS),
                      validation_data=evaluation, validation_steps=fn_args.eval_steps, verbose=0)
  logging.info('transform_module: %s',
               ', '.join(f'{k} {v[-1]:.4f}' for k, v in history.history.items()))
  # Its tf.Example signature parses the transformed features: serving takes transformed Examples.
  model_io.save_keras_model(model, fn_args.serving_model_dir)
