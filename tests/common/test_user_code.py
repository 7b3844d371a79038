"""Where the user's input_fn comes from, and binding it to an Examples artifact's splits."""
import pytest

from components import errors
from components import spec_keys
from components.common import user_code


@pytest.mark.parametrize('input_fn,module_file,message', [
    (None, None, 'give exactly one of input_fn=None'),
    ('a.b.input_fn', 'm.py', "give exactly one of input_fn='a.b.input_fn'"),
    ('input_fn', None, "input_fn='input_fn' is not an import path like"),
])
def test_exactly_one_input_fn_source_is_accepted(input_fn, module_file, message):
  with pytest.raises(errors.ConfigError, match=message):
    user_code.validate_input_fn_source(input_fn, module_file)


def test_an_optional_source_accepts_none_but_not_both():
  user_code.validate_input_fn_source(None, None, required=False)
  with pytest.raises(errors.ConfigError, match="give at most one of input_fn='a.b.c'"):
    user_code.validate_input_fn_source('a.b.c', 'm.py', required=False)


def test_no_source_binds_nothing(digits_examples):
  assert user_code.bind_input_fn({}, [digits_examples], ['train']) is None


def test_the_bound_input_fn_reads_the_split_it_was_bound_to(digits_examples):
  bound = user_code.bind_input_fn(
      {spec_keys.INPUT_FN_KEY: 'pipelines.digits_module.input_fn'}, [digits_examples],
      ['train', 'eval'])

  features, labels = next(iter(bound.dataset('eval', batch_size=8)))

  assert set(bound.files) == {'train', 'eval'}
  assert all('Split-eval' in pattern for pattern in bound.files['eval'])
  assert features['pixels'].shape == (8, 64) and labels.shape == (8,)
