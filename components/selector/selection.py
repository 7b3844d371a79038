"""Pareto front and the choice of the variant to ship; plain logic, no TFX."""
import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

from components.errors import ConfigError

PREFER_SIZE = 'size'
PREFER_LATENCY = 'latency'
PREFER_ACCURACY = 'accuracy'
PREFERENCES = (PREFER_SIZE, PREFER_LATENCY, PREFER_ACCURACY)


@dataclasses.dataclass(frozen=True)
class Candidate:
  """What is known about one variant.

  Attributes:
    name: the variant (for example `ptq`, `pcqat`).
    accuracy: the gate metric (accuracy, or an error for regression); None when no evaluation was
      wired.
    accuracy_blessed: the Evaluator blessed this very model.
    accuracy_reason: the Evaluator's verdict in words.
    within_budget: the DeviceBenchmarker budgets hold.
    budget_reason: which budgets failed, or 'within budgets'.
    p50_ms: p50 latency at the first measured thread count.
    gzip_bytes: the over-the-air payload.
    size_bytes: the .tflite file.
    higher_is_better: False when the gate metric is an error (regression), which goes down as
      the model gets better.
    failed: why the variant failed before it could be gated or measured (its optimizer or its
      conversion; components.common.failures), or '' when it did not. A failed variant is never
      eligible, on no Pareto front, and dominates nothing.
  """
  name: str
  accuracy: Optional[float]
  accuracy_blessed: bool
  accuracy_reason: str
  within_budget: bool
  budget_reason: str
  p50_ms: float
  gzip_bytes: int
  size_bytes: int
  higher_is_better: bool = True
  failed: str = ''

  @property
  def eligible(self) -> bool:
    return self.accuracy_blessed and self.within_budget and not self.failed

  @classmethod
  def of_failed(cls, name: str, reason: str) -> 'Candidate':
    """A variant that failed before the gate: no accuracy, latency or size to compare."""
    return cls(name=name, accuracy=None, accuracy_blessed=False,
               accuracy_reason='not evaluated: the variant failed', within_budget=False,
               budget_reason='not measured: the variant failed', p50_ms=float('nan'),
               gzip_bytes=0, size_bytes=0, failed=reason)

  @property
  def quality(self) -> float:
    """The gate metric oriented so that higher is better; an unknown one counts as worst."""
    if self.accuracy is None:
      return float('-inf')
    return self.accuracy if self.higher_is_better else -self.accuracy


@dataclasses.dataclass(frozen=True)
class Selection:
  """The outcome: the winner (None when nothing may ship), the Pareto front and every reason."""
  winner: Optional[str]
  front: Tuple[str, ...]
  reasons: Dict[str, str]


def validate_prefer(prefer: str) -> str:
  if prefer not in PREFERENCES:
    raise ConfigError(f'prefer={prefer!r} is not accepted; use one of {", ".join(PREFERENCES)}.')
  return prefer


def _objectives(c: Candidate) -> Tuple[float, float, float]:
  """Minimized objectives: -quality, latency, payload. An unknown accuracy counts as worst."""
  return (-c.quality, c.p50_ms, c.gzip_bytes)


def dominates(a: Candidate, b: Candidate) -> bool:
  """a is at least as good as b on accuracy, latency and payload, and better on one."""
  oa, ob = _objectives(a), _objectives(b)
  return all(x <= y for x, y in zip(oa, ob)) and oa != ob


def pareto_front(candidates: Sequence[Candidate]) -> List[Candidate]:
  """Candidates no other candidate dominates (accuracy up, p50 latency and gzip size down).

  Failed variants have nothing to compare and take no part.
  """
  measured = [c for c in candidates if not c.failed]
  return [c for c in measured if not any(dominates(o, c) for o in measured if o is not c)]


def _rank_key(c: Candidate, prefer: str) -> Tuple[float, ...]:
  acc = -c.quality
  if prefer == PREFER_SIZE:
    return (c.gzip_bytes, c.p50_ms, acc)
  if prefer == PREFER_LATENCY:
    return (c.p50_ms, c.gzip_bytes, acc)
  return (acc, c.gzip_bytes, c.p50_ms)


def _describe(c: Candidate) -> str:
  acc = 'n/a' if c.accuracy is None else f'{c.accuracy:.4f}'
  return f'accuracy {acc}, p50 {c.p50_ms:.4f} ms, gzip {c.gzip_bytes:,} B'


def select(candidates: Sequence[Candidate], prefer: str = PREFER_SIZE) -> Selection:
  """Picks the variant to ship and says why every other one lost.

  Only variants the accuracy gate blessed and that fit the device budgets may win; a variant
  that failed (Candidate.failed) is listed with its reason and ranks nowhere. Among them the
  best by `prefer` wins: `size` (smallest gzip payload, then latency, then accuracy), `latency` or
  `accuracy`. That winner is always on the Pareto front of the eligible variants.

  Args:
    candidates: every variant, with distinct names.
    prefer: what matters most among the eligible ones.

  Returns:
    The Selection; `winner` is None when no variant may ship.
  """
  validate_prefer(prefer)
  names = [c.name for c in candidates]
  if len(set(names)) != len(names):
    raise ConfigError(f'candidate names {names} are not distinct.')
  front = pareto_front(candidates)
  eligible = sorted((c for c in candidates if c.eligible), key=lambda c: _rank_key(c, prefer))
  winner = eligible[0] if eligible else None
  reasons = {}
  for c in candidates:
    if c.failed:
      reasons[c.name] = f'failed: {c.failed}'
      continue
    if winner is not None and c is winner:
      reasons[c.name] = (f'selected: blessed, within budgets and the best by {prefer} among the '
                         f'{len(eligible)} eligible variant(s) ({_describe(c)})')
      continue
    lost = []
    if not c.accuracy_blessed:
      lost.append(f'failed the accuracy gate ({c.accuracy_reason})')
    if not c.within_budget:
      lost.append(f'over the device budgets ({c.budget_reason})')
    if not lost and winner is not None:
      lost.append(f'eligible, but {winner.name} is better by {prefer} ({_describe(c)} against '
                  f'{_describe(winner)})')
    dominators = [o.name for o in candidates if not o.failed and dominates(o, c)]
    if dominators:
      lost.append(f'dominated by {", ".join(dominators)}')
    reasons[c.name] = '; '.join(lost)
  return Selection(winner=winner.name if winner else None,
                   front=tuple(c.name for c in front), reasons=reasons)


def from_doc(doc: Dict[str, Any]) -> Tuple[List[Candidate], Selection]:
  """The candidates and the selection back from the selection.json VariantSelector writes."""
  names = [f.name for f in dataclasses.fields(Candidate)]
  candidates = [Candidate(**dict({k: c[k] for k in names if k in c},
                                 p50_ms=float('nan') if c.get('p50_ms') is None else c['p50_ms']))
                for c in doc['candidates']]
  return candidates, Selection(winner=doc['winner'], front=tuple(doc['pareto_front']),
                               reasons=dict(doc['reasons']))
