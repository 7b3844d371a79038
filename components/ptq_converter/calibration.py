"""Calibration (representative) data: Beam sampling, fingerprint, and the dataset TFLite reads.

Plain logic: the Beam transform runs on any runner and is tested without TFX.

Sampling is deterministic: every record gets a key from a seeded hash of its bytes and each
stratum keeps its smallest keys (bottom-k sampling). The same data, seed and size therefore give
the same sample on every runner and every re-run, which the fingerprint makes checkable.

The bytes hashed are the example's deterministic serialization, not the record as stored: the
same tf.Example serializes its feature map in an order that changes from process to process
(protobuf's map order follows a per-process hash seed), so an ExampleGen whose Beam workers are
separate processes writes the same examples as other bytes. Hashing the stored bytes made the
in-process and the multi-process pipelines calibrate on different samples.
"""
import collections
import hashlib
import math
from typing import Dict, Hashable, Iterable, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
from google.protobuf import message
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


def canonical(record: bytes) -> bytes:
  """The record's deterministic serialization (features sorted by name) if it is a tf.Example.

  Bytes that are not a tf.Example are returned as they are.
  """
  try:
    return tf.train.Example.FromString(record).SerializeToString(deterministic=True)
  except message.DecodeError:
    return record


def _keyed(record, label_key, seed):
  """(stratum, (sample key, record)): the key hashes the example, not its stored bytes.

  Not annotated: Beam would infer a VarIntCoder from `int`, which cannot hold the unsigned
  64-bit keys.
  """
  if not label_key:
    return (), (_sample_key(canonical(record), seed), record)
  example = tf.train.Example.FromString(record)
  return _label_of(example, label_key), (
      _sample_key(example.SerializeToString(deterministic=True), seed), record)


def _label_of(example: tf.train.Example, label_key: str) -> Tuple:
  feature = example.features.feature.get(label_key)
  if feature is None:
    raise DataError(
        f'calibration: an example has no feature {label_key!r} (label_key); features present: '
        f'{sorted(example.features.feature)}.')
  kind = feature.WhichOneof('kind')
  return tuple(getattr(feature, kind).value) if kind else ()


def label_array(records: Sequence[bytes], label_key: str, source: str) -> np.ndarray:
  """The label of every record as an array [N] (one value each) or [N, k] (multi-hot)."""
  values = []
  for record in records:
    example = tf.train.Example.FromString(record)
    label = _label_of(example, label_key)
    if not label:
      raise DataError(f'{source}: an example has an empty label feature {label_key!r}.')
    values.append(label)
  widths = {len(v) for v in values}
  if len(widths) > 1:
    raise DataError(f'{source}: the label feature {label_key!r} has {sorted(widths)} values '
                    'in different examples; give every example the same number.')
  array = np.asarray(values, np.float32)
  return array[:, 0] if array.shape[1] == 1 else array


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
  keyed = records | 'KeyByStratum' >> beam.Map(_keyed, label_key, seed)
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
  """Returns (count, sha256 hex) of a set of records, independent of their order.

  tf.Examples are hashed in their deterministic serialization (see canonical), so the same
  examples give the same fingerprint whichever process serialized them.
  """
  digests = sorted(hashlib.sha256(canonical(r)).digest() for r in records)
  return len(digests), hashlib.sha256(b''.join(digests)).hexdigest()


def to_input_arrays(records: Sequence[bytes], model: model_io.AnyModel,
                    source: str) -> Dict[str, np.ndarray]:
  """Parses records into {input name: array} for the model, with errors that name the data.

  Args:
    records: serialized tf.Examples.
    model: the model whose inputs the arrays feed: a tf_keras model, a model_io.ModelSource
      (a SavedModel signature) or its named tf.TensorSpecs (model_io.input_specs).
    source: what the records are (an artifact URI), for error messages.

  Returns:
    One array per model input, first dimension = number of records.

  Raises:
    DataError: a feature is missing, has the wrong type or shape, or holds NaN/Inf.
  """
  spec = model_io.input_feature_spec(model)
  missing = _missing_counts(records, spec)
  if missing:
    lacking = ', '.join(f'{name!r} ({n} of {len(records)} examples)'
                        for name, n in missing.items())
    raise DataError(
        f'calibration examples from {source} lack features the model reads by name: {lacking}. '
        'Real Examples omit a feature wherever its value is missing. Give PTQConverter the '
        "module's input_fn (input_fn= or module_file=), which fills missing values as in "
        'training, or give every example each model input.' + _never_present(missing, records))
  try:
    parsed = tf.io.parse_example(tf.constant(list(records)), spec)
  except tf.errors.InvalidArgumentError as e:
    wanted = {k: f'{v.dtype.name}{v.shape}' for k, v in spec.items()}
    raise DataError(
        f'calibration examples from {source} do not match the model inputs {wanted}: '
        f'{_first_mismatch(records, spec) or e.message}. Give every example each model input as '
        'a feature of that name, type and size, or calibrate with Examples made for this '
        'model.') from e
  return _checked({name: parsed[name].numpy() for name in spec}, model, source)


def _never_present(missing: Mapping[str, int], records: Sequence[bytes]) -> str:
  """A hint for inputs no example has: their name, not missing values, is the likelier cause."""
  never = [name for name, n in missing.items() if n == len(records)]
  if not never:
    return ''
  return (f' No example has {never} at all: each model input must be named after the feature it '
          "reads (keras.Input(name=...); a SavedModel signature's input keys: tf.TensorSpec(name="
          '...) or the keys of a dict input).')


def arrays_from_dataset(dataset: tf.data.Dataset, model: model_io.AnyModel, count: int,
                        source: str) -> Dict[str, np.ndarray]:
  """{input name: array} of the first `count` examples of the user's input_fn dataset.

  The dataset yields (features, labels) batches as the Trainer reads them, so the model is
  calibrated on inputs prepared by the user's own code: missing values filled, casts and feature
  crosses applied. It may repeat forever (a Trainer's input_fn does): reading stops at `count`.

  Args:
    dataset: input_fn's dataset over the sampled examples.
    model: the model whose inputs the arrays feed (as for to_input_arrays).
    count: how many examples to take (the sample's size).
    source: what the examples are, for error messages.

  Raises:
    DataError: input_fn gives no tensor for a model input, gives a sparse one, or NaN/Inf.
  """
  features_spec = dataset.element_spec
  features_spec = features_spec[0] if isinstance(features_spec, tuple) else features_spec
  single = not isinstance(features_spec, dict)
  names = [spec.name for spec in model_io.input_specs(model)]
  if single and len(names) != 1:
    raise DataError(f'{source}: input_fn gives one tensor of features, but the model has '
                    f'inputs {names}; give a dict keyed by input name.')
  if not single:
    absent = [n for n in names if n not in features_spec]
    if absent:
      raise DataError(f'{source}: input_fn gives no feature for model inputs {absent}; it gives '
                      f'{sorted(features_spec)}. Model inputs are named after the features '
                      'input_fn returns.')
    dense = [n for n in names if not isinstance(features_spec[n], tf.TensorSpec)]
    if dense:
      raise DataError(f'{source}: input_fn gives model inputs {dense} as sparse or ragged '
                      'tensors (features with missing values); make input_fn fill the missing '
                      'values so each is a dense tensor, as the model reads it.')
  collected, taken = {n: [] for n in names}, 0
  for batch in dataset:
    features = batch[0] if isinstance(batch, tuple) else batch
    for name in names:
      collected[name].append((features if single else features[name]).numpy())
    taken += len(collected[names[0]][-1])
    if taken >= count:
      break
  return _checked({n: np.concatenate(v)[:count] for n, v in collected.items()}, model, source)


def _checked(arrays: Mapping[str, np.ndarray], model: model_io.AnyModel,
             source: str) -> Dict[str, np.ndarray]:
  """The arrays cast to the model's input dtypes; DataError for NaN or Inf.

  An integer input keeps its integer dtype (int64, int32): the TFLite model keeps it too, and
  calibration feeds the interpreter tensors of the model's own dtypes. Values that the dtype
  cannot hold exactly (fractions, or beyond int32) are refused rather than truncated.
  """
  out = {}
  for tensor in model_io.input_specs(model):
    name = tensor.name
    dtype = tf.as_dtype(tensor.dtype)
    given = np.asarray(arrays[name])
    if dtype.is_integer and given.dtype != dtype.as_numpy_dtype:
      _check_integers(name, given, dtype, source)
    value = given.astype(dtype.as_numpy_dtype)
    if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
      bad = int(np.sum(~np.isfinite(value)))
      raise DataError(f'calibration examples from {source}: feature {name!r} holds {bad} NaN '
                      'or Inf values; they would make the quantization ranges meaningless.')
    out[name] = value
  return out


def _check_integers(name: str, given: np.ndarray, dtype: tf.DType, source: str) -> None:
  """DataError unless every value of `given` is a whole number that `dtype` holds."""
  if not np.issubdtype(given.dtype, np.number):
    raise DataError(f'calibration examples from {source}: feature {name!r} is {given.dtype}, but '
                    f'model input {name!r} takes {dtype.name}; give it as numbers.')
  as_float = given.astype(np.float64)
  fractional = int(np.sum(~np.isfinite(as_float) | (np.round(as_float) != as_float)))
  outside = int(np.sum((as_float < dtype.min) | (as_float > dtype.max)))
  if fractional or outside:
    raise DataError(
        f'calibration examples from {source}: model input {name!r} takes {dtype.name}, but '
        f'feature {name!r} holds {fractional} values that are not whole numbers and {outside} '
        f'outside [{dtype.min}, {dtype.max}]. Give the integer feature as integers (an input_fn '
        'that fills missing values must fill an integer feature with an integer).')


# The tf.Example value list that holds each parsing dtype.
_KIND_OF_DTYPE = {tf.float32: 'float_list', tf.int64: 'int64_list', tf.string: 'bytes_list'}


def _missing_counts(records: Sequence[bytes],
                    spec: Mapping[str, tf.io.FixedLenFeature]) -> Dict[str, int]:
  """{feature: how many records lack it (absent or empty)}, for the features some records lack."""
  counts = collections.Counter()
  for record in records:
    features = tf.train.Example.FromString(record).features.feature
    for name in spec:
      kind = features[name].WhichOneof('kind') if name in features else None
      if kind is None or not getattr(features[name], kind).value:
        counts[name] += 1
  return dict(counts)


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
