"""A JSON round-trip for the frozen config dataclasses that travel as exec properties.

A component stores its config as a JSON string parameter (TFX exec properties are scalars), and
its executor rebuilds the dataclass, which validates again in `__post_init__`.
"""
import dataclasses
import json
from typing import Type, TypeVar

_T = TypeVar('_T', bound='JsonConfig')


class JsonConfig:
  """Mixin for frozen dataclasses: `to_json()` and `from_json()` with sorted keys."""

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_json(cls: Type[_T], text: str) -> _T:
    return cls(**json.loads(text))
