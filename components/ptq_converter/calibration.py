"""Calibration (representative) data: Beam sampling, fingerprint, and the dataset TFLite reads.

Plain logic: the Beam transform runs on any runner and is tested without TFX.

Sampling is deterministic: every record gets a key from a seeded hash of its bytes and each
stratum keeps its smallest keys (bottom-k sampling). The same data, seed and size therefore give
the same sample on every runner and every re-run, which the fingerprint makes checkable.
"""
import collections
import hashlib
import math
from typing import Dict, Hashable, Iterable, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import tensorflow as tf

from components.common import model_io
from components.errors import DataError
from components.ptq_converter import conversion

# How many examples calibration samples unless told otherwise: enough for stable activation
# ranges on small models, a few seconds of conversion.
DEFAULT_CALIBRATION_SAMPLES = 300
# Fewer calibration samples than this give activation ranges too noisy to trust.
MIN_CALIBRATION_SAMPLES = 10


def allocate(counts: Mapping[Hashable, int], n: int) -> Dict[Hashable, int]:
  """Splits a sample of size n across strata in proportion to their sizes.

  Uses the largest-remainder method so the quotas add up to exactly min(n, total); ties are
  broken by stratum key so the result does not depend on dict order.

  Args:
    counts: number of records per stratum.
    n: requested sample size.

  Returns:
    Quota per stratum, never above the stratum's count.
  """
  total = sum(counts.values())
  if total <= n:
    return dict(counts)
  exact = {k: n * c / total for k, c in counts.items()}
  quotas = {k: math.floor(v) for k, v in exact.items()}
  short = n - sum(quotas.values())
  by_remainder = sorted(exact, key=lambda k: (-(exact[k] - quotas[k]), repr(k)))
  for k in by_remainder[:short]:
    quotas[k] += 1
  return quotas


def _label_of(record: bytes, label_key: str) -> Tuple:
  example = tf.train.Example.FromString(record)
  feature = example.features.feature.get(label_key)
  if feature is None:
    raise DataError(
        f'calibration: an example has no feature {label_key!r} (label_key); features present: '
        f'{sorted(example.features.feature)}.')
  kind = feature.WhichOneof('kind')
  return tuple(getattr(feature, kind).value) if kind else ()


def _sample_key(record: bytes, seed: int) -> int:
  digest = hashlib.sha256(seed.to_bytes(8, 'little', signed=True) + record).digest()
  return int.from_bytes(digest[:8], 'big')


@beam.ptransform_fn
def SampleExamples(  # pylint: disable=invalid-name
    records: beam.PCollection,
    n: int,
    label_key: Optional[str] = None,
    seed: int = 0) -> beam.PCollection:
  """Samples n serialized tf.Examples, stratified by label when label_key is given.

  Args:
    records: serialized tf.Example records.
    n: sample size; all records are kept when there are fewer.
    label_key: feature to stratify by, or None for a plain sample.
    seed: changes which records are picked, deterministically.

  Returns:
    The sampled serialized records.
  """
  keyed = records | 'KeyByStratum' >> beam.Map(
      lambda r: (_label_of(r, label_key) if label_key else (), (_sample_key(r, seed), r)))
  quotas = (
      keyed
      | 'CountPerStratum' >> beam.combiners.Count.PerKey()
      | 'Counts' >> beam.combiners.ToDict()
      | 'Quotas' >> beam.Map(allocate, n))
  return (
      keyed
      # A stratum never needs more than n records, so n per key bounds the memory used.
      | 'SmallestKeysPerStratum' >> beam.combiners.Top.SmallestPerKey(n)
      | 'TrimToQuota' >> beam.FlatMap(
          lambda kv, q: [r for _, r in kv[1][:q[kv[0]]]], q=beam.pvalue.AsSingleton(quotas)))


def fingerprint(records: Iterable[bytes]) -> Tuple[int, str]:
  """Returns (count, sha256 hex) of a set of records, independent of their order."""
  digests = sorted(hashlib.sha256(r).digest() for r in records)
  return len(digests), hashlib.sha256(b''.join(digests)).hexdigest()


def to_input_arrays(records: Sequence[bytes], model: tf.keras.Model,
                    source: str) -> Dict[str, np.ndarray]:
  """Parses records into {input name: array} for the model, with errors that name the data.

  Args:
    records: serialized tf.Examples.
    model: the Keras model whose inputs the arrays feed.
    source: what the records are (an artifact URI), for error messages.

  Returns:
    One array per model input, first dimension = number of records.

  Raises:
    DataError: a feature is missing, has the wrong type or shape, or holds NaN/Inf.
  """
  spec = model_io.input_feature_spec(model)
  try:
    parsed = tf.io.parse_example(tf.constant(list(records)), spec)
  except tf.errors.InvalidArgumentError as e:
    wanted = {k: f'{v.dtype.name}{v.shape}' for k, v in spec.items()}
    raise DataError(
        f'calibration examples from {source} do not match the model inputs {wanted}: '
        f'{_first_mismatch(records, spec) or e.message}. Give every example each model input as '
        'a feature of that name, type and size, or calibrate with Examples made for this '
        'model.') from e
  arrays = {}
  for name, tensor in zip(model.input_names, model.inputs):
    value = parsed[name].numpy().astype(tf.as_dtype(tensor.dtype).as_numpy_dtype)
    if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
      bad = int(np.sum(~np.isfinite(value)))
      raise DataError(f'calibration examples from {source}: feature {name!r} holds {bad} NaN '
                       'or Inf values; they would make the quantization ranges meaningless.')
    arrays[name] = value
  return arrays


# The tf.Example value list that holds each parsing dtype.
_KIND_OF_DTYPE = {tf.float32: 'float_list', tf.int64: 'int64_list', tf.string: 'bytes_list'}


def _first_mismatch(records: Sequence[bytes], spec: Mapping[str, tf.io.FixedLenFeature]) -> str:
  """Describes the first feature of the first example that the parsing spec cannot read."""
  for i, record in enumerate(records):
    features = tf.train.Example.FromString(record).features.feature
    for name, wanted in spec.items():
      size = int(np.prod(wanted.shape, dtype=np.int64))
      expected = f'{_KIND_OF_DTYPE[wanted.dtype]} of {size} values (shape {list(wanted.shape)})'
      if name not in features:
        return (f'example {i} has no feature {name!r} (expected {expected}); its features: '
                f'{sorted(features)}')
      kind = features[name].WhichOneof('kind')
      got = len(getattr(features[name], kind).value) if kind else 0
      if kind != _KIND_OF_DTYPE[wanted.dtype] or got != size:
        return (f'feature {name!r} of example {i}: expected {expected}, got '
                f'{kind or "an empty feature"} of {got} values')
  return ''


def check_labels(records: Sequence[bytes], label_key: str, num_classes: int,
                 source: str) -> None:
  """Raises ValueError when an integer label is not a class of the model, in [0, num_classes).

  Args:
    records: serialized tf.Examples.
    label_key: the label feature.
    num_classes: number of output units of the model.
    source: what the records are (artifact and split), for the message.
  """
  outside = collections.Counter()
  for record in records:
    feature = tf.train.Example.FromString(record).features.feature.get(label_key)
    if feature is not None and feature.WhichOneof('kind') == 'int64_list':
      outside.update(v for v in feature.int64_list.value if not 0 <= v < num_classes)
  if outside:
    values = ', '.join(f'{v} ({n} examples)' for v, n in sorted(outside.items()))
    raise DataError(
        f'{source}: label {label_key!r} has values outside the model\'s {num_classes} classes '
        f'[0, {num_classes - 1}]: {values}. Labels must be class indices into the model output; '
        'renumber them (for example from 1-based to 0-based) or give the model an output unit '
        'per class.')


def representative_dataset(arrays: Mapping[str, np.ndarray]) -> conversion.RepresentativeData:
  """Wraps input arrays as a TFLite representative dataset: one {name: batch-of-1} per sample."""
  count = len(next(iter(arrays.values())))

  def generate():
    for i in range(count):
      yield {name: value[i:i + 1] for name, value in arrays.items()}

  return generate
