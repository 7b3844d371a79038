"""Small validators for parameters, with messages that name the value and what is accepted.

Plain Python: every check raises `ConfigError` (a ValueError), so a component constructor that
calls one fails when the pipeline is built.
"""
import math
import re
from typing import Any, Optional, Pattern

from components.errors import ConfigError

_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$')


def positive_int(name: str, value: Any) -> int:
  """Returns value if it is an int > 0 (not a bool); raises ConfigError otherwise."""
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ConfigError(f'{name}={value!r} is not accepted; it must be a positive integer.')
  return value


def non_negative_int(name: str, value: Any) -> int:
  """Returns value if it is an int >= 0 (not a bool); raises ConfigError otherwise."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ConfigError(f'{name}={value!r} is not accepted; it must be an integer >= 0.')
  return value


def positive_number(name: str, value: Any) -> float:
  """Returns value if it is a finite int or float > 0 (not a bool); raises ConfigError."""
  if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
      or value <= 0):
    raise ConfigError(f'{name}={value!r} is not accepted; it must be a positive finite number.')
  return value


def fraction(name: str, value: Any, low_open: bool = False, high_open: bool = False) -> float:
  """Returns value if it lies in [0, 1] (ends excluded as asked); raises ConfigError otherwise."""
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
  ok = ok and (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
  if not ok:
    interval = f'{"(" if low_open else "["}0, 1{")" if high_open else "]"}'
    raise ConfigError(f'{name}={value!r} is not accepted; it must lie in {interval}.')
  return value


def non_empty_str(name: str, value: Any, what: str) -> str:
  """Returns value if it is a non-empty string; `what` says what it should name."""
  if not isinstance(value, str) or not value:
    raise ConfigError(f'{name}={value!r} is not accepted; it must name {what}.')
  return value


def regex(name: str, pattern: Optional[str]) -> Optional[Pattern]:
  """Compiles an optional regular expression, naming the parameter when it is malformed."""
  if pattern is None:
    return None
  try:
    return re.compile(pattern)
  except (re.error, TypeError) as e:
    raise ConfigError(f'{name}={pattern!r} is not a valid regular expression: {e}.') from e


def model_name(name: str) -> str:
  """Returns a model name if it is safe as one path component; raises ConfigError otherwise."""
  if not isinstance(name, str) or not _NAME_RE.match(name) or name in ('.', '..'):
    raise ConfigError(
        f'model_name={name!r} is not accepted: use 1-128 letters, digits, "_", "-" or ".", '
        'starting with a letter or digit (no path separators).')
  return name


def instance_of(name: str, value: Any, cls: type) -> Any:
  """Returns value if it is a `cls`; raises ConfigError naming the class expected."""
  if not isinstance(value, cls):
    raise ConfigError(f'{name}={value!r} is not accepted; it must be a {cls.__name__}.')
  return value


def boolean(name: str, value: Any) -> bool:
  """Returns value if it is True or False; raises ConfigError otherwise."""
  if value is not True and value is not False:
    raise ConfigError(f'{name}={value!r} is not accepted; it must be True or False.')
  return value
