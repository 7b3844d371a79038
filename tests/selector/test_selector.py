"""VariantSelector: the Pareto front, the choice of the variant to ship, and its outputs."""
import json
import os

import pytest
from tfx.types import standard_artifacts

from components import artifact_types
from components import errors
from components import spec_keys
from components.benchmarker import budgets as budgets_lib
from components.common import failures
from components.pusher import executor as pusher_executor
from components.selector import executor as selector_executor
from components.selector import selection as selection_lib
from components.selector.component import VariantSelector
from tests.helpers import blessing_artifact
from tests.helpers import channel
from tests.helpers import run_benchmark
from tests.helpers import tflite_model_artifact


def _model_artifact(tmp_path, name, data, mode):
  return tflite_model_artifact(tmp_path / 'models' / name, data, mode)


def _blessing(tmp_path, name, model, blessed):
  return blessing_artifact(tmp_path / 'blessings' / name, model, blessed)


def _candidate(name, acc, blessed, gzip, p50=1.0, within=True):
  return selection_lib.Candidate(name=name, accuracy=acc, accuracy_blessed=blessed,
                                 accuracy_reason='BLESSED' if blessed else 'NOT_BLESSED: drop',
                                 within_budget=within,
                                 budget_reason='within budgets' if within else 'p90 too high',
                                 p50_ms=p50, gzip_bytes=gzip, size_bytes=gzip * 2)


def test_the_smallest_blessed_variant_wins_and_an_unblessed_one_never_does():
  candidates = [
      _candidate('ptq', 0.98, True, 37_000),
      _candidate('pruned', 0.95, False, 15_000),  # smallest of all, but failed the gate
      _candidate('clustered', 0.98, True, 25_000),
      _candidate('pcqat', 0.97, True, 11_000),
  ]
  result = selection_lib.select(candidates)
  assert result.winner == 'pcqat'
  assert 'failed the accuracy gate' in result.reasons['pruned']
  assert 'pcqat is better by size' in result.reasons['clustered']

  # Without pcqat, the unblessed pruned model is still the smallest but never wins.
  result = selection_lib.select(candidates[:3])
  assert result.winner == 'clustered'
  assert 'pruned' in result.front  # on the front (smallest), yet not eligible


def test_over_budget_variants_lose_and_nothing_is_selected_when_none_qualifies():
  candidates = [_candidate('a', 0.9, True, 100, within=False), _candidate('b', 0.9, False, 200)]
  result = selection_lib.select(candidates)
  assert result.winner is None
  assert 'over the device budgets (p90 too high)' in result.reasons['a']
  assert 'failed the accuracy gate' in result.reasons['b']


def test_pareto_front_and_preferences():
  a = _candidate('a', 0.99, True, 300, p50=3.0)
  b = _candidate('b', 0.97, True, 100, p50=2.0)
  c = _candidate('c', 0.96, True, 200, p50=2.5)  # dominated by b
  d = _candidate('d', 0.95, True, 400, p50=0.5)
  assert [x.name for x in selection_lib.pareto_front([a, b, c, d])] == ['a', 'b', 'd']
  assert selection_lib.select([a, b, c, d], 'size').winner == 'b'
  assert selection_lib.select([a, b, c, d], 'latency').winner == 'd'
  assert selection_lib.select([a, b, c, d], 'accuracy').winner == 'a'
  assert 'dominated by b' in selection_lib.select([a, b, c, d]).reasons['c']
  with pytest.raises(errors.ConfigError, match="prefer='fast' is not accepted; use one of size, "
                     'latency, accuracy'):
    selection_lib.select([a], 'fast')
  with pytest.raises(errors.ConfigError, match=r"candidate names \['a', 'a'\] are not distinct"):
    selection_lib.select([a, a])


@pytest.mark.parametrize('candidates, message', [
    ({}, 'candidates must be a non-empty dict'),
    ({'Bad-Name': (None, None)}, "variant name 'Bad-Name' is not accepted: use lowercase"),
    ({'ok': 'model'}, r"candidates\['ok'\] must be a \(model, benchmark\) pair of channels"),
])
def test_selector_parameters_fail_when_the_pipeline_is_built(candidates, message):
  with pytest.raises(errors.ConfigError, match=message):
    VariantSelector(candidates=candidates)


def test_an_unknown_preference_fails_when_the_pipeline_is_built():
  with pytest.raises(errors.ConfigError, match="prefer='smallest' is not accepted"):
    VariantSelector(candidates={'ptq': (channel(), channel(artifact_types.DeviceBenchmark))},
                    prefer='smallest')


def test_selector_takes_one_model_and_one_benchmark_input_per_variant_in_order():
  candidates = {name: (channel(), channel(artifact_types.DeviceBenchmark))
                for name in ('ptq', 'pcqat')}

  component = VariantSelector(candidates=candidates, prefer='latency')

  assert set(component.inputs) == {'model_ptq', 'benchmark_ptq', 'model_pcqat', 'benchmark_pcqat'}
  assert component.inputs['benchmark_pcqat'] is candidates['pcqat'][1]
  assert json.loads(component.exec_properties[spec_keys.VARIANTS_KEY]) == ['ptq', 'pcqat']
  assert set(component.outputs) == {spec_keys.SELECTED_MODEL_KEY, spec_keys.SELECTED_BLESSING_KEY,
                                    spec_keys.SELECTION_KEY}


def test_selector_ships_only_the_winner_with_a_blessing_the_pusher_accepts(tmp_path,
                                                                           tflite_models):
  models = {
      'big': _model_artifact(tmp_path, 'big', tflite_models['fp32'], 'int8'),
      'small': _model_artifact(tmp_path, 'small', tflite_models['int8'], 'int8'),
      'unblessed': _model_artifact(tmp_path, 'unblessed', tflite_models['int8'] + b'\0', 'int8'),
  }
  blessed = {'big': True, 'small': True, 'unblessed': False}
  inputs = {}
  for name, model in models.items():
    inputs[selector_executor.model_key(name)] = [model]
    inputs[selector_executor.benchmark_key(name)] = [
        run_benchmark(tmp_path, name, model, _blessing(tmp_path, name, model, blessed[name]))]
  out_model = standard_artifacts.Model()
  out_model.uri = str(tmp_path / 'selected')
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = str(tmp_path / 'selected_blessing')
  selection = artifact_types.VariantSelection()
  selection.uri = str(tmp_path / 'selection')

  selector_executor.Executor().Do(inputs, {
      spec_keys.SELECTED_MODEL_KEY: [out_model], spec_keys.SELECTED_BLESSING_KEY: [blessing],
      spec_keys.SELECTION_KEY: [selection]
  }, {spec_keys.VARIANTS_KEY: json.dumps(list(models)), spec_keys.PREFER_KEY: 'size'})

  doc = json.loads((tmp_path / 'selection/selection.json').read_text())
  assert doc['winner'] == 'small'
  assert 'failed the accuracy gate' in doc['reasons']['unblessed']
  assert (tmp_path / 'selected/model.tflite').read_bytes() == tflite_models['int8']
  assert out_model.get_string_custom_property(spec_keys.PROP_SELECTED_VARIANT) == 'small'
  summary = json.loads(out_model.get_string_custom_property(spec_keys.PROP_BENCHMARK))
  assert set(summary['latency_ms']) == {'1', '2'} and summary['variant'] == 'small'
  assert pusher_executor.refusal_reason(out_model, blessing, ['int8']) == ''
  assert (tmp_path / 'selected_blessing/BLESSED').exists()
  for png in ('accuracy_vs_latency.png', 'accuracy_vs_gzip_size.png'):
    assert (tmp_path / 'selection' / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  html = (tmp_path / 'selection/index.html').read_text()
  assert 'Selected: small' in html and 'accuracy_vs_latency.png' in html


def test_when_nothing_qualifies_the_pusher_is_told_why(tmp_path, tflite_models):
  model = _model_artifact(tmp_path, 'only', tflite_models['int8'], 'int8')
  bench = run_benchmark(tmp_path, 'only', model, _blessing(tmp_path, 'only', model, True),
                        budgets_lib.Budgets(max_size_bytes=10))
  outs = {spec_keys.SELECTED_MODEL_KEY: standard_artifacts.Model(),
          spec_keys.SELECTED_BLESSING_KEY: standard_artifacts.ModelBlessing(),
          spec_keys.SELECTION_KEY: artifact_types.VariantSelection()}
  for key, artifact in outs.items():
    artifact.uri = str(tmp_path / key)
  selector_executor.Executor().Do(
      {'model_only': [model], 'benchmark_only': [bench]},
      {k: [v] for k, v in outs.items()},
      {spec_keys.VARIANTS_KEY: '["only"]', spec_keys.PREFER_KEY: 'size'})

  reason = pusher_executor.refusal_reason(outs[spec_keys.SELECTED_MODEL_KEY],
                                          outs[spec_keys.SELECTED_BLESSING_KEY], ['int8'])
  doc = json.loads((tmp_path / spec_keys.SELECTION_KEY / 'selection.json').read_text())
  assert doc['winner'] is None
  assert doc['reasons']['only'].startswith('over the device budgets (size ')
  # Every variant's own reason reaches the pusher, so the log says what to fix.
  assert reason == ('VariantSelector chose no model to ship: no variant is both blessed by the '
                    'accuracy gate and within the device budgets: only: '
                    f'{doc["reasons"]["only"]}')
  assert not os.path.exists(tmp_path / spec_keys.SELECTED_MODEL_KEY / 'model.tflite')
  assert os.path.exists(tmp_path / spec_keys.SELECTED_BLESSING_KEY / 'NOT_BLESSED')


def _select(tmp_path, model, benchmark):
  outs = {spec_keys.SELECTED_MODEL_KEY: standard_artifacts.Model(),
          spec_keys.SELECTED_BLESSING_KEY: standard_artifacts.ModelBlessing(),
          spec_keys.SELECTION_KEY: artifact_types.VariantSelection()}
  for key, artifact in outs.items():
    artifact.uri = str(tmp_path / 'selected' / key)
  selector_executor.Executor().Do(
      {'model_ptq': [model], 'benchmark_ptq': [benchmark]}, {k: [v] for k, v in outs.items()},
      {spec_keys.VARIANTS_KEY: '["ptq"]', spec_keys.PREFER_KEY: 'size'})


def test_a_benchmark_that_is_not_of_the_variant_model_is_refused(tmp_path, tflite_models):
  model = _model_artifact(tmp_path, 'ptq', tflite_models['int8'], 'int8')
  other = _model_artifact(tmp_path, 'other', tflite_models['fp32'], 'float32')
  measured_other = run_benchmark(tmp_path, 'other', other)
  empty = artifact_types.DeviceBenchmark()
  empty.uri = str(tmp_path / 'empty')

  with pytest.raises(errors.DataError, match=f"VariantSelector: variant 'ptq': benchmark artifact "
                     f'{empty.uri} has no benchmark.json; wire a DeviceBenchmarker output'):
    _select(tmp_path, model, empty)
  with pytest.raises(errors.DataError, match=f"VariantSelector: variant 'ptq': the benchmark "
                     f'{measured_other.uri} did not measure its model {model.uri}; wire the '
                     'DeviceBenchmarker of that model'):
    _select(tmp_path, model, measured_other)

  assert not os.path.exists(tmp_path / 'selected')


def _failed_model(tmp_path, name, reason):
  """An int8 Model artifact as PTQConverter leaves it for a failed variant: marked, no file."""
  model = standard_artifacts.Model()
  model.uri = str(tmp_path / 'models' / name)
  model.set_string_custom_property(spec_keys.PROP_MODE, 'int8')
  failures.mark_failed(model, reason)
  return model


def test_a_failed_variant_ranks_nowhere_and_the_best_other_one_wins():
  failed = selection_lib.Candidate.of_failed('pcqat', 'QATTrainer failed: ConfigError: layer x')
  candidates = [_candidate('ptq', 0.98, True, 37_000), _candidate('clustered', 0.98, True, 25_000),
                failed]

  result = selection_lib.select(candidates)

  assert result.winner == 'clustered'
  assert result.reasons['pcqat'] == 'failed: QATTrainer failed: ConfigError: layer x'
  assert 'pcqat' not in result.front and not failed.eligible
  # Its zero size and unknown latency dominate nothing.
  assert result.reasons['ptq'].endswith('dominated by clustered')
  assert selection_lib.select([failed]).winner is None


def test_selector_lists_a_failed_variant_with_its_reason_and_ships_the_best_other(
    tmp_path, tflite_models):
  reason = 'Clusterer failed: ValueError: k-means found 3 values for 16 clusters'
  models = {
      'ptq': _model_artifact(tmp_path, 'ptq', tflite_models['int8'], 'int8'),
      'clustered': _failed_model(tmp_path, 'clustered', reason),
  }
  inputs = {}
  for name, model in models.items():
    inputs[selector_executor.model_key(name)] = [model]
    # The real DeviceBenchmarker: it passes the failed variant on without measuring it.
    inputs[selector_executor.benchmark_key(name)] = [
        run_benchmark(tmp_path, name, model, _blessing(tmp_path, name, model, True))]
  benchmark = json.loads((tmp_path / 'benchmarks/clustered/benchmark.json').read_text())
  assert benchmark['models'][0]['failed'] == reason
  assert benchmark['models'][0]['measurements'] == []
  assert inputs['benchmark_clustered'][0].get_int_custom_property(spec_keys.PROP_FAILED) == 1
  outs = {spec_keys.SELECTED_MODEL_KEY: standard_artifacts.Model(),
          spec_keys.SELECTED_BLESSING_KEY: standard_artifacts.ModelBlessing(),
          spec_keys.SELECTION_KEY: artifact_types.VariantSelection()}
  for key, artifact in outs.items():
    artifact.uri = str(tmp_path / key)

  selector_executor.Executor().Do(inputs, {k: [v] for k, v in outs.items()}, {
      spec_keys.VARIANTS_KEY: json.dumps(list(models)), spec_keys.PREFER_KEY: 'size'})

  doc = json.loads((tmp_path / spec_keys.SELECTION_KEY / 'selection.json').read_text())
  assert doc['winner'] == 'ptq'
  assert doc['failed'] == {'clustered': reason}
  assert doc['reasons']['clustered'] == f'failed: {reason}'
  assert pusher_executor.refusal_reason(outs[spec_keys.SELECTED_MODEL_KEY],
                                        outs[spec_keys.SELECTED_BLESSING_KEY], ['int8']) == ''
  html = (tmp_path / spec_keys.SELECTION_KEY / 'index.html').read_text()
  assert 'Selected: ptq' in html and 'FAILED' in html
  assert '1 variant(s) failed before the gate' in html and 'k-means found 3 values' in html


def test_a_benchmark_of_a_failed_variant_counts_as_failed_even_if_the_model_is_not_marked(
    tmp_path):
  entry = {'failed': 'PTQConverter failed: ConversionError: op X', 'accuracy': {}}
  candidate = selector_executor.candidate_of('ptq', entry)
  assert candidate.failed == 'PTQConverter failed: ConversionError: op X'
  assert not candidate.eligible
