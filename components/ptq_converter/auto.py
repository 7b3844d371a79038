"""`int8_auto`: int8 with the fewest layers kept in float that the accuracy needs. Plain logic.

Plain int8 sometimes loses accuracy in one or two layers only: a layer whose activations have a
few huge values next to many small ones (one per-tensor scale then rounds the small ones to
zero), or an op that is numerically fragile. Keeping just those layers in float recovers the
accuracy at a small size and latency cost, which is what NNCF's accuracy-controlled quantization
does for OpenVINO. Here:

1. the int8 model is measured; if it is within `max_drop` of the float32 model, it is kept;
2. TFLite's QuantizationDebugger runs the calibration sample through a debug model in which every
   quantized op is checked against a float op fed the same (dequantized) inputs, so each op's
   error is its own, not the accumulated error of the layers before it;
3. each Keras layer's error is the worst of its ops', as RMSE relative to the typical magnitude of
   the float output (the median absolute non-zero value): a scale that is far too coarse for most
   of a tensor's values shows up even when a few outliers dominate the tensor's range;
4. greedily, one layer per step: each of the few worst layers is tried in float (its ops
   denylisted for the quantizer), the one that recovers most accuracy stays float, and the errors
   are measured again (a broken layer inflates the relative error of the layers after it), until
   the accuracy is within `max_drop`, or `fallback_budget` (the share of layers allowed in float)
   is used up, which is an error that gives the figures.

The accuracy measure is the caller's (`evaluate`): the executor measures the task's metric with a
LiteRT interpreter on eval examples, and the TFMA gate checks the result again afterwards.
"""
import dataclasses
import re
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
from tensorflow.lite.tools.optimize.debugging.python import debugger as debugger_lib

from components.common import config
from components.common import tasks
from components.common import tflite
from components.errors import ConfigError
from components.errors import ConversionError

# The debugger's own names, which the TFLite converter gives each op's output tensor: for a Keras
# model `<model>/<layer>/<op>...`, several of them joined by ';' when ops were fused.
_LAYER = re.compile(r'^[^/;]+/([^/;]+)/')
DEFAULT_MAX_DROP = 0.01
DEFAULT_FALLBACK_BUDGET = 0.1


def validate_options(max_drop: float, fallback_budget: float) -> None:
  """Raises ConfigError for a tolerance or budget outside what int8_auto accepts."""
  if not isinstance(max_drop, (int, float)) or isinstance(max_drop, bool) or not (
      0 <= max_drop < 1):
    raise ConfigError(f'int8_auto max_drop={max_drop!r} is not accepted: give the largest drop '
                      'of the accuracy metric against float32 as a fraction in [0, 1) (0.01 is '
                      'one point).')
  if not isinstance(fallback_budget, (int, float)) or isinstance(fallback_budget, bool) or not (
      0 < fallback_budget <= 1):
    raise ConfigError(f'int8_auto fallback_budget={fallback_budget!r} is not accepted: give the '
                      'largest share of layers that may stay in float, in (0, 1] (0.1 is 10%).')


@dataclasses.dataclass(frozen=True)
class AutoConfig(config.JsonConfig):
  """Options of PTQConverter(mode='int8_auto').

  Attributes:
    max_drop: largest accepted drop of the accuracy metric against the float32 model (a fraction:
      0.01 is one point; for a regression, in label units of mean absolute error).
    fallback_budget: largest share of quantized layers that may stay in float, in (0, 1].
    eval_split: the split of `examples` the accuracy is measured on (labelled).
    eval_examples: how many of its examples (the first ones; positive).
    task: the model's task (components.common.tasks); None infers it from the output layer.
  """
  max_drop: float = DEFAULT_MAX_DROP
  fallback_budget: float = DEFAULT_FALLBACK_BUDGET
  eval_split: str = 'eval'
  eval_examples: int = 1000
  task: Optional[str] = None

  def __post_init__(self):
    validate_options(self.max_drop, self.fallback_budget)
    if not isinstance(self.eval_split, str) or not self.eval_split:
      raise ConfigError(f'int8_auto eval_split={self.eval_split!r} is not accepted: give a '
                        'labelled split of examples, for example "eval".')
    if (not isinstance(self.eval_examples, int) or isinstance(self.eval_examples, bool) or
        self.eval_examples < 1):
      raise ConfigError(f'int8_auto eval_examples={self.eval_examples!r} is not accepted: give '
                        'a positive number of examples.')
    if self.task is not None:
      tasks.validate_task(self.task)


def score(task: str, outputs: np.ndarray, labels: np.ndarray) -> float:
  """The task's accuracy of outputs against labels, higher is better (negated MAE for a
  regression), computed as the gate's metric is: argmax, or a threshold at 0.5 or logit 0."""
  if task == tasks.MULTICLASS:
    return float(np.mean(np.argmax(outputs, -1) == labels.reshape(-1)))
  if task == tasks.REGRESSION:
    return -float(np.mean(np.abs(outputs.reshape(labels.shape) - labels)))
  threshold = 0.0 if task in tasks.LOGIT_TASKS else 0.5
  return float(np.mean((outputs.reshape(labels.shape) > threshold) == (labels > 0.5)))


@dataclasses.dataclass
class AutoResult:
  """What int8_auto chose, for the artifact's properties and the logs."""
  model: bytes
  float_layers: List[str]
  layer_errors: Dict[str, float]  # every quantized layer's relative error, worst first
  accuracy: Dict[str, float]  # float32, int8, int8_auto
  size_bytes: Dict[str, int]  # int8, int8_auto
  latency_ms: Dict[str, float]  # int8, int8_auto (median of a short run on this host)
  layers: int
  tried: List[Dict[str, float]]

  def summary(self) -> Dict[str, object]:
    """JSON-ready: what stayed float and what it cost."""
    return {
        'float_layers': self.float_layers,
        'float_layer_errors': {n: self.layer_errors[n] for n in self.float_layers},
        'worst_layer_errors': dict(list(self.layer_errors.items())[:10]),
        'layers': self.layers,
        'accuracy': self.accuracy,
        'size_bytes': self.size_bytes,
        'latency_ms': self.latency_ms,
        'tried': self.tried,
    }


def layer_of(tensor_name: str, layer_names: Sequence[str] = ()) -> str:
  """The Keras layer an op's output tensor belongs to (its first name when fused).

  With the model's layer names, the first component of the tensor's name scope that is one of
  them: the scope starts with the model's name for layers the converter traced in the model's
  function (`model/dense_1/MatMul`), and with the layer's own for a restored custom layer's
  (`hostile/dense/MatMul`). Without them, the component after the model's name.
  """
  first = tensor_name.split(';')[0]
  for part in first.split('/')[:-1]:
    if part in layer_names:
      return part
  match = _LAYER.match(first)
  return match.group(1) if match else first


def _relative_rmse(float_tensor, quant_tensor, scale, zero_point) -> float:
  # Signature fixed by QuantizationDebugOptions.layer_direct_compare_metrics.
  dequantized = (quant_tensor.astype(np.float32) - zero_point) * scale
  rmse = float(np.sqrt(np.mean(np.square(dequantized - float_tensor))))
  magnitude = np.abs(float_tensor[float_tensor != 0])
  typical = float(np.median(magnitude)) if magnitude.size else 0.0
  return rmse / max(typical, 1e-6)


def _positional(samples: Callable[[], Sequence[Mapping[str, np.ndarray]]],
                input_names: Sequence[str]) -> Callable[[], List[List[np.ndarray]]]:
  """The debugger feeds inputs by position: order each named sample like the model's inputs."""

  def generate():
    out = []
    for sample in samples():
      row = []
      for name in input_names:
        key = next((k for k in sample if name == k or name.startswith(f'serving_default_{k}:')
                    or name.startswith(f'{k}:')), None)
        if key is None:
          raise ConversionError(f'int8_auto: the calibration sample has no input for the model '
                                f'input {name!r} (it has {", ".join(sorted(sample))}).')
        row.append(np.asarray(sample[key], np.float32))
      out.append(row)
    return out
  return generate


def _median_latency_ms(model: bytes, runs: int = 30) -> float:
  interpreter = tf.lite.Interpreter(model_content=model, num_threads=1)
  interpreter.allocate_tensors()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    interpreter.invoke()
    times.append((time.perf_counter() - start) * 1000)
  return float(np.median(times))


def convert_auto(converter: tf.lite.TFLiteConverter,
                 representative_data: Callable[[], Sequence[Mapping[str, np.ndarray]]],
                 int8_model: bytes,
                 float_model: bytes,
                 evaluate: Callable[[bytes], float],
                 max_drop: float = DEFAULT_MAX_DROP,
                 fallback_budget: float = DEFAULT_FALLBACK_BUDGET,
                 debug_samples: int = 32,
                 candidates_per_step: int = 3,
                 layer_names: Sequence[str] = ()) -> AutoResult:
  """Chooses the fewest layers to keep in float so that accuracy stays within max_drop.

  Args:
    converter: a TFLiteConverter of the model, not yet used (the debugger calibrates with it).
    representative_data: the calibration sample, {input name: array with batch 1} per sample.
    int8_model: the plain int8 conversion of the model.
    float_model: its float32 conversion, the reference.
    evaluate: accuracy metric (higher is better) of a TFLite model on eval examples.
    max_drop: largest accepted drop of `evaluate` against the float32 model.
    fallback_budget: largest share of quantized layers that may stay in float.
    debug_samples: calibration samples the debugger runs (its error statistics).
    candidates_per_step: worst layers tried in float at each step of the search.
    layer_names: the Keras model's layer names, which group the ops into layers (see layer_of).

  Returns:
    The chosen model and what was measured.

  Raises:
    ConfigError: bad max_drop or fallback_budget.
    ConversionError: no choice within the budget reaches the accuracy (with the figures).
  """
  validate_options(max_drop, fallback_budget)
  reference = evaluate(float_model)
  int8_accuracy = evaluate(int8_model)
  accuracy = {'float32': reference, 'int8': int8_accuracy}
  logging.info('int8_auto: float32 %.4f, int8 %.4f (max drop %.4f).', reference, int8_accuracy,
               max_drop)

  converter.optimizations = [tf.lite.Optimize.DEFAULT]

  def limited():
    return list(representative_data())[:debug_samples]

  converter.representative_dataset = limited
  input_names = [d['name'] for d in tf.lite.Interpreter(
      model_content=float_model).get_input_details()]
  debugger = debugger_lib.QuantizationDebugger(
      converter=converter, debug_dataset=_positional(limited, input_names),
      debug_options=_options([]))
  nodes: Dict[str, List[str]] = {}
  first = _layer_errors(debugger, nodes, layer_names)
  budget = max(1, int(np.floor(fallback_budget * len(first))))
  logging.info('int8_auto: %d quantized layers; worst relative errors: %s', len(first),
               ', '.join(f'{n} {e:.3g}' for n, e in list(first.items())[:5]))

  def result(model: bytes, float_layers: List[str], tried) -> AutoResult:
    return AutoResult(
        model=model, float_layers=float_layers, layer_errors=first, accuracy=accuracy,
        size_bytes={'int8': len(int8_model), 'int8_auto': len(model)},
        latency_ms={'int8': _median_latency_ms(int8_model),
                    'int8_auto': _median_latency_ms(model)},
        layers=len(first), tried=tried)

  if reference - int8_accuracy <= max_drop:
    accuracy['int8_auto'] = int8_accuracy
    logging.info('int8_auto: plain int8 is within the drop: no layer stays in float.')
    return result(int8_model, [], [])

  # Greedy, one layer per step. A layer that wrecks its output also inflates the relative error
  # of the layers after it (their inputs collapse), so the worst few are each tried in float,
  # the one that recovers most accuracy is kept, and the errors are measured again without it.
  chosen: List[str] = []
  tried = []
  errors = first
  for _ in range(budget):
    scores = {}
    for layer in [n for n in errors if n not in chosen][:candidates_per_step]:
      candidate = _with_float(debugger, nodes, chosen + [layer])
      scores[layer] = (evaluate(candidate), candidate)
      tried.append({'float_layers': chosen + [layer], 'accuracy': scores[layer][0]})
      logging.info('int8_auto: %s in float: %.4f.', ', '.join(chosen + [layer]),
                   scores[layer][0])
    best = max(scores, key=lambda n: scores[n][0])
    chosen.append(best)
    if reference - scores[best][0] <= max_drop:
      accuracy['int8_auto'] = scores[best][0]
      return result(scores[best][1], chosen, tried)
    debugger.options = _options(chosen, nodes)
    errors = _layer_errors(debugger, nodes, layer_names)
  raise ConversionError(
      f'int8_auto: no choice of at most {budget} of {len(first)} layers in float '
      f'(fallback_budget={fallback_budget}) keeps the accuracy within {max_drop} of float32 '
      f'({reference:.4f}; int8 {int8_accuracy:.4f}; tried: '
      + ', '.join(f'{"+".join(t["float_layers"])} -> {t["accuracy"]:.4f}' for t in tried)
      + f'). Worst layers: {", ".join(f"{n} ({e:.3g})" for n, e in list(first.items())[:5])}. '
      'Raise fallback_budget, or fix the layers (their activation ranges) in the model.')


def _options(float_layers: List[str], nodes: Optional[Mapping[str, List[str]]] = None):
  return debugger_lib.QuantizationDebugOptions(
      layer_direct_compare_metrics={'relative_rmse': _relative_rmse},
      denylisted_nodes=[n for layer in float_layers for n in (nodes or {})[layer]] or None)


def _layer_errors(debugger, nodes: Dict[str, List[str]],
                  layer_names: Sequence[str]) -> Dict[str, float]:
  """{Keras layer: its worst op's relative error}, worst first; fills nodes {layer: tensors}.

  Ops whose names name no layer (a restored custom layer's ops can lose its name scope) are
  grouped with the unnamed ops right before them, in graph order: one layer's ops are adjacent.
  """
  debugger.run()
  by_layer: Dict[str, float] = {}
  group = None
  for verify_name, stats in debugger.layer_statistics.items():
    # pylint: disable-next=protected-access
    tensor, _ = debugger._get_operand_name_and_index(verify_name)
    layer = layer_of(tensor, layer_names)
    if layer_names and layer not in layer_names:
      group = group or layer
      layer = group
    else:
      group = None
    error = float(stats['relative_rmse'])
    by_layer[layer] = max(by_layer.get(layer, 0.0), error if np.isfinite(error) else np.inf)
    if tensor not in nodes.setdefault(layer, []):
      nodes[layer].append(tensor)
  return dict(sorted(by_layer.items(), key=lambda item: -item[1]))


def _with_float(debugger, nodes: Mapping[str, List[str]], float_layers: List[str]) -> bytes:
  debugger.options = _options(float_layers, nodes)
  return debugger.get_nondebug_quantized_model()


def float_op_count(model: bytes) -> int:
  """Ops the chosen model runs in float (for the artifact's record)."""
  return len(tflite.float_ops(model))


def predictions(model: bytes, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
  """The model's first output for every row of `inputs` ({input name: array [N, ...]}), in float.

  Quantized inputs and outputs are converted with the tensors' own scale and zero point, as a
  device's code does, so plain int8 and int8_auto models are measured alike.
  """
  interpreter = tf.lite.Interpreter(model_content=model)
  interpreter.allocate_tensors()
  details = interpreter.get_input_details()
  output = interpreter.get_output_details()[0]
  rows = len(next(iter(inputs.values())))
  feeds = []
  for detail in details:
    key = next((k for k in inputs if detail['name'] == k or detail['name'].startswith(
        f'serving_default_{k}:') or detail['name'].startswith(f'{k}:')), None)
    if key is None:
      raise ConversionError(f'int8_auto: no eval input for the model input {detail["name"]!r}.')
    feeds.append((detail, np.asarray(inputs[key])))
  out = []
  for i in range(rows):
    for detail, values in feeds:
      params = detail['quantization_parameters']
      interpreter.set_tensor(detail['index'], tflite.device_input(
          values[i:i + 1].astype(np.float32), params['scales'], params['zero_points'],
          detail['dtype']))
    interpreter.invoke()
    result = interpreter.get_tensor(output['index']).astype(np.float32)
    scale, zero_point = output['quantization']
    if output['dtype'] in (np.int8, np.uint8, np.int16) and scale:
      result = (result - zero_point) * scale
    out.append(result[0])
  return np.stack(out)
