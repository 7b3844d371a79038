"""What a .tflite file is made of and which of its ops XNNPACK runs: evidence for missed goals.

Reads the flatbuffer with the TFLite schema that `ai_edge_litert` ships (`tools/flatbuffer_utils`),
so the byte counts are those of the file, not estimates.
"""
import collections
import math
from typing import Any, Dict, List

import numpy as np

from components.common import tflite

_SCALE_BYTES = 4  # QuantizationParameters.scale: [float32]
_ZERO_POINT_BYTES = 8  # QuantizationParameters.zero_point: [int64]


def _itemsize(dtype: str) -> int:
  try:
    return np.dtype(dtype).itemsize
  except TypeError:  # string, resource...: count bytes.
    return 1


def entropy_bits(values: np.ndarray) -> float:
  """Shannon entropy of the values, in bits per value (the floor of any entropy coder).

  Any dtype: int8 weights, or the float kernel of a clustered Keras layer, whose entropy is
  that of its cluster assignment.
  """
  _, counts = np.unique(values, return_counts=True)
  p = counts / values.size
  return float(-(p * np.log2(p)).sum())


def _distinct_per_channel(values: np.ndarray, tensor: Any) -> int:
  """The most distinct values in one quantization channel of an int8 constant tensor.

  A tensor with one scale is one channel; a per-channel one is split along its quantized
  dimension (0 for conv and dense kernels, 3 for depthwise ones).
  """
  q = tensor.quantization
  if q is None or q.scale is None or len(q.scale) <= 1 or tensor.shape is None:
    return int(np.unique(values).size)
  channels = np.moveaxis(values.reshape(tuple(tensor.shape)), q.quantizedDimension, 0)
  return max(int(np.unique(channel).size) for channel in channels)


def anatomy(model_bytes: bytes) -> Dict[str, Any]:
  """Splits a TFLite file's bytes into constant tensors by dtype, quantization parameters, rest.

  Args:
    model_bytes: a serialized TFLite model.

  Returns:
    A dict:
      file_bytes: the file size.
      buffers: {dtype name: bytes of constant tensor data (weights, biases...) of that dtype}.
      gzip_buffers: {dtype name: gzip -9 size of those bytes, concatenated}.
      constants: {dtype name: number of constant values of that dtype}.
      quant_params_bytes: scales (float32) and zero points (int64) of quantized tensors.
      per_channel_tensors / quant_channels: tensors with more than one scale, and the number of
        (scale, zero point) pairs over all tensors.
      metadata_bytes: buffers referenced by the model's metadata (runtime version, etc.).
      structure_bytes: the rest: ops, tensor names and shapes, signatures, flatbuffer padding.
      int8_weights: for int8 constants: zero_fraction, distinct_per_tensor_max,
        distinct_per_channel_max (in each channel of a per-channel tensor, else in the tensor),
        entropy_bits (size-weighted Shannon entropy per value) and gzip_bits (gzip -9 bits per
        value).
  """
  from ai_edge_litert.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
  buffers = collections.Counter()
  constants = collections.Counter()
  raw = collections.defaultdict(list)
  quant_bytes = per_channel = channels = 0
  seen = set()
  int8_tensors: List[np.ndarray] = []
  per_channel_max = 0
  for subgraph in model.subgraphs:
    for tensor in subgraph.tensors:
      q = tensor.quantization
      if q is not None:
        n_scale = 0 if q.scale is None else len(q.scale)
        n_zero = 0 if q.zeroPoint is None else len(q.zeroPoint)
        n_minmax = sum(0 if v is None else len(v) for v in (q.min, q.max))
        quant_bytes += n_scale * _SCALE_BYTES + n_zero * _ZERO_POINT_BYTES + n_minmax * 4
        channels += n_scale
        per_channel += n_scale > 1
      data = model.buffers[tensor.buffer].data
      if tensor.buffer in seen or data is None or len(data) == 0:
        continue
      seen.add(tensor.buffer)
      dtype = flatbuffer_utils.type_to_name(tensor.type).lower()
      buffers[dtype] += len(data)
      raw[dtype].append(np.asarray(data, np.uint8).tobytes())
      constants[dtype] += len(data) // _itemsize(dtype)
      if dtype == 'int8':
        values = np.asarray(data, np.uint8).view(np.int8)
        int8_tensors.append(values)
        per_channel_max = max(per_channel_max, _distinct_per_channel(values, tensor))
  metadata = 0
  for entry in model.metadata or []:
    data = model.buffers[entry.buffer].data
    if entry.buffer not in seen and data is not None:
      metadata += len(data)
  structure = len(model_bytes) - sum(buffers.values()) - quant_bytes - metadata
  result = {
      'file_bytes': len(model_bytes),
      'buffers': dict(buffers),
      'gzip_buffers': {k: tflite.gzip_size(b''.join(v)) for k, v in raw.items()},
      'constants': dict(constants),
      'quant_params_bytes': quant_bytes,
      'per_channel_tensors': per_channel,
      'quant_channels': channels,
      'metadata_bytes': metadata,
      'structure_bytes': structure,
  }
  if int8_tensors:
    total = sum(t.size for t in int8_tensors)
    result['int8_weights'] = {
        'values': total,
        'zero_fraction': sum(int((t == 0).sum()) for t in int8_tensors) / total,
        'distinct_per_tensor_max': max(int(np.unique(t).size) for t in int8_tensors),
        'distinct_per_channel_max': per_channel_max,
        'entropy_bits': sum(entropy_bits(t) * t.size for t in int8_tensors) / total,
        'gzip_bits': 8 * result['gzip_buffers']['int8'] / total,
    }
  return result


def xnnpack_coverage(model_bytes: bytes) -> Dict[str, Any]:
  """Which ops of the main subgraph the XNNPACK delegate took, with LiteRT's default resolver.

  LiteRT keeps the replaced nodes in its node list and appends one DELEGATE node per delegated
  partition, so an op counts as delegated when it lies between a DELEGATE node's inputs and
  outputs (walking back from the outputs through the ops that produce each tensor).

  Returns:
    {'ops': number of ops, 'delegated': how many XNNPACK took, 'outside': {op name: count} of the
    ops left to LiteRT's own kernels}.
  """
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  interp = litert.Interpreter(model_content=model_bytes, num_threads=1)
  interp.allocate_tensors()
  ops = interp._get_ops_details()  # pylint: disable=protected-access
  by_index = {op['index']: op for op in ops}
  real = [op for op in ops if op['op_name'] != 'DELEGATE']
  producer = {t: op['index'] for op in real for t in op['outputs']}
  delegated = set()
  for node in ops:
    if node['op_name'] != 'DELEGATE':
      continue
    boundary = set(node['inputs'])
    frontier = list(node['outputs'])
    while frontier:
      tensor = frontier.pop()
      if tensor in boundary or tensor not in producer or producer[tensor] in delegated:
        continue
      delegated.add(producer[tensor])
      frontier.extend(t for t in by_index[producer[tensor]]['inputs'] if t >= 0)
  outside = collections.Counter(op['op_name'] for op in real if op['index'] not in delegated)
  return {'ops': len(real), 'delegated': len(delegated), 'outside': dict(outside)}


def summarize_bytes(a: Dict[str, Any]) -> str:
  """One line: where a file's bytes go, largest first."""
  parts = [(f'{dtype} constants', n) for dtype, n in a['buffers'].items()]
  parts += [('quantization params', a['quant_params_bytes']), ('metadata', a['metadata_bytes']),
            ('graph structure', a['structure_bytes'])]
  parts = sorted((p for p in parts if p[1]), key=lambda p: -p[1])
  return ', '.join(f'{name} {n:,} B ({100 * n / a["file_bytes"]:.1f}%)' for name, n in parts)


def gzip_ratio_bound(bits_per_weight: float) -> float:
  """How many times smaller than float32 (32 bits) weights coded at this many bits can get."""
  return 32.0 / bits_per_weight if bits_per_weight > 0 else math.inf
