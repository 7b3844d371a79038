"""Reading the splits of an Examples artifact, with errors that name the artifact and split."""
from typing import List, Optional

import tensorflow as tf
from tfx import types
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components.errors import DataError


def _compression(path: str) -> str:
  # ExampleGen writes gzip TFRecords named *.gz.
  return 'GZIP' if path.endswith('.gz') else ''


def split_file_pattern(examples: types.Artifact, split: str, parameter: str) -> str:
  """The file pattern of one split of a tf.Example Examples artifact.

  Args:
    examples: the Examples artifact.
    split: the split to read.
    parameter: the parameter that chose the split, for the message.

  Raises:
    DataError: the artifact has no such split, or does not hold tf.Examples.
  """
  splits = artifact_utils.decode_split_names(examples.split_names)
  if split not in splits:
    raise DataError(f'Examples artifact {examples.uri} has no split {split!r} ({parameter}); '
                    f'its splits are {splits}.')
  payload = examples_utils.get_payload_format(examples)
  if payload != example_gen_pb2.FORMAT_TF_EXAMPLE:
    raise DataError(f'Examples artifact {examples.uri} holds '
                    f'{example_gen_pb2.PayloadFormat.Name(payload)}; only FORMAT_TF_EXAMPLE is '
                    'read here.')
  return io_utils.all_files_pattern(artifact_utils.get_split_uri([examples], split))


def check_split_not_empty(examples: types.Artifact, split: str, parameter: str) -> None:
  """Raises DataError when a split of an Examples artifact holds no example.

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
    records = tf.data.TFRecordDataset(path, compression_type=_compression(path))
    if any(True for _ in records.take(1)):
      return
  raise DataError(
      f'Examples artifact {examples.uri}: split {split!r} ({parameter}) is empty: the '
      f'{len(files)} file(s) matching {pattern} hold no examples. Check the data given to '
      f'ExampleGen and its split configuration, or set {parameter} to a split with examples.')


def read_records(file_pattern: str, limit: Optional[int] = None) -> List[bytes]:
  """Reads the records of gzip or plain TFRecord files matching a pattern (the first `limit`
  in file-name order when given: files past it are not opened)."""
  records = []
  for path in sorted(tf.io.gfile.glob(file_pattern)):
    dataset = tf.data.TFRecordDataset(path, compression_type=_compression(path))
    if limit is not None:
      dataset = dataset.take(limit - len(records))
    records.extend(r.numpy() for r in dataset)
    if limit is not None and len(records) >= limit:
      break
  return records
