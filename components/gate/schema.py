"""The examples and schema the gate evaluates: model inputs complete, gaps filled or refused.

TFMA feeds a TFLite model by feature name, one example at a time. Where an example lacks a
value (CsvExampleGen writes an empty list wherever a CSV cell is empty), its TFLite extractor
silently feeds -1 when the feature is absent from a whole batch, and otherwise fails with a NumPy
reshape error. Neither is acceptable in a gate. This module counts what is missing, fills model
inputs with the values the user's input_fn uses (fill_missing), and builds the schema that reads
them dense, or refuses the data with the counts and the way out. A schema default alone is not
enough: TFXIO applies it to an absent feature but fails on an empty list. Plain logic: Beam and
protos, no TFX.
"""
import dataclasses
import math
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2

from components.common import tflite
from components.errors import ConfigError
from components.errors import DataError

FLOAT = 'float_list'
INT64 = 'int64_list'
BYTES = 'bytes_list'
_SCHEMA_TYPES = {FLOAT: schema_pb2.FLOAT, INT64: schema_pb2.INT, BYTES: schema_pb2.BYTES}
# The tf.Example kind that can feed a TFLite input of each dtype through TFMA, which passes the
# parsed values on unconverted (and quantizes float values itself for int8 inputs).
# The gate's extractors (components/common/device_extractors.py) cast int64 values for int32.
_KIND_FOR_DTYPE = {'float32': FLOAT, 'int8': FLOAT, 'uint8': FLOAT, 'int16': FLOAT,
                   'int64': INT64, 'int32': INT64}
# In fill_missing: the value for every model input not named on its own.
EVERY_INPUT = '*'


@dataclasses.dataclass
class FeatureSummary:
  """How one feature appears in a split: its kind, how many examples hold a value, list lengths."""
  kind: str
  present: int
  min_length: int
  max_length: int

  def merge(self, other: 'FeatureSummary') -> 'FeatureSummary':
    kind = self.kind if self.kind == other.kind else 'mixed'
    return FeatureSummary(kind, self.present + other.present,
                          min(self.min_length, other.min_length),
                          max(self.max_length, other.max_length))


@dataclasses.dataclass
class SplitSummary:
  """Every feature of a split and the number of examples."""
  examples: int = 0
  features: Dict[str, FeatureSummary] = dataclasses.field(default_factory=dict)

  def add(self, serialized: bytes) -> 'SplitSummary':
    example = tf.train.Example.FromString(serialized)
    self.examples += 1
    for name, feature in example.features.feature.items():
      kind = feature.WhichOneof('kind')
      length = len(getattr(feature, kind).value) if kind else 0
      if not length:  # An empty list is a missing value, as a parser with a default sees it.
        continue
      seen = FeatureSummary(kind, 1, length, length)
      self.features[name] = self.features[name].merge(seen) if name in self.features else seen
    return self

  def merge(self, other: 'SplitSummary') -> 'SplitSummary':
    self.examples += other.examples
    for name, seen in other.features.items():
      self.features[name] = self.features[name].merge(seen) if name in self.features else seen
    return self

  def missing(self, name: str) -> int:
    """How many examples lack a value of feature `name`."""
    return self.examples - (self.features[name].present if name in self.features else 0)

  def to_json(self) -> dict:
    return {'examples': self.examples,
            'features': {k: dataclasses.asdict(v) for k, v in sorted(self.features.items())}}

  @classmethod
  def from_json(cls, doc: dict) -> 'SplitSummary':
    return cls(doc['examples'],
               {k: FeatureSummary(**v) for k, v in doc['features'].items()})


class SummarizeFeatures(beam.CombineFn):
  """Beam combiner: serialized tf.Examples -> SplitSummary (feature kinds, presence, lengths)."""

  def create_accumulator(self) -> SplitSummary:
    return SplitSummary()

  def add_input(self, accumulator: SplitSummary, serialized: bytes) -> SplitSummary:
    return accumulator.add(serialized)

  def merge_accumulators(self, accumulators: Iterable[SplitSummary]) -> SplitSummary:
    accumulators = iter(accumulators)
    merged = next(accumulators)
    for other in accumulators:
      merged.merge(other)
    return merged

  def extract_output(self, accumulator: SplitSummary) -> SplitSummary:
    return accumulator


def summarize(serialized_examples: Iterable[bytes]) -> SplitSummary:
  """SplitSummary of examples in memory (what SummarizeFeatures computes with Beam)."""
  summary = SplitSummary()
  for serialized in serialized_examples:
    summary.add(serialized)
  return summary


def validate_fill_missing(fill_missing: Optional[Mapping[str, float]]) -> Dict[str, float]:
  """Returns fill_missing as {feature: float}; raises ConfigError on a bad name or value."""
  if fill_missing is None:
    return {}
  if not isinstance(fill_missing, Mapping):
    raise ConfigError(f'fill_missing={fill_missing!r} is not accepted: give a dict '
                      '{feature name: number}, e.g. {"age": 38.0}.')
  checked = {}
  for name, value in fill_missing.items():
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not isinstance(name, str) or not name or not ok:
      raise ConfigError(f'fill_missing[{name!r}]={value!r} is not accepted: give a feature name '
                        'and a finite number, the value your input_fn fills that feature with.')
    checked[name] = float(value)
  return checked


def fill_missing_from_feature_spec(feature_spec: Mapping[str, Any]) -> Dict[str, float]:
  """fill_missing from a tf.io feature spec: the scalar default_value of each FixedLenFeature.

  The input_fn that parses with this spec fills a missing feature with its default; the gate
  fills it with the same value.
  """
  fill = {}
  for name, spec in feature_spec.items():
    default = getattr(spec, 'default_value', None)
    if isinstance(spec, tf.io.FixedLenFeature) and default is not None:
      values = np.unique(np.asarray(default, dtype=np.float64))
      if values.size != 1:
        raise ConfigError(f'feature spec {name!r}: default_value={default!r} holds several '
                          'values; the gate fills a missing feature with one value.')
      fill[name] = float(values[0])
  return validate_fill_missing(fill)


def resolve_fill_missing(fill_missing: Mapping[str, float],
                         inputs: Iterable[str]) -> Dict[str, float]:
  """fill_missing with EVERY_INPUT ('*') expanded to each model input not named on its own."""
  resolved = {k: v for k, v in fill_missing.items() if k != EVERY_INPUT}
  if EVERY_INPUT in fill_missing:
    for name in inputs:
      resolved.setdefault(name, fill_missing[EVERY_INPUT])
  return resolved


def fill_example(serialized: bytes, fill: Mapping[str, float],
                 inputs: Mapping[str, Tuple[str, int]]) -> bytes:
  """The example with each feature in `fill` that is absent or empty set to its fill value.

  Args:
    serialized: a serialized tf.Example.
    fill: {feature: value}, resolved (no EVERY_INPUT).
    inputs: the model inputs, as model_inputs returns them: an int64 input is filled with
      int64 values, any other with floats, as many as the input takes.
  """
  example = tf.train.Example.FromString(serialized)
  features = example.features.feature
  changed = False
  for name, value in fill.items():
    kind = features[name].WhichOneof('kind') if name in features else None
    if kind and len(getattr(features[name], kind).value):
      continue
    dtype, length = inputs[name]
    if _KIND_FOR_DTYPE.get(dtype) == INT64:
      features[name].int64_list.value[:] = [int(value)] * length
    else:
      features[name].float_list.value[:] = [value] * length
    changed = True
  return example.SerializeToString() if changed else serialized


def model_inputs(tflite_model: bytes) -> Dict[str, Tuple[str, int]]:
  """{feature name: (dtype, values per example)} of a TFLite model's inputs."""
  inputs = {}
  for tensor in tflite.io_details(tflite_model)['inputs']:
    inputs[tflite.feature_name(tensor.name)] = (tensor.dtype, int(math.prod(tensor.shape[1:])))
  return inputs


def check_fill_names(fill_missing: Mapping[str, float], inputs: Iterable[str]) -> None:
  """Raises ConfigError when fill_missing names a feature that is not a model input."""
  unknown = sorted(set(fill_missing) - set(inputs) - {EVERY_INPUT})
  if unknown:
    raise ConfigError(f'fill_missing names {unknown}, which are not inputs of the model; its '
                      f'inputs are {sorted(inputs)}.')


def gate_schema(summary: SplitSummary, inputs: Mapping[str, Tuple[str, int]], label_key: str,
                fill_missing: Mapping[str, float], source: str) -> schema_pb2.Schema:
  """The schema the gate reads `summary`'s split with, or DataError saying why it cannot.

  Every feature of the split is in the schema (so slices and metrics can use any of them); the
  model inputs and the label get a dense representation, the inputs named in fill_missing with
  their default value.

  Args:
    summary: the split, as SummarizeFeatures saw it.
    inputs: the TFLite model's inputs, as model_inputs returns them.
    label_key: the label feature; an example without a label cannot be evaluated.
    fill_missing: {feature: value} for missing values of model inputs; EVERY_INPUT ('*') for
      all inputs not named.
    source: the examples and split, for messages.

  Raises:
    ConfigError: fill_missing names a feature that is not a model input.
    DataError: a model input or the label is absent, missing in some examples without a fill
      value, of a kind or length the model input cannot take.
  """
  fill_missing = resolve_fill_missing(fill_missing, inputs)
  check_fill_names(fill_missing, inputs)
  problems, unfilled = [], {}
  for name, (dtype, length) in sorted(inputs.items()):
    seen = summary.features.get(name)
    if seen is None:
      problems.append(f'model input {name!r} is in no example (features: '
                      f'{sorted(summary.features)}); TFMA feeds TFLite inputs by feature name')
      continue
    expected = _KIND_FOR_DTYPE.get(dtype)
    if expected is None:
      problems.append(f'model input {name!r} is {dtype}, which the gate cannot feed from a '
                      'tf.Example (it holds float, int64 or bytes lists): declare the input '
                      'int64, int32 or float32 and cast inside the model')
    elif seen.kind != expected:
      problems.append(f'model input {name!r} is {dtype} but the feature holds {seen.kind} '
                      f'values; TFMA passes them on unconverted, so write {expected} values or '
                      'change the input dtype')
    if (seen.min_length, seen.max_length) != (length, length):
      problems.append(f'model input {name!r} takes {length} value(s) per example but the '
                      f'feature holds {seen.min_length} to {seen.max_length}')
    if summary.missing(name) and name not in fill_missing:
      unfilled[name] = summary.missing(name)
  if unfilled:
    counts = ', '.join(f'{name!r} in {n}' for name, n in unfilled.items())
    problems.append(
        f'of {summary.examples} examples, model inputs lack a value: {counts}. TFMA would feed '
        'them -1 or fail; give the values your input_fn fills them with as fill_missing '
        '(create_pipeline(fill_missing={...}), --fill-missing NAME=VALUE), or fill them in the '
        'data (for example with a TFX Transform, then evaluate its transformed_examples)')
  label_missing = summary.missing(label_key)
  if label_key not in summary.features:
    problems.append(f'label {label_key!r} is in no example (features: '
                    f'{sorted(summary.features)})')
  elif label_missing:
    problems.append(f'label {label_key!r} is missing in {label_missing} of {summary.examples} '
                    'examples; drop unlabelled examples from the data')
  else:
    seen = summary.features[label_key]
    if seen.min_length != seen.max_length:
      problems.append(f'label {label_key!r} holds {seen.min_length} to {seen.max_length} values '
                      'per example; the gate reads one value per example, or a fixed number of '
                      '0/1 values (one per output unit) for a multi-label model')
  if problems:
    raise DataError(f'The gate cannot evaluate {source}: ' + '; '.join(problems) + '.')

  schema = schema_pb2.Schema()
  for name, seen in sorted(summary.features.items()):
    feature = schema.feature.add(name=name)
    if seen.kind in _SCHEMA_TYPES:
      feature.type = _SCHEMA_TYPES[seen.kind]
  group = schema.tensor_representation_group[''].tensor_representation
  for name, (_, length) in inputs.items():
    dense = group[name].dense_tensor
    dense.column_name = name
    dense.shape.dim.add(size=length)
    if name in fill_missing:
      if summary.features[name].kind == INT64:
        dense.default_value.int_value = int(fill_missing[name])
      else:
        dense.default_value.float_value = fill_missing[name]
  label = group[label_key].dense_tensor
  label.column_name = label_key
  # One value (a class, 0/1 or a real value), or one 0/1 value per output unit (multi-label).
  label.shape.dim.add(size=summary.features[label_key].max_length)
  return schema


def missing_counts(summary: SplitSummary, names: Iterable[str]) -> Dict[str, int]:
  """{feature: examples lacking it} for the names that are missing somewhere."""
  return {name: summary.missing(name) for name in names if summary.missing(name)}

