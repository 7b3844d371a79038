"""The TFLite conversion modes and input/output types, with their checks. Plain Python.

Shared by the converter, the pushers (which modes may ship) and the CLI.
"""
from typing import Sequence

from components.errors import ConfigError

FLOAT32 = 'float32'
DYNAMIC_RANGE = 'dynamic_range'
FLOAT16 = 'float16'
INT8 = 'int8'
INT8_FLOAT_FALLBACK = 'int8_float_fallback'
INT16X8 = 'int16x8'
# int8 with the fewest layers kept in float that the accuracy needs (ptq_converter/auto.py).
INT8_AUTO = 'int8_auto'

MODES = (FLOAT32, DYNAMIC_RANGE, FLOAT16, INT8, INT8_FLOAT_FALLBACK, INT16X8, INT8_AUTO)
# Modes whose activation ranges come from a representative (calibration) dataset.
CALIBRATED_MODES = frozenset({INT8, INT8_FLOAT_FALLBACK, INT16X8, INT8_AUTO})
# What a pusher publishes unless told otherwise: int8-only models, which every device runs.
DEFAULT_ALLOWED_MODES = (INT8,)

# Input/output tensor types a caller may ask for. `native` keeps what the mode gives by default:
# float I/O everywhere except `int8`, whose default is int8 I/O (an int8-only model).
IO_NATIVE = 'native'
IO_FLOAT32 = 'float32'
IO_INT8 = 'int8'
IO_INT16 = 'int16'
INFERENCE_IO = (IO_NATIVE, IO_FLOAT32, IO_INT8, IO_INT16)
_IO_ALLOWED = {
    FLOAT32: {IO_NATIVE, IO_FLOAT32},
    DYNAMIC_RANGE: {IO_NATIVE, IO_FLOAT32},
    FLOAT16: {IO_NATIVE, IO_FLOAT32},
    INT8: {IO_NATIVE, IO_INT8, IO_FLOAT32},
    INT8_FLOAT_FALLBACK: {IO_NATIVE, IO_FLOAT32},
    INT16X8: {IO_NATIVE, IO_FLOAT32, IO_INT16},
    # The layers kept in float take float inputs; float I/O keeps the boundary simple.
    INT8_AUTO: {IO_NATIVE, IO_FLOAT32},
}


def validate_mode(mode: str, inference_io: str = IO_NATIVE) -> None:
  """Raises ConfigError naming the bad value and the accepted ones.

  Args:
    mode: one of MODES.
    inference_io: one of INFERENCE_IO, and allowed for `mode`.
  """
  if mode not in MODES:
    raise ConfigError(f'mode={mode!r} is not a PTQ mode; accepted: {", ".join(MODES)}.')
  if inference_io not in INFERENCE_IO:
    raise ConfigError(
        f'inference_io={inference_io!r} is not accepted; accepted: {", ".join(INFERENCE_IO)}.')
  if inference_io not in _IO_ALLOWED[mode]:
    raise ConfigError(
        f'inference_io={inference_io!r} is not available for mode={mode!r}; accepted for this '
        f'mode: {", ".join(sorted(_IO_ALLOWED[mode]))}.')


def validate_allowed_modes(allowed_modes: Sequence[str]) -> None:
  """Raises ConfigError unless allowed_modes is a non-empty list of PTQ modes."""
  if isinstance(allowed_modes, str) or not allowed_modes:
    raise ConfigError(f'allowed_modes={allowed_modes!r} must be a non-empty list of modes from '
                      f'{", ".join(MODES)}.')
  for mode in allowed_modes:
    if mode not in MODES:
      raise ConfigError(f'allowed_modes contains {mode!r}, which is not a PTQ mode; accepted: '
                        f'{", ".join(MODES)}.')
