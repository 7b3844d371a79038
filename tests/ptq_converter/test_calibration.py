"""Calibration sampling on a real Beam pipeline, fingerprints, and parsing for the model."""
import collections
import os
import tempfile

import apache_beam as beam
from apache_beam.testing import test_pipeline
import numpy as np
import pytest
import tensorflow as tf

from components import errors
from components.common import examples_io
from components.ptq_converter import calibration


def _labels(records):
  return collections.Counter(
      tf.train.Example.FromString(r).features.feature['label'].int64_list.value[0]
      for r in records)


def _sample(records, n, label_key='label', seed=0):
  out_dir = tempfile.mkdtemp()
  with test_pipeline.TestPipeline() as p:
    _ = (p | beam.Create(records) | calibration.SampleExamples(n, label_key=label_key, seed=seed)
         | beam.io.WriteToTFRecord(os.path.join(out_dir, 'sample'), num_shards=1))
  return examples_io.read_records(os.path.join(out_dir, 'sample*'))


@pytest.mark.parametrize('counts,n,expected', [
    ({'a': 50, 'b': 30, 'c': 20}, 10, {'a': 5, 'b': 3, 'c': 2}),
    ({'a': 1, 'b': 1, 'c': 1}, 2, {'a': 1, 'b': 1, 'c': 0}),
    ({'a': 3, 'b': 2}, 10, {'a': 3, 'b': 2}),
    ({'a': 7, 'b': 7, 'c': 7}, 10, {'a': 4, 'b': 3, 'c': 3}),
    ({}, 5, {}),
])
def test_allocate_splits_the_sample_in_proportion_and_sums_to_n(counts, n, expected):
  quotas = calibration.allocate(counts, n)

  assert quotas == expected
  assert sum(quotas.values()) == min(n, sum(counts.values()))


def test_sample_is_stratified_by_label(digits_records):
  population = _labels(digits_records)

  sample = _sample(digits_records, 300)

  assert len(sample) == 300
  assert len(set(sample)) == 300
  got = _labels(sample)
  for label, count in population.items():
    assert abs(got[label] - 300 * count / len(digits_records)) <= 1, (label, got)


def test_sample_is_deterministic_for_a_seed_and_changes_with_it(digits_records):
  first = _sample(digits_records, 100, seed=1)
  again = _sample(list(reversed(digits_records)), 100, seed=1)
  other = _sample(digits_records, 100, seed=2)

  assert calibration.fingerprint(first) == calibration.fingerprint(again)
  assert calibration.fingerprint(first) != calibration.fingerprint(other)


def test_sample_keeps_everything_when_fewer_records_than_requested(digits_records):
  sample = _sample(digits_records[:40], 300)

  assert sorted(sample) == sorted(digits_records[:40])


def test_unstratified_sample_has_the_requested_size(digits_records):
  sample = _sample(digits_records, 50, label_key=None)

  assert len(sample) == 50
  assert len(set(sample)) == 50 and set(sample) <= set(digits_records)
  # Deterministic without labels too: the same seed picks the same records.
  assert calibration.fingerprint(sample) == calibration.fingerprint(
      _sample(list(reversed(digits_records)), 50, label_key=None))


def test_sample_names_a_missing_label_feature(digits_records):
  # The DirectRunner re-raises the transform's own error, with the step appended.
  with pytest.raises(errors.DataError, match=r"calibration: an example has no feature 'species' "
                     r"\(label_key\); features present: \['label', 'pixels'\]"):
    _sample(digits_records[:10], 5, label_key='species')


def test_fingerprint_ignores_order_and_counts_records():
  count, digest = calibration.fingerprint([b'a', b'b', b'c'])

  assert count == 3
  assert (count, digest) == calibration.fingerprint([b'c', b'a', b'b'])
  assert digest != calibration.fingerprint([b'a', b'b', b'd'])[1]


def test_to_input_arrays_parses_by_model_input(tiny_model, digits_records, digits_arrays):
  arrays = calibration.to_input_arrays(digits_records[:8], tiny_model, source='test')

  assert set(arrays) == {'pixels'}
  assert arrays['pixels'].shape == (8, 64)
  assert arrays['pixels'].dtype == np.float32
  np.testing.assert_array_equal(arrays['pixels'], digits_arrays[0][:8])


def test_representative_dataset_yields_each_sample_by_input_name_with_a_batch_of_one():
  arrays = {'a': np.arange(6, dtype=np.float32).reshape(3, 2),
            'b': np.arange(3, dtype=np.float32).reshape(3, 1)}

  samples = list(calibration.representative_dataset(arrays)())

  assert len(samples) == 3
  for i, sample in enumerate(samples):
    assert set(sample) == {'a', 'b'}
    np.testing.assert_array_equal(sample['a'], arrays['a'][i:i + 1])
    np.testing.assert_array_equal(sample['b'], arrays['b'][i:i + 1])


def _example(**features):
  feature = {}
  for name, values in features.items():
    if isinstance(values[0], float):
      feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    else:
      feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.mark.parametrize('record,message', [
    (_example(label=[1]), r"lack features the model reads by name: 'pixels' \(1 of 1 examples\)"
     r".*Give PTQConverter the module's input_fn"),
    (_example(pixels=[0.5] * 10), r"do not match the model inputs .*pixels"),
    (_example(pixels=[float('nan')] + [0.0] * 63), "feature 'pixels' holds 1 NaN or Inf"),
])
def test_to_input_arrays_names_the_bad_data(tiny_model, record, message):
  with pytest.raises(errors.DataError, match=message):
    calibration.to_input_arrays([record], tiny_model, source='examples/7')
