"""components.common.evaluation: why a blessing does not bless a model, in words."""
from components.common import evaluation
from tests.helpers import blessing_artifact
from tests.helpers import evaluation_with_failure
from tests.helpers import tflite_model_artifact


def test_a_blessed_model_has_no_refusal(tmp_path):
  model = tflite_model_artifact(tmp_path / 'model')

  assert evaluation.blessing_refusal(model, blessing_artifact(tmp_path / 'b', model, True)) == ''


def test_a_blessing_of_another_model_is_refused_naming_both(tmp_path):
  model = tflite_model_artifact(tmp_path / 'model')
  other = tflite_model_artifact(tmp_path / 'other')
  blessing = blessing_artifact(tmp_path / 'b', other, True)

  assert evaluation.blessing_refusal(model, blessing) == (
      f'the blessing {blessing.uri} is for model {other.uri}, not for {model.uri}; wire the '
      'Evaluator that evaluated this model.')


def test_not_blessed_quotes_the_failed_threshold_when_the_evaluation_is_given(tmp_path):
  model = tflite_model_artifact(tmp_path / 'model')
  blessing = blessing_artifact(tmp_path / 'b', model, False)
  failed = evaluation_with_failure(tmp_path / 'evaluation')

  assert evaluation.blessing_refusal(model, blessing) == (
      'model is NOT_BLESSED by the Evaluator: see the Evaluator output for the thresholds')
  assert evaluation.blessing_refusal(model, blessing, failed.uri) == (
      'model is NOT_BLESSED by the Evaluator: sparse_categorical_accuracy value = +0.9000 fails '
      'the bound >= 0.9900 (model candidate)')
  assert evaluation.validation_failures(failed.uri) == [
      'sparse_categorical_accuracy value = +0.9000 fails the bound >= 0.9900 (model candidate)']


def test_a_selector_blessing_that_chose_nothing_gives_the_selector_reason(tmp_path):
  model = tflite_model_artifact(tmp_path / 'model')
  blessing = blessing_artifact(tmp_path / 'b', model, False)
  blessing.set_string_custom_property('tfx_edge_selection_reason', 'no variant within budgets')

  assert evaluation.blessing_refusal(model, blessing) == (
      'VariantSelector chose no model to ship: no variant within budgets')
