"""components.common.validation: each check names the parameter, the value and what is accepted."""
import pytest

from components import errors
from components.common import validation


@pytest.mark.parametrize('check,value,message', [
    (validation.positive_int, 0, 'n=0 is not accepted; it must be a positive integer.'),
    (validation.positive_int, True, 'n=True is not accepted; it must be a positive integer.'),
    (validation.positive_int, 2.0, 'n=2.0 is not accepted; it must be a positive integer.'),
    (validation.non_negative_int, -1, 'n=-1 is not accepted; it must be an integer >= 0.'),
    (validation.non_negative_int, False, 'n=False is not accepted; it must be an integer >= 0.'),
    (validation.positive_number, float('inf'),
     'n=inf is not accepted; it must be a positive finite number.'),
    (validation.positive_number, '3', "n='3' is not accepted; it must be a positive finite "
     'number.'),
    (validation.positive_number, -0.5, 'n=-0.5 is not accepted; it must be a positive finite '
     'number.'),
])
def test_number_checks_name_the_value_and_the_rule(check, value, message):
  with pytest.raises(errors.ConfigError) as raised:
    check('n', value)

  assert str(raised.value) == message


@pytest.mark.parametrize('check,value', [
    (validation.positive_int, 3), (validation.non_negative_int, 0),
    (validation.positive_number, 0.25), (validation.positive_number, 7),
])
def test_number_checks_return_an_accepted_value_unchanged(check, value):
  assert check('n', value) is value


@pytest.mark.parametrize('value,low_open,high_open,interval', [
    (0, True, False, '(0, 1]'),
    (1, False, True, '[0, 1)'),
    (1.5, False, False, '[0, 1]'),
    (float('nan'), False, False, '[0, 1]'),
    (True, False, False, '[0, 1]'),
])
def test_fraction_names_the_interval_with_its_open_ends(value, low_open, high_open, interval):
  with pytest.raises(errors.ConfigError) as raised:
    validation.fraction('ratio', value, low_open=low_open, high_open=high_open)

  assert str(raised.value) == f'ratio={value!r} is not accepted; it must lie in {interval}.'


def test_fraction_accepts_both_ends_of_a_closed_interval():
  assert [validation.fraction('ratio', v) for v in (0, 0.5, 1)] == [0, 0.5, 1]


@pytest.mark.parametrize('value', ['', None, 3])
def test_non_empty_str_says_what_the_string_must_name(value):
  with pytest.raises(errors.ConfigError) as raised:
    validation.non_empty_str('split', value, 'a split of the examples')

  assert str(raised.value) == (f'split={value!r} is not accepted; it must name a split of the '
                               'examples.')


def test_regex_compiles_or_names_the_parameter():
  assert validation.regex('skip_layers', None) is None
  assert validation.regex('skip_layers', '^head$').search('head')
  with pytest.raises(errors.ConfigError, match=r"skip_layers='\(' is not a valid regular "
                     'expression: missing \\)'):
    validation.regex('skip_layers', '(')


@pytest.mark.parametrize('name', ['../escape', 'a/b', '', '.hidden', 'x' * 129, '..', '.', None])
def test_model_names_that_are_not_one_safe_path_component_are_rejected(name):
  with pytest.raises(errors.ConfigError, match=r'model_name=.* is not accepted: use 1-128 '
                     'letters, digits'):
    validation.model_name(name)


@pytest.mark.parametrize('name', ['digits', 'Digits-v2.1', 'a_b', 'x' * 128, '0'])
def test_model_names_of_letters_digits_and_separators_are_accepted(name):
  assert validation.model_name(name) == name


def test_instance_of_names_the_class_expected():
  with pytest.raises(errors.ConfigError) as raised:
    validation.instance_of('budgets', 3, dict)

  assert str(raised.value) == 'budgets=3 is not accepted; it must be a dict.'
  assert isinstance(raised.value, ValueError)  # ConfigError keeps ValueError's contract.
