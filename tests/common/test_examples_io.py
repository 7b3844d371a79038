"""components.common.examples_io: reading the splits of an Examples artifact."""
import os

import pytest
import tensorflow as tf
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2

from components import errors
from components.common import examples_io
from tests.conftest import write_examples


def test_split_file_pattern_matches_the_files_of_the_split(tmp_path, digits_records):
  examples = write_examples(str(tmp_path), {'train': digits_records[:5], 'eval': []})

  pattern = examples_io.split_file_pattern(examples, 'train', 'calibration_split')

  assert tf.io.gfile.glob(pattern) == [
      os.path.join(examples.uri, 'Split-train', 'data_tfrecord-00000-of-00001.gz')]
  assert examples_io.read_records(pattern) == digits_records[:5]


def test_a_missing_split_is_named_with_the_parameter_and_the_splits_there_are(tmp_path):
  examples = write_examples(str(tmp_path), {'train': [], 'eval': []})

  with pytest.raises(errors.DataError) as raised:
    examples_io.split_file_pattern(examples, 'test', 'fine_tuning.eval_split')

  assert str(raised.value) == (f"Examples artifact {examples.uri} has no split 'test' "
                               "(fine_tuning.eval_split); its splits are ['train', 'eval'].")


def test_examples_that_are_not_tf_examples_are_refused(tmp_path):
  examples = write_examples(str(tmp_path), {'train': []})
  examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_PARQUET)

  with pytest.raises(errors.DataError, match=f'Examples artifact {examples.uri} holds '
                     'FORMAT_PARQUET; only FORMAT_TF_EXAMPLE is read here.'):
    examples_io.split_file_pattern(examples, 'train', 'calibration_split')


def test_an_empty_split_is_refused_naming_the_parameter(tmp_path, digits_records):
  examples = write_examples(str(tmp_path), {'train': digits_records[:1], 'eval': []})

  examples_io.check_split_not_empty(examples, 'train', 'calibration_split')  # Does not raise.
  with pytest.raises(errors.DataError, match=r"split 'eval' \(calibration_split\) is empty: the 1 "
                     r'file\(s\) matching .* hold no examples.*or set calibration_split to a '
                     'split with examples'):
    examples_io.check_split_not_empty(examples, 'eval', 'calibration_split')


def test_read_records_reads_gzip_and_plain_files_in_name_order(tmp_path):
  with tf.io.TFRecordWriter(str(tmp_path / 'b.gz'), 'GZIP') as writer:
    writer.write(b'from-gzip')
  with tf.io.TFRecordWriter(str(tmp_path / 'a')) as writer:
    for record in (b'plain-1', b'plain-2'):
      writer.write(record)

  assert examples_io.read_records(str(tmp_path / '*')) == [b'plain-1', b'plain-2', b'from-gzip']
  assert examples_io.read_records(str(tmp_path / 'none-*')) == []
