"""RegressionGate: a candidate against the model released on the channel, fetched through TUF.

Real digits models and their int8 TFLite conversions, a real TUF repository (OTARepository), the
real RegressionGate executor (the TFX Evaluator's machinery underneath) and TFMA.
"""
import json
import os

from google.protobuf import json_format
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx.types import standard_artifacts
from tuf.api import exceptions as tuf_exceptions

from components import GateExamplesGen
from components import RegressionGate
from components import artifact_types
from components import spec_keys
from components.common import evaluation
from components.common import tasks
from components.errors import ConfigError
from components.ota import repository
from components.ptq_converter import calibration
from components.ptq_converter import conversion
from components.regression_gate import executor
from components.regression_gate import regression
from components.regression_gate import report
from components.selector import executor as selector_executor
from components.selector import selection as selection_lib
from components.selector.selection import Candidate
from tests.conftest import write_examples
from tests.helpers import blessing_artifact
from tests.helpers import channel
from tests.helpers import small_model
from tests.helpers import tflite_model_artifact

NAME = 'digits'
KILLED_CLASS = 3  # The class-killer model learned to call every 3 a 5.


def _with_scanner(record, i):
  """The record with a feature no model reads, to slice by: scanner 'a' or 'b', alternately."""
  example = tf.train.Example.FromString(record)
  example.features.feature['scanner'].bytes_list.value.append(b'ab'[i % 2:i % 2 + 1])
  return example.SerializeToString()


def _int8(model, pixels, input_name='pixels'):
  return conversion.convert(model, 'int8', calibration.representative_dataset(
      {input_name: pixels[:200]}))


@pytest.fixture(scope='module')
def case(tmp_path_factory, digits_records, digits_arrays):
  """Eval examples and schema as GateExamplesGen writes them, and three int8 models.

  Labels change in training only (the class killer's): the eval split stays true.
  """
  root = tmp_path_factory.mktemp('regression')
  pixels, labels = digits_arrays
  models = {}
  for name, train_labels in (
      ('good', labels[:1437]),
      ('class_killer', np.where(labels[:1437] == KILLED_CLASS, 5, labels[:1437]))):
    model = small_model()
    model.compile('adam', 'sparse_categorical_crossentropy')
    model.fit(pixels[:1437], train_labels, epochs=15, batch_size=32, verbose=0)
    models[name] = _int8(model, pixels)
  other = small_model(input_name='image')
  models['other_signature'] = _int8(other, pixels, 'image')

  examples = write_examples(str(root / 'examples'), {'eval': [
      _with_scanner(record, i) for i, record in enumerate(digits_records[1437:])]})
  baseline = tflite_model_artifact(root / 'float32', conversion.convert(small_model(), 'float32'),
                                   mode='float32')
  component = GateExamplesGen(examples=channel(standard_artifacts.Examples), model=channel(),
                              label_key='label')
  schema, gate_examples = standard_artifacts.Schema(), standard_artifacts.Examples()
  schema.uri, gate_examples.uri = str(root / 'schema'), str(root / 'gate_examples')
  component.EXECUTOR_SPEC.executor_class().Do(
      {spec_keys.EXAMPLES_KEY: [examples], spec_keys.MODEL_KEY: [baseline]},
      {spec_keys.SCHEMA_KEY: [schema], spec_keys.GATE_EXAMPLES_KEY: [gate_examples]},
      dict(component.exec_properties))
  return dict(root=root, models=models, schema=schema, examples=gate_examples)


def _repository(tmp_path, released=None):
  repo = repository.OTARepository(str(tmp_path / 'repo'), str(tmp_path / 'keys'))
  repo.init()
  if released is not None:
    repo.publish(NAME, released, info={'mode': 'int8'})
  return repo


def _gate(case, tmp_path, candidate, repo_dir, blessed=True, selection=None, **kwargs):
  """Runs the RegressionGate executor; returns (blessing, released_model, evaluation)."""
  out = tmp_path / f'run{len(os.listdir(tmp_path))}'
  model = tflite_model_artifact(out / 'candidate', case['models'][candidate])
  float_blessing = blessing_artifact(out / 'float_blessing', model, blessed)
  component = RegressionGate(
      model=channel(), model_blessing=channel(standard_artifacts.ModelBlessing),
      examples=channel(standard_artifacts.Examples), schema=channel(standard_artifacts.Schema),
      repository_dir=repo_dir, model_name=NAME, label_key='label',
      selection=None if selection is None else channel(artifact_types.VariantSelection),
      **kwargs)
  outputs = {spec_keys.RELEASED_MODEL_KEY: standard_artifacts.Model(),
             spec_keys.EVALUATION_KEY: standard_artifacts.ModelEvaluation(),
             spec_keys.BLESSING_KEY: standard_artifacts.ModelBlessing()}
  for key, artifact in outputs.items():
    artifact.uri = str(out / key)
    os.makedirs(artifact.uri)
  component.EXECUTOR_SPEC.executor_class().Do(
      {spec_keys.MODEL_KEY: [model], spec_keys.MODEL_BLESSING_KEY: [float_blessing],
       spec_keys.EXAMPLES_KEY: [case['examples']], spec_keys.SCHEMA_KEY: [case['schema']],
       **({} if selection is None else {spec_keys.SELECTION_KEY: [selection]})},
      {k: [v] for k, v in outputs.items()}, dict(component.exec_properties))
  return (outputs[spec_keys.BLESSING_KEY], outputs[spec_keys.RELEASED_MODEL_KEY],
          outputs[spec_keys.EVALUATION_KEY])


def _verdict(blessing):
  return (blessing.get_int_custom_property('blessed'),
          blessing.get_string_custom_property(spec_keys.PROP_REGRESSION_STATUS),
          blessing.get_string_custom_property(spec_keys.PROP_REASON))


def test_the_first_release_passes_with_the_reason_recorded(case, tmp_path):
  repo = _repository(tmp_path)

  blessing, released, _ = _gate(case, tmp_path, 'good', repo.repo_dir)

  blessed, status, reason = _verdict(blessing)
  assert (blessed, status) == (1, executor.FIRST_RELEASE)
  assert "nothing of 'digits' is released on channel 'stable'" in reason
  assert released.get_string_custom_property(spec_keys.PROP_RELEASED_VERSION) == 'none'


@pytest.mark.e2e
def test_a_model_that_fails_one_class_is_blocked_by_the_slice_threshold(case, tmp_path):
  repo = _repository(tmp_path, released=case['models']['good'])

  # A loose overall threshold: only the per-class slice can catch it.
  blessing, released, output = _gate(case, tmp_path, 'class_killer', repo.repo_dir,
                                     max_regression=0.5)

  blessed, status, reason = _verdict(blessing)
  assert (blessed, status) == (0, executor.REGRESSED), reason
  metric = tasks.GATE_METRIC[tasks.MULTICLASS][1]
  values = evaluation.slice_metric_values(output.uri, metric)
  killed = values[f'label={KILLED_CLASS}']
  assert killed[evaluation.CANDIDATE] < 0.2 < 0.6 < killed[evaluation.BASELINE]
  assert (f'{metric} on slice label={KILLED_CLASS}: candidate '
          f'{killed[evaluation.CANDIDATE]:.4f} vs released {killed[evaluation.BASELINE]:.4f}'
          ) in reason
  assert 'slice overall' not in reason  # Overall it held (within 0.5).
  # The report people look at: the slice table and the bars.
  with open(os.path.join(output.uri, spec_keys.REPORT_HTML_FILE_NAME)) as f:
    page = f.read()
  assert f'<td class="l">label={KILLED_CLASS}</td>' in page and 'regressed' in page
  assert os.path.getsize(os.path.join(output.uri, report.SLICES_PNG)) > 1000
  assert released.get_string_custom_property(spec_keys.PROP_RELEASED_VERSION) == '1'
  with open(os.path.join(released.uri, spec_keys.PLAIN_TFLITE_FILE_NAME), 'rb') as f:
    assert f.read() == case['models']['good']  # The released bytes, as devices have them.


@pytest.mark.e2e
def test_slice_noise_z_0_takes_the_slice_threshold_literally(case, tmp_path):
  repo = _repository(tmp_path, released=case['models']['good'])

  blessing, _, output = _gate(case, tmp_path, 'class_killer', repo.repo_dir, max_regression=0.5,
                              slice_noise_z=0.0)

  metric = tasks.GATE_METRIC[tasks.MULTICLASS][1]
  literal = regression.compare(output.uri, metric, 0.5, 0.02, z=0.0)
  dropped = {r.slice for r in literal if r.slice != evaluation.OVERALL and
             r.released - r.candidate > 0.02 + 1e-6}
  # Every slice more than 2 points down is a regression, none is excused as noise.
  assert {r.slice for r in literal if r.verdict == regression.REGRESSED} == dropped
  assert f'label={KILLED_CLASS}' in dropped
  assert not [r for r in literal if r.verdict == regression.NOISE]
  blessed, status, reason = _verdict(blessing)
  assert (blessed, status) == (0, executor.REGRESSED)
  assert all(r.line(metric) in reason for r in literal if r.slice in dropped)


def _selection(tmp_path):
  """selection.json as VariantSelector writes it: ptq selected, pruned50 failed."""
  candidates = [
      Candidate(name='ptq', accuracy=0.9, accuracy_blessed=True, accuracy_reason='blessed',
                within_budget=True, budget_reason='within budgets', p50_ms=0.05,
                gzip_bytes=20_000, size_bytes=25_000),
      Candidate.of_failed('pruned50', 'Pruner: out of memory')]
  result = selection_lib.select(candidates)
  artifact = artifact_types.VariantSelection()
  artifact.uri = str(tmp_path / 'selection')
  os.makedirs(artifact.uri)
  with open(os.path.join(artifact.uri, spec_keys.SELECTION_JSON_FILE_NAME), 'w') as f:
    json.dump(selector_executor.selection_doc('size', candidates, result, {
        'ptq': '/m/ptq', 'pruned50': '/m/pruned50'}), f)
  return artifact


@pytest.mark.e2e
def test_the_selection_report_shows_the_released_models_row_beside_the_candidates(case,
                                                                                  tmp_path):
  repo = _repository(tmp_path, released=case['models']['class_killer'])
  first = _repository(tmp_path / 'new')

  blessing, released, output = _gate(case, tmp_path, 'good', repo.repo_dir,
                                     selection=_selection(tmp_path))
  _, _, first_output = _gate(case, tmp_path / 'new', 'good', first.repo_dir,
                             selection=_selection(tmp_path / 'new'))

  assert _verdict(blessing)[:2] == (1, executor.PASSED)
  metric = tasks.GATE_METRIC[tasks.MULTICLASS][1]
  accuracy = evaluation.metric_values(output.uri, metric)[evaluation.BASELINE]
  page_dir = os.path.join(output.uri, spec_keys.SELECTION_REPORT_DIR)
  with open(os.path.join(page_dir, spec_keys.REPORT_HTML_FILE_NAME)) as f:
    page = f.read()
  size = len(case['models']['class_killer'])
  # The candidates' rows as the selector ranked them, then the released model's, measured here.
  assert page.index('<td class="l">ptq</td>') < page.index('<td class="l">pruned50</td>') < (
      page.index(f'<td class="l">released v1</td><td></td><td>{accuracy:.4f}</td><td>released'
                 f'</td><td>-</td><td>not measured</td><td>{size:,}</td>'))
  assert 'regression gate: passed: no regression' in page
  assert os.path.getsize(os.path.join(page_dir, 'accuracy_vs_gzip_size.png')) > 1000
  with open(os.path.join(page_dir, spec_keys.SELECTION_JSON_FILE_NAME)) as f:
    doc = json.load(f)
  assert (doc['winner'], doc['released']['label'], doc['released']['accuracy']) == (
      'ptq', 'released v1', pytest.approx(accuracy))
  assert released.get_int_custom_property(spec_keys.PROP_SIZE_BYTES) == size
  # Before the first release there is no row; the page says why.
  with open(os.path.join(first_output.uri, spec_keys.SELECTION_REPORT_DIR,
                         spec_keys.REPORT_HTML_FILE_NAME)) as f:
    first_page = f.read()
  assert 'released v' not in first_page
  assert 'No released model row: nothing of &#x27;digits&#x27; is released' in first_page


def test_the_same_model_as_released_passes(case, tmp_path):
  repo = _repository(tmp_path, released=case['models']['good'])

  blessing, _, _ = _gate(case, tmp_path, 'good', repo.repo_dir)

  blessed, status, reason = _verdict(blessing)
  assert (blessed, status) == (1, executor.PASSED), reason
  assert 'against' in reason and 'version 1' in reason


def test_a_released_model_with_another_signature_fails_naming_both(case, tmp_path):
  repo = _repository(tmp_path, released=case['models']['good'])

  blessing, _, _ = _gate(case, tmp_path, 'other_signature', repo.repo_dir)

  blessed, status, reason = _verdict(blessing)
  assert (blessed, status) == (0, executor.SIGNATURE_MISMATCH)
  assert 'candidate inputs serving_default_image:0 int8[-1, 64]' in reason
  assert 'released inputs serving_default_pixels:0 int8[-1, 64]' in reason


def test_a_candidate_the_float_gate_refused_is_not_evaluated(case, tmp_path):
  repo = _repository(tmp_path, released=case['models']['good'])

  blessing, _, _ = _gate(case, tmp_path, 'good', repo.repo_dir, blessed=False)

  assert _verdict(blessing)[:2] == (0, executor.NOT_EVALUATED)


def test_a_tampered_release_is_refused_as_a_device_refuses_it(case, tmp_path):
  repo = _repository(tmp_path, released=case['models']['good'])
  [release] = repo.releases(NAME)
  directory, base = os.path.split(release.path)
  target = os.path.join(repo.repo_dir, 'targets', directory, f'{release.sha256}.{base}')
  with open(target, 'r+b') as f:
    f.seek(100)
    f.write(b'\0\1\2\3')

  with pytest.raises(tuf_exceptions.RepositoryError):
    _gate(case, tmp_path, 'good', repo.repo_dir)


@pytest.mark.parametrize('kwargs,message', [
    (dict(max_regression=1.5), 'max_regression=1.5 is not accepted'),
    (dict(max_slice_regression=float('nan')), 'max_slice_regression=nan is not accepted'),
    (dict(max_regression=-0.1), 'max_regression=-0.1 is not accepted'),
    (dict(slicing_features='country'), "slicing_features='country' is not accepted"),
    (dict(task='ranking'), "task='ranking' is not accepted"),
    (dict(slice_noise_z=-1), r'slice_noise_z=-1 is not accepted; give a number of standard '
     r'errors from 0 \(slice thresholds taken literally\) to 10'),
    (dict(slice_noise_z='high'), "slice_noise_z='high' is not accepted"),
])
def test_bad_thresholds_fail_when_the_pipeline_is_built(kwargs, message):
  with pytest.raises(ConfigError, match=message):
    RegressionGate(model=channel(), model_blessing=channel(standard_artifacts.ModelBlessing),
                   examples=channel(standard_artifacts.Examples),
                   schema=channel(standard_artifacts.Schema), repository_dir='/tmp/repo',
                   model_name=NAME, label_key='label', **kwargs)


@pytest.mark.e2e
def test_slicing_specs_cross_features_and_pick_one_value(case, tmp_path):
  repo = _repository(tmp_path, released=case['models']['good'])
  specs = [{'feature_keys': ['label', 'scanner']}, {'feature_values': {'scanner': 'b'}}]

  blessing, _, output = _gate(case, tmp_path, 'class_killer', repo.repo_dir, max_regression=0.5,
                              slicing_specs=specs)

  metric = tasks.GATE_METRIC[tasks.MULTICLASS][1]
  values = evaluation.slice_metric_values(output.uri, metric)
  # A slice per (label, scanner) pair, and the one scanner asked for, besides the classes.
  assert {f'label={c}, scanner={s}' for c in range(10) for s in 'ab'} <= set(values)
  assert 'scanner=b' in values and 'scanner=a' not in values
  blessed, status, reason = _verdict(blessing)
  assert (blessed, status) == (0, executor.REGRESSED)
  for scanner in 'ab':  # The crossed slices name both features and both values.
    crossed = values[f'label={KILLED_CLASS}, scanner={scanner}']
    assert (f'{metric} on slice label={KILLED_CLASS}, scanner={scanner}: candidate '
            f'{crossed[evaluation.CANDIDATE]:.4f} vs released '
            f'{crossed[evaluation.BASELINE]:.4f}') in reason


def test_a_slice_on_a_feature_the_examples_lack_fails_before_anything_is_evaluated(case,
                                                                                   tmp_path):
  repo = _repository(tmp_path, released=case['models']['good'])

  with pytest.raises(ConfigError) as error:
    _gate(case, tmp_path, 'good', repo.repo_dir,
          slicing_specs=[{'feature_keys': ['label', 'country']}])

  assert str(error.value) == (
      "RegressionGate (digits): the slice {'featureKeys': ['label', 'country']} names "
      "['country'], which the eval examples do not have, so the gate could not measure it. "
      "Features they have: ['label', 'pixels', 'scanner'].")


@pytest.mark.e2e
def test_a_one_value_slice_without_examples_is_refused_not_passed(case, tmp_path):
  repo = _repository(tmp_path, released=case['models']['good'])

  blessing, _, _ = _gate(case, tmp_path, 'good', repo.repo_dir,
                         slicing_specs=[{'feature_values': {'scanner': 'z'}}])

  blessed, status, reason = _verdict(blessing)
  assert (blessed, status) == (0, executor.NOT_MEASURED)
  assert reason == ("the slice(s) scanner=z asked for in slicing_specs have no example in split "
                    "'eval', so the gate cannot tell whether the candidate regressed there")


@pytest.mark.parametrize('specs,message', [
    ('label', "slicing_specs='label' is not accepted: give a list"),
    ([{'feature_key': ['a']}], r"slicing_specs\[0\]=\{'feature_key': \['a'\]\} is not a TFMA "
     'SlicingSpec'),
    ([{}], r'slicing_specs\[0\]=\{\} names no feature: the overall slice is always evaluated'),
    ([''], r"slicing_specs\[0\]='' is not accepted"),
    ([{'feature_values': {'': 'x'}}], 'has an empty feature name'),
    ([3], r'slicing_specs\[0\]=3 is not accepted; give a feature name'),
])
def test_bad_slicing_specs_fail_when_the_pipeline_is_built(specs, message):
  with pytest.raises(ConfigError, match=message):
    regression.regression_config('label', slicing_specs=specs)


def test_slicing_specs_take_protos_dicts_and_names_and_numbers_as_text():
  config = regression.regression_config('label', slicing_specs=[
      'label', tfma.SlicingSpec(feature_keys=['a', 'b']), {'feature_values': {'label': 3}}])
  assert [json_format.MessageToDict(s) for s in config.slicing_specs] == [
      {}, {'featureKeys': ['label']}, {'featureKeys': ['a', 'b']},
      {'featureValues': {'label': '3'}}]
  assert regression.single_slice(config.slicing_specs[3]) == 'label=3'
  assert regression.single_slice(config.slicing_specs[2]) is None


def test_class_slices_follow_the_task_and_slicing_features_are_added():
  config = regression.regression_config('label', tasks.MULTICLASS, slicing_features=['source'])
  assert [list(s.feature_keys) for s in config.slicing_specs] == [[], ['label'], ['source']]
  config = regression.regression_config('y', tasks.REGRESSION)
  assert [list(s.feature_keys) for s in config.slicing_specs] == [[]]
  with pytest.raises(ConfigError, match='class_slices=True needs a class label'):
    regression.regression_config('y', tasks.REGRESSION, class_slices=True)


@pytest.mark.parametrize('released,candidate,examples,z,noise', [
    (1.0, 31 / 32, 32, regression.SLICE_Z, True),  # One example of 32: 3.1 points, noise.
    (1.0, 31 / 32, 32, 0.0, False),  # Taken literally, 3.1 > 2 points.
    (35 / 36, 4 / 36, 36, regression.SLICE_Z, False),  # A class the model no longer knows.
    (0.95, 0.90, 10_000, regression.SLICE_Z, False),  # 5 points on a large slice.
    (0.95, 0.94, 10_000, regression.SLICE_Z, True),  # Within the 2-point threshold anyway.
])
def test_a_slice_drop_counts_only_beyond_sampling_noise(released, candidate, examples, z, noise):
  assert regression.slice_drop_is_noise(released, candidate, examples, 0.02, z) is noise
