"""components.common.modes: the PTQ mode and inference I/O names, and their checks."""
import pytest

from components import errors
from components.common import modes


@pytest.mark.parametrize('mode,inference_io,message', [
    ('int4', 'native', "mode='int4' is not a PTQ mode; accepted: float32, dynamic_range"),
    ('float16', 'int8', "inference_io='int8' is not available for mode='float16'; accepted for "
     'this mode: float32, native'),
    ('int8', 'int16', "inference_io='int16' is not available for mode='int8'"),
    ('int8', 'uint8', "inference_io='uint8' is not accepted; accepted: native"),
])
def test_unknown_mode_or_io_is_rejected_with_accepted_values(mode, inference_io, message):
  with pytest.raises(errors.ConfigError,
                     match=message.replace('(', r'\(').replace(')', r'\)')):
    modes.validate_mode(mode, inference_io)


@pytest.mark.parametrize('mode,inference_io', [
    ('int8', 'int8'), ('int8', 'float32'), ('int16x8', 'int16'), ('float32', 'native'),
    *((mode, 'native') for mode in modes.MODES),
])
def test_every_mode_accepts_native_io_and_its_own_integer_io(mode, inference_io):
  assert modes.validate_mode(mode, inference_io) is None


@pytest.mark.parametrize('allowed,message', [
    ([], r"allowed_modes=\[\] must be a non-empty list of modes from float32"),
    ('int8', "allowed_modes='int8' must be a non-empty list"),
    (['int8', 'int9'], "allowed_modes contains 'int9', which is not a PTQ mode; accepted: "),
])
def test_allowed_modes_must_be_a_non_empty_list_of_modes(allowed, message):
  with pytest.raises(errors.ConfigError, match=message):
    modes.validate_allowed_modes(allowed)


def test_the_default_allowed_modes_are_int8_only_and_int8_is_calibrated():
  modes.validate_allowed_modes(modes.DEFAULT_ALLOWED_MODES)

  assert modes.DEFAULT_ALLOWED_MODES == ('int8',)
  assert modes.CALIBRATED_MODES == {'int8', 'int8_float_fallback', 'int16x8', 'int8_auto'}
