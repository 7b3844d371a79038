"""The benchmark suite (benchmarks/model_zoo.py) in --quick mode on the digits CNN, end to end.

Runs the script as a user does (`python -m benchmarks.model_zoo`) in a subprocess and checks that
its Markdown, PNG and JSON exist and that the figures are consistent with the .tflite files it
wrote: every ratio is against the fp32 file of the same run.
"""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers import ENV

# The suite converts, fine-tunes and measures several models in a subprocess: minutes.
pytestmark = pytest.mark.e2e


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp('zoo')
  proc = subprocess.run(
      [sys.executable, '-m', 'benchmarks.model_zoo', '--quick', '--models', 'digits',
       '--variants', 'int8', 'pruned_int8', 'clustered_int8', '--threads', '1', '--output-dir',
       str(out)],
      cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(out / 'model_zoo.json') as f:
    return out, json.load(f), proc.stdout


def test_writes_markdown_png_json_and_models(quick_run):
  out, results, stdout = quick_run
  with open(out / 'model_zoo.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  report = (out / 'model_zoo.md').read_text()
  assert '| digits | int8 |' in report and '| digits | pruned 80% + int8 |' in report
  assert '## Goals' in report and results['host']['cpu_model'] in report
  assert 'Host:' in stdout.split('| model |')[0]  # Host info printed before the results.
  assert list(results['models']) == ['digits']
  variants = results['models']['digits']['variants']
  assert list(variants) == ['fp32', 'int8', 'pruned_int8', 'clustered_int8']  # fp32 first.
  for entry in variants.values():
    assert 'error' not in entry, entry
    assert os.path.getsize(out / entry['file']) == entry['size_bytes']


def test_ratios_are_against_fp32_of_the_same_run(quick_run):
  out, results, _ = quick_run
  record = results['models']['digits']
  assert record['data_source'] == 'real'
  v = record['variants']
  fp32, int8, pruned = v['fp32'], v['int8'], v['pruned_int8']
  assert fp32['size_ratio'] == fp32['gzip_ratio'] == fp32['speedup']['1'] == 1.0
  fp32_bytes = os.path.getsize(out / fp32['file'])
  assert int8['size_ratio'] == pytest.approx(fp32_bytes / os.path.getsize(out / int8['file']))
  assert int8['speedup']['1'] == pytest.approx(
      fp32['latency']['1']['p50_ms'] / int8['latency']['1']['p50_ms'])
  # int8 weights are a quarter of float32: the file must be well over 2x smaller, under 4.5x.
  assert 2.0 < int8['size_ratio'] < 4.5
  # 80% zeros compress: pruned + int8 + gzip must beat plain int8 + gzip by far.
  assert pruned['gzip_ratio'] > 1.5 * int8['gzip_ratio']
  assert pruned['anatomy']['int8_weights']['zero_fraction'] > 0.7
  for entry in v.values():
    assert entry['latency']['1']['p50_ms'] > 0
    assert 0.0 <= entry['accuracy'] <= 1.0
    assert entry['accuracy_delta'] == pytest.approx(entry['accuracy'] - fp32['accuracy'])
  assert fp32['accuracy'] > 0.3  # Ten classes: a briefly trained CNN is far above chance.


def test_goals_have_figures_and_causes(quick_run):
  _, results, _ = quick_run
  goals = {g['goal']: g for g in results['goals']}
  size_goal = goals['int8 >= 3.9x smaller (conv nets)']
  assert size_goal['value'] == results['models']['digits']['variants']['int8']['size_ratio']
  assert size_goal['result'] == ('PASS' if size_goal['value'] >= 3.9 else 'MISS')
  for goal in results['goals']:
    if goal['result'] == 'MISS':
      assert goal['cause'], goal
  assert 'pruned 80% + int8 + gzip >= 12x smaller' in goals
  # The digits CNN has no BatchNormalization: as PTQConverter does, the clustered model is
  # converted with one int8 scale per tensor, which keeps its 16 values in every kernel.
  clusters = goals['16 clusters: <= 16 int8 values per channel']
  assert clusters['result'] == 'PASS' and clusters['figure'].endswith('(per-tensor int8 scales)')
  weights = results['models']['digits']['variants']['clustered_int8']['anatomy']['int8_weights']
  assert clusters['value'] == weights['distinct_per_channel_max'] <= 16
  assert weights['distinct_per_tensor_max'] <= 16
  # 16 clusters take at most 4 bits per weight before any int8 scale; the cause of a gzip miss
  # quotes that floor.
  info = results['models']['digits']['optimization']
  assert 0.0 < info['clustered_entropy_bits'] <= 4.0
  gzip_goal = goals['16 clusters + int8 + gzip >= 10x smaller']
  if gzip_goal['result'] == 'MISS':
    assert 'The clusters themselves carry' in gzip_goal['cause']


def test_pruned_variant_is_also_measured_with_one_scale_per_tensor(quick_run):
  _, results, _ = quick_run
  record = results['models']['digits']
  alt = record['optimization']['pruned_per_tensor']
  pruned = record['variants']['pruned_int8']
  # Same zeros, one scale per tensor instead of one per output channel of each conv kernel: the
  # float32 scales that gzip barely shrinks are gone, so the payload is smaller.
  assert alt['gzip_bytes'] < pruned['gzip_bytes']
  goal = {g['goal']: g for g in results['goals']}['pruned 80% + int8 + gzip >= 12x smaller']
  if goal['result'] == 'MISS':
    assert (f'one int8 scale per weight tensor instead of per channel the payload would be '
            f'{alt["gzip_bytes"]:,} B' in goal['cause'])
    assert f'at {100 * alt["accuracy"]:.1f}% accuracy' in goal['cause']
