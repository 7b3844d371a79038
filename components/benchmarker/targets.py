"""Where DeviceBenchmarker measures: the target abstraction; plain logic, no TFX.

A target is named by a spec string, given to the component when the pipeline is built:

  host                     this machine (the pipeline step's own container), one LiteRT process
                           per model and thread count. Implemented.
  adb[:SERIAL]             an Android device over adb, running LiteRT's `benchmark_model` binary.
                           Designed, not yet available (see below).
  k8s:KEY=VALUE[,K=V...]   a Kubernetes Job on a node pool chosen by node selector, running this
                           project's image with `python -m components.benchmarker.measure`.
                           Designed, not yet available.

Every target implements `Target`: `describe()` returns what identifies the hardware and runtime
(recorded next to the numbers) and `measure(model_path, threads, settings)` returns the fields of
`measure.measure_isolated`. A remote target is responsible for copying the model to the device,
running one isolated process per thread count and mapping its tool's output onto those fields; the
executor, the budgets and the reports do not change. The planned remote targets:

- `adb`: `adb -s SERIAL push model.tflite /data/local/tmp/`, then `adb shell benchmark_model
  --graph=... --num_threads=N --use_xnnpack=true --warmup_runs=W --num_runs=R --min_secs=S
  --report_peak_memory_footprint=true`, parsing "Inference timings in us" and the memory
  footprint lines; `describe()` from `getprop ro.product.model`, `ro.board.platform` and
  /proc/cpuinfo on the device.
- `k8s`: a Job (nodeSelector from the spec, the pipeline-root PVC mounted read-only, requests =
  limits so the pod gets whole cores) per model and thread count; the result JSON is read from the
  pod's log.

Specs are checked when the pipeline is built; an unknown kind, a malformed spec or a designed but
unavailable target raises ConfigError there, naming what is accepted.
"""
import abc
import re
from typing import Any, Dict

from components.benchmarker import budgets
from components.benchmarker import measure
from components.errors import ConfigError

HOST = 'host'
_PLANNED = {
    'adb': re.compile(r'^adb(:[A-Za-z0-9._:-]+)?$'),
    'k8s': re.compile(
        r'^k8s:[A-Za-z0-9./_-]+=[A-Za-z0-9._-]*(,[A-Za-z0-9./_-]+=[A-Za-z0-9._-]*)*$'),
}
ACCEPTED = ('host', 'adb[:SERIAL] (planned)', 'k8s:KEY=VALUE[,KEY=VALUE...] (planned)')


class Target(abc.ABC):
  """A place where TFLite models are measured."""

  def __init__(self, spec: str):
    self.spec = spec

  @abc.abstractmethod
  def describe(self) -> Dict[str, Any]:
    """CPU model and flags, core count, OS and runtime version of the target."""

  @abc.abstractmethod
  def measure(self, model_path: str, threads: int,
              settings: budgets.MeasureSettings) -> Dict[str, Any]:
    """One isolated measurement; the fields of `measure.measure_isolated`."""


class HostTarget(Target):
  """This machine: one fresh LiteRT process per model and thread count."""

  def describe(self) -> Dict[str, Any]:
    return measure.host_info()

  def measure(self, model_path: str, threads: int,
              settings: budgets.MeasureSettings) -> Dict[str, Any]:
    return measure.measure_isolated(model_path, threads, warmup_runs=settings.warmup_runs,
                                    min_runs=settings.min_runs,
                                    min_duration_s=settings.min_duration_s, seed=settings.seed)


def validate(spec: Any) -> str:
  """Checks a target spec; returns it, or raises ConfigError saying what is accepted."""
  if not isinstance(spec, str) or not spec:
    raise ConfigError(f'target={spec!r} is not accepted: give one of {", ".join(ACCEPTED)}.')
  if spec == HOST:
    return spec
  kind = spec.split(':', 1)[0]
  if kind in _PLANNED:
    if not _PLANNED[kind].match(spec):
      raise ConfigError(f'target={spec!r} is malformed; accepted: {", ".join(ACCEPTED)}.')
    raise ConfigError(
        f'target={spec!r}: the {kind!r} target is designed but not available in this release '
        '(see components/benchmarker/targets.py and docs/device_benchmarker.md); use '
        f'target={HOST!r} in a step scheduled on the device class you want to measure.')
  raise ConfigError(f'target={spec!r} is unknown; accepted: {", ".join(ACCEPTED)}.')


def create(spec: str) -> Target:
  """The Target for a validated spec."""
  validate(spec)
  return HostTarget(spec)
