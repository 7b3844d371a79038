"""Device budgets and the settings of a measurement; plain logic, no TFX."""
import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

from components.common import validation
from components.common.config import JsonConfig
from components.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Budgets(JsonConfig):
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
        check = (validation.positive_int if field.name.endswith('_bytes') else
                 validation.positive_number)
        check(f'Budgets.{field.name}', value)

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
class MeasureSettings(JsonConfig):
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
      raise ConfigError('MeasureSettings.threads=() is not accepted: give at least one thread '
                       'count, e.g. (1,) or (1, 2).')
    for t in self.threads:
      validation.positive_int('MeasureSettings.threads[]', t)
    if len(set(self.threads)) != len(self.threads):
      raise ConfigError(f'MeasureSettings.threads={self.threads!r} repeats a thread count.')
    validation.positive_int('MeasureSettings.min_runs', self.min_runs)
    validation.positive_number('MeasureSettings.min_duration_s', self.min_duration_s)
    validation.non_negative_int('MeasureSettings.warmup_runs', self.warmup_runs)
