"""Measures one TFLite model at one thread count with the LiteRT interpreter.

Run as a module (`python -m components.benchmarker.measure`) in a fresh process for every model and
thread setting, so that one measurement's memory, thread pools and caches never leak into the next
and a model that crashes the interpreter only ends its own process. The process imports numpy and
LiteRT (and plain-Python modules of this package), never TensorFlow, so its peak RSS is mostly
the model's.

No TFX here: the executor and the benchmark suite both call `measure_isolated`.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import numpy as np

from components.benchmarker.budgets import MeasureSettings
from components.errors import MeasurementError

_DEFAULT = MeasureSettings()  # The defaults of the functions and flags below.

# The CPU features that decide which XNNPACK kernels run (int8 dot products, fp16, AVX-512).
_CPU_FLAGS_OF_INTEREST = ('sse4_1', 'sse4_2', 'avx', 'avx2', 'fma', 'f16c', 'avx512f', 'avx512bw',
                          'avx512vl', 'avx512_vnni', 'avx512_bf16', 'avx512_fp16', 'avx_vnni',
                          'amx_int8', 'asimd', 'asimddp', 'i8mm', 'fphp', 'asimdhp', 'sve')


def percentile(sorted_values: List[float], p: float) -> float:
  """Linear-interpolated percentile of already sorted values (numpy's default method)."""
  return float(np.percentile(np.asarray(sorted_values), p)) if sorted_values else 0.0


def host_info() -> Dict[str, Any]:
  """CPU model, the CPU flags that matter for TFLite kernels, core count and runtime version."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        key = key.strip()
        if key in ('model name', 'Hardware', 'CPU part') and model in ('', platform.machine(),
                                                                         platform.processor()):
          model = value.strip()
        elif key in ('flags', 'Features') and not flags:
          flags = set(value.split())
  except OSError:  # Not Linux: keep platform's answer.
    pass
  return {
      'cpu_model': model,
      'cpu_flags': sorted(flags & set(_CPU_FLAGS_OF_INTEREST)),
      'cpu_count': os.cpu_count(),
      'machine': platform.machine(),
      'system': f'{platform.system()} {platform.release()}',
      'python': platform.python_version(),
      'runtime': f'ai-edge-litert {_litert_version()}',
  }


def _litert_version() -> str:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    return metadata.version('ai-edge-litert')
  except metadata.PackageNotFoundError:
    return 'unknown'


def _rss_bytes() -> int:
  """Current resident set size (Linux /proc; falls back to the peak elsewhere)."""
  try:
    with open('/proc/self/statm') as f:
      return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
  except OSError:
    return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
  """This process's peak RSS.

  On Linux it is VmHWM: getrusage's ru_maxrss survives fork+exec, so a child started by a large
  parent (a TFX executor holding TensorFlow) would report the parent's peak instead of its own.
  """
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak if sys.platform == 'darwin' else peak * 1024  # macOS reports bytes, Linux KiB.


def _random_input(detail: Dict[str, Any], rng: np.random.Generator) -> np.ndarray:
  """Random data over the tensor's dtype range: latency does not depend on the values."""
  dtype, shape = np.dtype(detail['dtype']), detail['shape']
  if np.issubdtype(dtype, np.floating):
    return rng.uniform(-1.0, 1.0, shape).astype(dtype)
  if np.issubdtype(dtype, np.integer):
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -128), min(info.max, 127), shape, endpoint=True, dtype=dtype)
  return np.zeros(shape, dtype=dtype)


def measure(model_path: str, threads: int, warmup_runs: int = _DEFAULT.warmup_runs,
            min_runs: int = _DEFAULT.min_runs, min_duration_s: float = _DEFAULT.min_duration_s,
            max_runs: int = 100_000, seed: int = _DEFAULT.seed) -> Dict[str, Any]:
  """Measures `model_path` in this process; see `measure_isolated` for the fields.

  Timed runs continue until both `min_runs` and `min_duration_s` are reached, so fast models get
  enough samples for a stable p99 and slow ones still finish.
  """
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  baseline_rss = _rss_bytes()
  start = time.perf_counter()
  # The default op resolver applies XNNPACK to the ops it supports, which is how LiteRT runs on
  # phones' CPUs; `num_threads` sizes XNNPACK's thread pool.
  interp = litert.Interpreter(model_path=model_path, num_threads=threads)
  interp.allocate_tensors()
  init_ms = (time.perf_counter() - start) * 1e3
  for detail in interp.get_input_details():
    interp.set_tensor(detail['index'], _random_input(detail, rng))

  def timed_invoke() -> float:
    t0 = time.perf_counter()
    interp.invoke()
    return (time.perf_counter() - t0) * 1e3

  first_ms = timed_invoke()
  warmup = [timed_invoke() for _ in range(warmup_runs)]
  runs: List[float] = []
  wall0, cpu0 = time.perf_counter(), time.process_time()
  deadline = wall0 + min_duration_s
  while len(runs) < max_runs and (len(runs) < min_runs or time.perf_counter() < deadline):
    runs.append(timed_invoke())
  # Cores kept busy during the timed runs: shows whether the thread setting took effect.
  cores_used = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
  peak_rss = _peak_rss_bytes()
  ordered = sorted(runs)
  mean = statistics.fmean(runs)
  std = statistics.stdev(runs) if len(runs) > 1 else 0.0
  return {
      'threads': threads,
      'init_ms': init_ms,
      'first_inference_ms': first_ms,
      'warmup_runs': warmup_runs,
      'warmup_mean_ms': statistics.fmean(warmup) if warmup else 0.0,
      'runs': len(runs),
      'duration_s': sum(runs) / 1e3,
      'mean_ms': mean,
      'std_ms': std,
      'cv': std / mean if mean else 0.0,
      'min_ms': ordered[0],
      'p50_ms': percentile(ordered, 50),
      'p90_ms': percentile(ordered, 90),
      'p99_ms': percentile(ordered, 99),
      'cpu_cores_used': cores_used,
      'peak_rss_mb': peak_rss / 2**20,
      # What the model costs on top of the bare runtime process: the figure to compare with a
      # device's budget (LiteRT's benchmark_model reports the same "footprint delta").
      'peak_memory_mb': max(peak_rss - baseline_rss, 0) / 2**20,
      'input_dtypes': [np.dtype(d['dtype']).name for d in interp.get_input_details()],
  }


def measure_isolated(model_path: str, threads: int, warmup_runs: int = _DEFAULT.warmup_runs,
                     min_runs: int = _DEFAULT.min_runs,
                     min_duration_s: float = _DEFAULT.min_duration_s, seed: int = _DEFAULT.seed,
                     timeout_s: float = 600.0) -> Dict[str, Any]:
  """Measures `model_path` at `threads` threads in a fresh Python process.

  Args:
    model_path: A .tflite file.
    threads: Interpreter (XNNPACK) threads.
    warmup_runs: Untimed runs after the first inference.
    min_runs: At least this many timed runs...
    min_duration_s: ...and at least this long.
    seed: Seed of the random input.
    timeout_s: The measurement is abandoned (and an error raised) after this long.

  Returns:
    A dict: threads, init_ms, first_inference_ms, warmup_mean_ms, runs, mean_ms, std_ms, cv,
    min_ms, p50_ms, p90_ms, p99_ms, cpu_cores_used (CPU time / wall time of the timed runs),
    peak_rss_mb, peak_memory_mb (peak RSS above the process's
    RSS before the model was loaded), xnnpack (whether LiteRT reported the XNNPACK delegate).

  Raises:
    MeasurementError: naming the file, when it is not a model LiteRT can run or the process
      crashed or timed out.
  """
  with tempfile.TemporaryDirectory(prefix='tfx-edge-bench-') as tmp:
    out = os.path.join(tmp, 'result.json')
    cmd = [sys.executable, '-m', __name__, '--model', model_path, '--threads', str(threads),
           '--warmup-runs', str(warmup_runs), '--min-runs', str(min_runs),
           '--min-duration-s', str(min_duration_s), '--seed', str(seed), '--output', out]
    # The child must find this package even when the caller runs from elsewhere.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))] +
        [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env,
                            check=False)
    except subprocess.TimeoutExpired as e:
      raise MeasurementError(f'measuring {model_path} at {threads} threads took longer than '
                             f'{timeout_s:.0f} s; lower min_runs/min_duration_s') from e
    if proc.returncode != 0 or not os.path.exists(out):
      how = (f'was killed by signal {-proc.returncode}' if proc.returncode < 0 else
             f'exited with {proc.returncode}')
      tail = '\n'.join(proc.stderr.strip().splitlines()[-5:])
      raise MeasurementError(f'could not benchmark {model_path} at {threads} threads: the LiteRT '
                             f'process {how}. Is it a valid .tflite file? Last output:\n{tail}')
    with open(out) as f:
      result = json.load(f)
  result['xnnpack'] = 'XNNPACK delegate' in proc.stderr
  return result


def _main(argv: Optional[List[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', required=True)
  parser.add_argument('--threads', type=int, default=1)
  parser.add_argument('--warmup-runs', type=int, default=_DEFAULT.warmup_runs)
  parser.add_argument('--min-runs', type=int, default=_DEFAULT.min_runs)
  parser.add_argument('--min-duration-s', type=float, default=_DEFAULT.min_duration_s)
  parser.add_argument('--seed', type=int, default=_DEFAULT.seed)
  parser.add_argument('--output', required=True)
  args = parser.parse_args(argv)
  result = measure(args.model, args.threads, args.warmup_runs, args.min_runs,
                   args.min_duration_s, seed=args.seed)
  with open(args.output, 'w') as f:
    json.dump(result, f)


if __name__ == '__main__':
  _main()
