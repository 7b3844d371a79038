"""Device budgets and the settings of a measurement; plain logic, no TFX."""
import dataclasses
import json
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple


def _check_positive(name: str, value: Any, integer: bool = False) -> None:
  kind = int if integer else (int, float)
  if (isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value)
      or value <= 0):
    accepted = 'a positive integer' if integer else 'a positive number'
    raise ValueError(f'{name}={value!r} is not accepted: it must be {accepted}.')


@dataclasses.dataclass(frozen=True)
class Budgets:
  """What a target device can afford; None means no limit.

  Attributes:
    max_p90_ms: p90 latency of one inference, at every measured thread count.
    max_size_bytes: the .tflite file (flash/storage).
    max_gzip_bytes: the gzip -9 payload (over-the-air download).
    max_peak_memory_mb: peak memory the model adds to the process (RSS above the bare runtime).
  """
  max_p90_ms: Optional[float] = None
  max_size_bytes: Optional[int] = None
  max_gzip_bytes: Optional[int] = None
  max_peak_memory_mb: Optional[float] = None

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if value is not None:
        _check_positive(f'Budgets.{field.name}', value, integer=field.name.endswith('_bytes'))

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'Budgets':
    return cls(**json.loads(text))

  def violations(self, size_bytes: int, gzip_bytes: int,
                 measurements: Sequence[Dict[str, Any]]) -> List[str]:
    """Each budget a model breaks, as readable text; empty when it fits."""
    found = []
    if self.max_size_bytes is not None and size_bytes > self.max_size_bytes:
      found.append(f'size {size_bytes:,} B > max_size_bytes {self.max_size_bytes:,} B')
    if self.max_gzip_bytes is not None and gzip_bytes > self.max_gzip_bytes:
      found.append(f'gzip size {gzip_bytes:,} B > max_gzip_bytes {self.max_gzip_bytes:,} B')
    for m in measurements:
      if self.max_p90_ms is not None and m['p90_ms'] > self.max_p90_ms:
        found.append(f'p90 latency {m["p90_ms"]:.3f} ms at {m["threads"]} thread(s) > '
                     f'max_p90_ms {self.max_p90_ms:g} ms')
      if self.max_peak_memory_mb is not None and m['peak_memory_mb'] > self.max_peak_memory_mb:
        found.append(f'peak memory {m["peak_memory_mb"]:.2f} MB at {m["threads"]} thread(s) > '
                     f'max_peak_memory_mb {self.max_peak_memory_mb:g} MB')
    return found


@dataclasses.dataclass(frozen=True)
class MeasureSettings:
  """How each model is measured.

  Attributes:
    threads: interpreter thread counts; each is measured in its own process.
    warmup_runs: untimed runs after the first inference.
    min_runs: at least this many timed runs...
    min_duration_s: ...for at least this long.
    seed: seed of the random input tensors.
  """
  threads: Tuple[int, ...] = (1,)
  warmup_runs: int = 5
  min_runs: int = 50
  min_duration_s: float = 1.0
  seed: int = 0

  def __post_init__(self):
    object.__setattr__(self, 'threads', tuple(self.threads))
    if not self.threads:
      raise ValueError('MeasureSettings.threads=() is not accepted: give at least one thread '
                       'count, e.g. (1,) or (1, 2).')
    for t in self.threads:
      _check_positive('MeasureSettings.threads[]', t, integer=True)
    if len(set(self.threads)) != len(self.threads):
      raise ValueError(f'MeasureSettings.threads={self.threads!r} repeats a thread count.')
    _check_positive('MeasureSettings.min_runs', self.min_runs, integer=True)
    _check_positive('MeasureSettings.min_duration_s', self.min_duration_s)
    if isinstance(self.warmup_runs, bool) or not isinstance(self.warmup_runs, int) or (
        self.warmup_runs < 0):
      raise ValueError(f'MeasureSettings.warmup_runs={self.warmup_runs!r} is not accepted: it '
                       'must be an integer >= 0.')

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'MeasureSettings':
    return cls(**json.loads(text))
