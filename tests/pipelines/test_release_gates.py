"""The regression gate in real pipeline runs: consecutive runs into one OTA repository.

Each run is `python -m pipelines.run_local` as a user runs it, on the embedded digits, with the
same output directory (so the same ML Metadata and OTA repository), training on clean or
deliberately corrupted labels (tests/pipelines/label_noise_module.py). The released model is
fetched by the RegressionGate through TUF and compared with TFMA on the true eval split.
"""
import os
import re

import pytest

from components.common import tasks
from components.ota import repository
from pipelines import pipeline as pipeline_lib
from pipelines import summary
from tests.conftest import REPO_ROOT
from tests.pipelines import label_noise_module
from tests.pipelines.test_e2e import run_pipeline

pytestmark = pytest.mark.e2e
PIPELINE = 'tfx_edge_release_gates'
MODULE_FILE = os.path.join(REPO_ROOT, 'tests', 'pipelines', 'label_noise_module.py')
QUICK = ['--variants', 'ptq', '--bench-threads', '1', '--bench-min-duration', '0.1',
         '--module-file', MODULE_FILE, '--pipeline-name', PIPELINE]
METRIC = tasks.GATE_METRIC[tasks.MULTICLASS][1]


def _run(output_dir, monkeypatch, noise, *args):
  monkeypatch.setenv(label_noise_module.LABEL_NOISE_ENV, noise)
  output = run_pipeline(output_dir, *QUICK, *args)
  paths = pipeline_lib.demo_paths(str(output_dir))
  rows = {r.variant: r for r in summary.summarize(paths['metadata_path'], PIPELINE)}
  releases = repository.OTARepository(paths['ota_repository']).releases('digits')
  return output, rows, releases, summary.regression_outcome(paths['metadata_path'], PIPELINE)


def test_a_worse_model_is_blocked_by_the_released_one_and_a_better_one_is_published(
    tmp_path, monkeypatch):
  out = tmp_path / 'out'

  # 1. The first release: nothing to compare with, the reason is recorded.
  output, rows, releases, outcome = _run(out, monkeypatch, 'flip30')
  assert [r.version for r in releases] == [1], output[-3000:]
  assert outcome.startswith('first_release: nothing of \'digits\' is released'), outcome
  noisy_accuracy = rows['ptq'].accuracy

  # 2. Trained on clean labels: better than the released model, so it is published.
  output, rows, releases, outcome = _run(out, monkeypatch, 'none')
  assert outcome.startswith('passed: no regression'), output[-3000:]
  assert [r.version for r in releases] == [1, 2]
  assert rows['released v1'].accuracy == pytest.approx(noisy_accuracy, abs=1e-9)
  assert rows['ptq'].accuracy > noisy_accuracy
  clean_accuracy = rows['ptq'].accuracy
  # The selection report the run prints has the released model's row beside the candidates.
  report = re.search(r'Variant selection report .*: (\S+index\.html)', output).group(1)
  with open(report) as f:
    assert f'<td class="l">released v1</td><td></td><td>{noisy_accuracy:.4f}</td>' in f.read()

  # 3. Corrupted labels again: its int8 passes the float32 gate, the regression gate blocks it.
  output, rows, releases, outcome = _run(out, monkeypatch, 'flip30')
  assert rows['ptq'].blessed == 'BLESSED', output[-3000:]  # The float32 gate.
  assert [r.version for r in releases] == [1, 2]  # Nothing new published.
  assert outcome.startswith('regressed: worse than the released model: '), outcome
  assert f'{METRIC} on slice overall: candidate {rows["ptq"].accuracy:.4f} vs released ' \
         f'{clean_accuracy:.4f}' in outcome
  assert rows['ptq'].pushed_to.startswith('not pushed: '), rows['ptq'].pushed_to
  assert 'worse than the released model' in rows['ptq'].pushed_to

  # 4. One class broken while the overall metric is allowed to move: the slice blocks it.
  output, rows, releases, outcome = _run(out, monkeypatch, 'kill3', '--max-regression', '0.2')
  assert [r.version for r in releases] == [1, 2], output[-3000:]
  assert outcome.startswith('regressed: '), outcome
  assert f'{METRIC} on slice label=3: candidate ' in outcome
  assert 'slice overall' not in outcome
  assert 'Regression gate report (the candidate beside the released model, per slice): ' in output
