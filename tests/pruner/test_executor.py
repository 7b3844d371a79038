"""The Pruner executor on real artifacts, and PTQConverter's check of its 2:4 pattern."""
import json

from tfx.types import standard_artifacts

from components import Pruner
from components import spec_keys
from components.pruner.pruning import PruningConfig
from tests.helpers import INPUT_FN
from tests.helpers import TINY
from tests.helpers import channel
from tests.helpers import run_optimizer
from tests.helpers import run_ptq


def test_two_four_pruner_output_is_verified_again_in_the_tflite(trained_model_artifact,
                                                                digits_examples, tmp_path):
  pruner = Pruner(model=channel(), examples=channel(standard_artifacts.Examples),
                  input_fn=INPUT_FN, fine_tuning=TINY,
                  pruning=PruningConfig(structure='2:4', schedule='constant', end=-1))

  pruned, _ = run_optimizer(pruner, trained_model_artifact, digits_examples, tmp_path / 'pruned')
  tflite, _ = run_ptq(pruned, digits_examples, tmp_path / 'int8')

  assert pruned.get_string_custom_property(spec_keys.PROP_SPARSITY_STRUCTURE) == '2:4'
  per_layer = json.loads(pruned.get_string_custom_property(spec_keys.PROP_SPARSITY_PER_LAYER))
  # conv_1 has one input channel and cannot hold 2:4; the others are exactly half zeros.
  assert per_layer == {'conv_2': 0.5, 'dense': 0.5, 'classifier': 0.5}
  verified = json.loads(tflite.get_string_custom_property(spec_keys.PROP_2BY4_VERIFIED))
  assert len(verified) == 3  # conv_2, dense, classifier.
  assert tflite.get_string_custom_property(spec_keys.PROP_SPARSITY_STRUCTURE) == '2:4'


def test_a_layer_skipped_from_2by4_is_not_held_to_the_pattern_in_the_tflite(
    trained_model_artifact, digits_examples, tmp_path):
  # `dense` has 512 inputs (a multiple of 4) but stays dense: checking it would fail the model.
  pruner = Pruner(model=channel(), examples=channel(standard_artifacts.Examples),
                  input_fn=INPUT_FN, fine_tuning=TINY,
                  pruning=PruningConfig(structure='2:4', schedule='constant', end=-1,
                                        skip_layers='^dense$'))

  pruned, _ = run_optimizer(pruner, trained_model_artifact, digits_examples, tmp_path / 'pruned')
  tflite, _ = run_ptq(pruned, digits_examples, tmp_path / 'int8')

  per_layer = json.loads(pruned.get_string_custom_property(spec_keys.PROP_SPARSITY_PER_LAYER))
  assert per_layer == {'conv_2': 0.5, 'classifier': 0.5}
  assert len(json.loads(tflite.get_string_custom_property(spec_keys.PROP_2BY4_VERIFIED))) == 2
