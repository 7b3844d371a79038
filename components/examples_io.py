"""Checks on the splits of an Examples artifact, with errors that name the artifact and split."""
import tensorflow as tf
from tfx import types
from tfx.types import artifact_utils
from tfx.utils import io_utils


def check_split_not_empty(examples: types.Artifact, split: str, parameter: str) -> None:
  """Raises ValueError when a split of an Examples artifact holds no example.

  Without this check an empty split is not an error downstream: calibration samples nothing and
  Keras fine-tunes for zero steps, then saves the model as if it had been trained.

  Args:
    examples: the Examples artifact.
    split: a split it has (check the name first).
    parameter: the parameter that chose the split, for the message.
  """
  pattern = io_utils.all_files_pattern(artifact_utils.get_split_uri([examples], split))
  files = sorted(tf.io.gfile.glob(pattern))
  for path in files:
    # ExampleGen writes gzip TFRecords named *.gz.
    compression = 'GZIP' if path.endswith('.gz') else ''
    if any(True for _ in tf.data.TFRecordDataset(path, compression_type=compression).take(1)):
      return
  raise ValueError(
      f'Examples artifact {examples.uri}: split {split!r} ({parameter}) is empty: the '
      f'{len(files)} file(s) matching {pattern} hold no examples. Check the data given to '
      f'ExampleGen and its split configuration, or set {parameter} to a split with examples.')
