"""The optimizers' shared executor on bad input: the error names the data or model, before training.

The Pruner runs here, as the cheapest optimizer; Clusterer and QATTrainer share the same executor
(components/common/finetune/executor.py), so its checks are theirs too.
"""
import os

import pytest

from components import Pruner
from components import errors
from tests.conftest import write_examples
from tests.helpers import INPUT_FN
from tests.helpers import TINY
from tests.helpers import channel
from tests.helpers import keras_model_artifact
from tests.helpers import relabel
from tests.helpers import run_optimizer
from tests.helpers import small_model


def _prune(model, examples, tmp_path):
  """Runs the Pruner executor; its outputs go to tmp_path/pruned."""
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  component = Pruner(model=channel(), examples=channel(standard_artifacts.Examples),
                     input_fn=INPUT_FN, fine_tuning=TINY)
  return run_optimizer(component, model, examples, tmp_path / 'pruned')


# --- labels outside the model's classes ------------------------------------------------------


@pytest.mark.parametrize('mapping,values', [({9: 10}, '10'), ({0: -1}, '-1')])
def test_fine_tuning_labels_outside_the_classes_are_named_with_the_split(
    trained_model_artifact, digits_records, tmp_path, mapping, values):
  examples = write_examples(str(tmp_path / 'examples'), {
      'train': relabel(digits_records[:1437], mapping), 'eval': digits_records[1437:]})

  with pytest.raises(errors.DataError, match=f"Examples artifact {examples.uri}, split 'train': "
                     f"label values {values} are outside the model's 10 classes \\[0, 9\\] \\(it "
                     'has 10 output units\\); fine-tuning stopped at the first batch'):
    _prune(trained_model_artifact, examples, tmp_path)

  assert not os.path.exists(tmp_path / 'pruned' / 'model' / 'Format-Serving')


# --- NaN or Inf in the weights ------------------------------------------------------------------


def test_nan_weights_stop_fine_tuning_before_it_starts(digits_examples, tmp_path):
  model = small_model()
  kernel, bias = model.get_layer('hidden').get_weights()
  kernel[3, 5] = float('nan')
  model.get_layer('hidden').set_weights([kernel, bias])
  source = keras_model_artifact(model, tmp_path / 'source')

  with pytest.raises(errors.ModelLoadError, match=f"Model artifact {source.uri}: layer 'hidden' "
                     'holds 1 NaN or Inf values of 1024'):
    _prune(source, digits_examples, tmp_path)

  assert not os.path.exists(tmp_path / 'pruned')  # Not even TensorBoard logs: no training.


# --- features of the wrong dtype or shape ----------------------------------------------------


@pytest.mark.parametrize('model,message', [
    (lambda: small_model(input_name='image'),
     r"input_fn gives no feature 'image', which model input 'image' reads \(expected float32 of "
     r"shape \(None, 64\)\); it gives \['pixels'\]"),
    (lambda: small_model(input_size=32),
     r"feature 'pixels' from input_fn is float32 of shape \(32, 64\), but model input 'pixels' "
     r'expects float32 of shape \(None, 32\)'),
])
def test_fine_tuning_features_that_do_not_fit_the_model_fail_before_training(
    digits_examples, tmp_path, model, message):
  source = keras_model_artifact(model(), tmp_path / 'source')

  with pytest.raises(errors.DataError, match=f"Examples artifact {digits_examples.uri}, split "
                     "'train': " + message):
    _prune(source, digits_examples, tmp_path)

  assert not os.path.exists(tmp_path / 'pruned')


# --- a missing or empty Examples split ---------------------------------------------------------


@pytest.mark.parametrize('empty,parameter', [('train', 'fine_tuning.train_split'),
                                             ('eval', 'fine_tuning.eval_split')])
def test_fine_tuning_on_an_empty_split_is_refused_naming_it(trained_model_artifact, digits_records,
                                                           tmp_path, empty, parameter):
  splits = {'train': digits_records[:200], 'eval': digits_records[200:300]}
  splits[empty] = []
  examples = write_examples(str(tmp_path / 'examples'), splits)

  with pytest.raises(errors.DataError, match=f"Examples artifact {examples.uri}: split "
                     f"'{empty}' \\({parameter}\\) is empty: the 1 file\\(s\\) matching .* hold "
                     'no examples'):
    _prune(trained_model_artifact, examples, tmp_path)

  assert not os.path.exists(tmp_path / 'pruned')


def test_fine_tuning_on_a_missing_split_names_the_splits_there_are(trained_model_artifact,
                                                                  digits_records, tmp_path):
  examples = write_examples(str(tmp_path / 'examples'), {'train': digits_records[:200]})

  with pytest.raises(errors.DataError, match=f"Examples artifact {examples.uri} has no split "
                     r"'eval' \(fine_tuning.eval_split\); its splits are \['train'\]"):
    _prune(trained_model_artifact, examples, tmp_path)

  assert not os.path.exists(tmp_path / 'pruned')
