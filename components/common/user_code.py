"""The user's module code (its `input_fn`) bound to the pipeline's Examples, as TFX's Trainer
binds it: the same function then reads the data for training, fine-tuning and calibration, so
missing values, defaults, casts and feature crosses are the user's code, written once.
"""
import dataclasses
import json
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from absl import logging
import tensorflow as tf
from tfx import types
from tfx.components.trainer import fn_args_utils
from tfx.components.util import udf_utils

from components import spec_keys
from components.errors import ConfigError

_IMPORT_PATH_RE = re.compile(r'^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$')


def validate_input_fn_source(input_fn: Optional[str], module_file: Optional[str],
                             required: bool = True) -> None:
  """Checks where input_fn comes from: an import path (`pkg.module.input_fn`) or a module file.

  Args:
    input_fn: the import path, or None.
    module_file: the module file's path, or None.
    required: exactly one must be given (else: at most one).

  Raises:
    ConfigError: both given, none given when required, or a malformed import path.
  """
  if (input_fn is not None and module_file is not None) or (
      required and input_fn is None and module_file is None):
    raise ConfigError(f'give {"exactly" if required else "at most"} one of input_fn={input_fn!r} '
                      '(an import path such as "pipelines.digits_module.input_fn") and '
                      f'module_file={module_file!r}.')
  if input_fn is not None and not _IMPORT_PATH_RE.match(input_fn):
    raise ConfigError(f'input_fn={input_fn!r} is not an import path like '
                      '"my_package.my_module.input_fn".')


@dataclasses.dataclass
class BoundInputFn:
  """The user's input_fn with the file patterns and DataAccessor of some splits."""
  input_fn: Callable[..., tf.data.Dataset]
  data_accessor: Any
  files: Dict[str, List[str]]

  def dataset(self, split: str, batch_size: int) -> tf.data.Dataset:
    """input_fn(file patterns of `split`, data_accessor, batch_size): (features, labels) batches."""
    return self.input_fn(self.files[split], self.data_accessor, batch_size)


def bind_input_fn(exec_properties: Mapping[str, Any], examples: Sequence[types.Artifact],
                  splits: Sequence[str], required: bool = True) -> Optional[BoundInputFn]:
  """The input_fn named in exec_properties, bound to splits of examples; None when none is named.

  Args:
    exec_properties: holding spec_keys.INPUT_FN_KEY or spec_keys.MODULE_FILE_KEY.
    examples: the Examples artifact(s) the splits belong to.
    splits: one or two split names.
    required: a module file without `input_fn` is an error (fine-tuning reads through it);
      False returns None for it (PTQConverter then parses the examples by model input name).

  Raises:
    ConfigError: the module file has no `input_fn` and one is required.
  """
  source = {k: exec_properties.get(k) for k in (spec_keys.MODULE_FILE_KEY,
                                                spec_keys.INPUT_FN_KEY)}
  if not any(source.values()):
    return None
  try:
    input_fn = udf_utils.get_fn(source, spec_keys.INPUT_FN_KEY)
  except AttributeError as e:  # What TFX's import_func_from_source raises for a missing name.
    module_file = source[spec_keys.MODULE_FILE_KEY]
    # Only the module's missing input_fn; an AttributeError inside the user's code is theirs.
    if not module_file or source[spec_keys.INPUT_FN_KEY] or "'input_fn'" not in str(e):
      raise
    if required:
      raise ConfigError(f'module_file={module_file!r} has no input_fn(file_pattern, '
                        'data_accessor, batch_size), which fine-tuning reads the examples '
                        'through (docs/module_contract.md).') from e
    logging.info('The module file %s has no input_fn: the examples are parsed by model input '
                 'name.', module_file)
    return None
  first, last = splits[0], splits[-1]
  # TFX's own helper turns Examples into the file patterns and DataAccessor a Trainer gets.
  fn_args = fn_args_utils.get_common_fn_args(
      {spec_keys.EXAMPLES_KEY: list(examples)}, {
          'train_args': json.dumps({'splits': [first]}),
          'eval_args': json.dumps({'splits': [last]}),
      })
  return BoundInputFn(input_fn, fn_args.data_accessor,
                      {first: fn_args.train_files, last: fn_args.eval_files})
