"""The health check: a new model must load, have the signed tensors and compute the golden output.

The publisher records, as a signed target next to each model, a golden record (golden_record()):
an input, the output the model computed on it with LiteRT, and a tolerance. Before switching to
a new model, the device (check()) loads it with LiteRT, compares its input and output tensors with
the ones the release's signed custom info lists, runs the golden input and compares the outputs
within the tolerance. The publisher and the device run this same code.

LiteRT (ai-edge-litert, the `litert` extra) and numpy are imported only when a check runs, so
the client installs and fetches without them.

A golden record (JSON):

    {"format": 1,
     "inputs":  [{"name": ..., "dtype": "float32", "shape": [1, 64], "data": BASE64}],
     "outputs": [{"name": ..., "dtype": "float32", "shape": [1, 10], "data": BASE64,
                  "atol": 0.02}]}

`data` is the tensor's bytes, little-endian, in C order. An output passes when every element is
within `atol` of the recorded value.
"""
import base64
import json
from typing import Any, Dict, List, Mapping, Optional

FORMAT = 1
# An output element may differ from the recorded one by this fraction of the output's largest
# magnitude: a different CPU (another kernel, XNNPACK or not) moves int8 results by a few
# quantization steps, while a broken or different model moves them by far more.
DEFAULT_TOLERANCE = 0.05
MIN_ATOL = 1e-6
AUTO, REQUIRE, OFF = 'auto', 'require', 'off'
MODES = (AUTO, REQUIRE, OFF)
INSTALL_LITERT = 'pip install "tfx-edge-device[litert]"'


def litert_available() -> bool:
  try:
    import ai_edge_litert.interpreter  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


def _interpreter(model: bytes):
  """The model in LiteRT's interpreter, with its tensors allocated.

  LiteRT's builtin kernels without the default (XNNPACK) delegate, on the publisher and on the
  device alike: the same kernels compute the same golden output, and nothing is logged.
  """
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  interp = litert.Interpreter(
      model_content=model,
      experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
  interp.allocate_tensors()
  return interp


def _shape(detail) -> List[int]:
  return [int(x) for x in detail['shape_signature']]


def tensor_specs(interp) -> Dict[str, List[Dict[str, Any]]]:
  """{'inputs': [...], 'outputs': [...]}: name, dtype, shape, scale, zero_point of each tensor.

  The same fields as the `tensors` tfx-edge signs in a release's custom info.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top

  def describe(details):
    return [{'name': d['name'], 'dtype': np.dtype(d['dtype']).name, 'shape': _shape(d),
             'scale': float(d['quantization'][0]), 'zero_point': int(d['quantization'][1])}
            for d in details]
  return {'inputs': describe(interp.get_input_details()),
          'outputs': describe(interp.get_output_details())}


def _encode(array) -> Dict[str, Any]:
  import numpy as np  # pylint: disable=g-import-not-at-top
  little = array.astype(array.dtype.newbyteorder('<'), copy=False)
  return {'dtype': np.dtype(array.dtype).name, 'shape': list(array.shape),
          'data': base64.b64encode(np.ascontiguousarray(little).tobytes()).decode('ascii')}


def _decode(entry: Mapping[str, Any]):
  import numpy as np  # pylint: disable=g-import-not-at-top
  dtype = np.dtype(entry['dtype']).newbyteorder('<')
  flat = np.frombuffer(base64.b64decode(entry['data']), dtype=dtype)
  return flat.reshape(entry['shape']).astype(np.dtype(entry['dtype']))


def deterministic_inputs(interp, seed: int = 0) -> List[Any]:
  """One input array per model input, the same on every machine for a seed.

  Float inputs are uniform in [0, 1); quantized integer inputs cover their type's range; integer
  inputs without a scale (ids, counts) are 0 or 1, valid for any embedding or lookup.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  out = []
  for d in interp.get_input_details():
    shape = [max(1, int(x)) for x in d['shape_signature']] or []
    dtype = np.dtype(d['dtype'])
    if np.issubdtype(dtype, np.floating):
      out.append(rng.random(shape).astype(dtype))
    elif np.issubdtype(dtype, np.integer) and d['quantization'][0]:
      info = np.iinfo(dtype)
      out.append(rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype))
    elif np.issubdtype(dtype, np.integer) or dtype == np.bool_:
      out.append(rng.integers(0, 2, shape).astype(dtype))
    else:
      raise ValueError(f'input {d["name"]!r} has dtype {dtype.name}, for which no golden input '
                       'is generated; pass the inputs.')
  return out


def _run(interp, inputs) -> List[Any]:
  details = interp.get_input_details()
  for d, value in zip(details, inputs):
    if list(value.shape) != list(d['shape']):
      interp.resize_tensor_input(d['index'], list(value.shape))
  if any(list(v.shape) != list(d['shape']) for d, v in zip(details, inputs)):
    interp.allocate_tensors()
  for d, value in zip(interp.get_input_details(), inputs):
    interp.set_tensor(d['index'], value)
  interp.invoke()
  return [interp.get_tensor(d['index']).copy() for d in interp.get_output_details()]


def golden_record(model: bytes, inputs: Optional[List[Any]] = None,
                  tolerance: float = DEFAULT_TOLERANCE, seed: int = 0) -> Dict[str, Any]:
  """What a publisher signs next to a model: an input, the model's output on it, a tolerance.

  Args:
    model: the .tflite bytes.
    inputs: one array per model input (for example an evaluation example); default
      deterministic_inputs(seed).
    tolerance: each output's `atol` is this fraction of its largest magnitude (at least MIN_ATOL).
    seed: for the deterministic inputs.

  Raises:
    ValueError: the model does not run in LiteRT, or a bad tolerance.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not (
      0 < tolerance <= 1):
    raise ValueError(f'tolerance={tolerance!r} is not accepted: give a fraction in (0, 1] of '
                     f'the largest output magnitude (default {DEFAULT_TOLERANCE}).')
  interp = _interpreter(model)
  if inputs is None:
    inputs = deterministic_inputs(interp, seed)
  inputs = [np.asarray(x) for x in inputs]
  outputs = _run(interp, inputs)
  names = [d['name'] for d in interp.get_input_details()]
  record_outputs = []
  for d, value in zip(interp.get_output_details(), outputs):
    largest = float(np.max(np.abs(value.astype(np.float64)))) if value.size else 0.0
    record_outputs.append(dict(_encode(value), name=d['name'],
                               atol=max(MIN_ATOL, tolerance * largest)))
  return {'format': FORMAT,
          'inputs': [dict(_encode(x), name=n) for n, x in zip(names, inputs)],
          'outputs': record_outputs}


def record_bytes(record: Mapping[str, Any]) -> bytes:
  """The bytes of a golden target: JSON with sorted keys, so the same record hashes the same."""
  return json.dumps(record, sort_keys=True, separators=(',', ':')).encode()


def _spec_differences(signed: Mapping[str, Any], actual: Mapping[str, Any]) -> List[str]:
  """What differs between the signed tensor specs and the model's (empty when they match)."""
  found = []
  for kind in ('inputs', 'outputs'):
    want, have = list(signed.get(kind) or []), actual[kind]
    if len(want) != len(have):
      found.append(f'{len(have)} {kind} where the release lists {len(want)} '
                   f'({[t["name"] for t in want]})')
      continue
    for w, h in zip(want, have):
      for field in ('name', 'dtype', 'shape', 'zero_point'):
        if field in w and w[field] != h[field]:
          found.append(f'{kind[:-1]} {h["name"]!r}: {field} {h[field]!r}, signed {w[field]!r}')
      if 'scale' in w and abs(float(w['scale']) - h['scale']) > 1e-6 * max(1.0, abs(h['scale'])):
        found.append(f'{kind[:-1]} {h["name"]!r}: scale {h["scale"]!r}, signed {w["scale"]!r}')
  return found


def check(model: bytes, custom: Mapping[str, Any], golden: Optional[bytes],
          mode: str = AUTO) -> Dict[str, Any]:
  """Checks a downloaded model before it is switched to.

  Args:
    model: the verified model bytes.
    custom: the release's signed custom info (its `tensors`, when recorded).
    golden: the verified golden target's bytes, or None when the release has none.
    mode: `auto` checks what the release records when LiteRT is installed and skips otherwise;
      `require` fails when LiteRT is missing or the release records nothing to check; `off`
      skips.

  Returns:
    {'passed': bool, 'ran': bool, 'reason': str, 'checks': [...]} where each check is
    {'check': load|tensors|golden, 'passed': bool, ...details}.
  """
  if mode == OFF:
    return {'passed': True, 'ran': False, 'reason': 'health check off (--health-check off)',
            'checks': []}
  signed = custom.get('tensors') or {}
  has_specs = bool(signed.get('inputs') or signed.get('outputs'))  # A model has some.
  has_golden = golden is not None
  if not litert_available():
    reason = f'ai-edge-litert is not installed ({INSTALL_LITERT})'
    return {'passed': mode != REQUIRE, 'ran': False, 'checks': [],
            'reason': reason + ('' if mode != REQUIRE else '; --health-check require needs it')}
  if not (has_specs or has_golden):
    reason = 'the release records neither tensor specs nor a golden record'
    return {'passed': mode != REQUIRE, 'ran': False, 'checks': [],
            'reason': reason + ('' if mode != REQUIRE else '; --health-check require needs one')}
  checks = []

  def failed(reason):
    return {'passed': False, 'ran': True, 'reason': reason, 'checks': checks}

  try:
    interp = _interpreter(model)
  except Exception as e:  # pylint: disable=broad-except  # LiteRT raises ValueError/RuntimeError.
    checks.append({'check': 'load', 'passed': False, 'error': f'{type(e).__name__}: {e}'})
    return failed(f'the model does not load in LiteRT ({type(e).__name__}: '
                  f'{str(e).strip()[:200]})')
  checks.append({'check': 'load', 'passed': True})
  actual = tensor_specs(interp)
  if has_specs:
    differences = _spec_differences(custom['tensors'], actual)
    checks.append({'check': 'tensors', 'passed': not differences, 'differences': differences})
    if differences:
      return failed('its tensors differ from the signed ones: ' + '; '.join(differences[:5]))
  if has_golden:
    result = _check_golden(interp, golden)
    checks.append(result)
    if not result['passed']:
      return failed(result['reason'])
  return {'passed': True, 'ran': True, 'reason': 'passed: ' + ', '.join(c['check'] for c in checks),
          'checks': checks}


def _check_golden(interp, golden: bytes) -> Dict[str, Any]:
  import numpy as np  # pylint: disable=g-import-not-at-top
  try:
    record = json.loads(golden)
    if record.get('format') != FORMAT:
      raise ValueError(f'format {record.get("format")!r}, this client reads format {FORMAT}')
    inputs = [_decode(x) for x in record['inputs']]
    expected = [(_decode(y), float(y['atol']), y.get('name')) for y in record['outputs']]
  except (ValueError, KeyError, TypeError) as e:
    return {'check': 'golden', 'passed': False,
            'reason': f'the golden record cannot be read ({type(e).__name__}: {e})'}
  try:
    outputs = _run(interp, inputs)
  except Exception as e:  # pylint: disable=broad-except
    return {'check': 'golden', 'passed': False,
            'reason': f'the model fails on the golden input ({type(e).__name__}: {e})'}
  if len(outputs) != len(expected):
    return {'check': 'golden', 'passed': False, 'reason': f'the model gives {len(outputs)} '
            f'outputs, the golden record {len(expected)}'}
  per_output, worst = [], None
  for value, (want, atol, name) in zip(outputs, expected):
    if value.shape != want.shape:
      entry = {'name': name, 'passed': False,
               'error': f'shape {list(value.shape)}, golden {list(want.shape)}'}
    else:
      diff = np.abs(value.astype(np.float64) - want.astype(np.float64))
      max_error = float(diff.max()) if diff.size else 0.0
      entry = {'name': name, 'passed': max_error <= atol, 'max_abs_error': max_error,
               'atol': atol}
    per_output.append(entry)
    if not entry['passed'] and worst is None:
      worst = entry
  if worst is None:
    return {'check': 'golden', 'passed': True, 'outputs': per_output}
  detail = worst.get('error') or (f'max |error| {worst["max_abs_error"]:.6g} > tolerance '
                                  f'{worst["atol"]:.6g}')
  return {'check': 'golden', 'passed': False, 'outputs': per_output,
          'reason': f'output {worst["name"]!r} on the golden input is outside the tolerance '
                    f'({detail})'}
