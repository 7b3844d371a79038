"""The fine-tuning recovery benchmark (benchmarks/fine_tuning.py) in --quick mode, end to end.

Runs the script as a user does, in a subprocess, on the digits CNN and three variants (the
Clusterer, PCQAT: the Pruner then QATTrainer, and the Pruner alone): every setting goes through
the optimizers' own executors, and the report shows them side by side.
"""
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers import ENV

pytestmark = pytest.mark.e2e  # Trains, fine-tunes twice and converts: about a minute.


def test_quick_run_compares_the_former_settings_and_the_defaults_side_by_side(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'benchmarks.fine_tuning', '--quick', '--models', 'digits_cnn',
       '--variants', 'clustered16', 'pcqat', 'pruned50', '--longer-epochs', '3', '--output-dir',
       str(tmp_path)],
      cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

  results = json.loads((tmp_path / 'fine_tuning.json').read_text())
  record = results['models']['digits_cnn']
  row = record['variants']['clustered16']
  assert record['fp32_accuracy'] > 0.3  # Ten classes: a briefly trained CNN is far above chance.
  for setting in ('former', 'defaults'):
    assert row[setting]['delta_points'] == pytest.approx(
        100 * (row[setting]['accuracy'] - record['fp32_accuracy']))
    assert row[setting]['fine_tuning']['epochs_run'] >= 1
  report = (tmp_path / 'fine_tuning.md').read_text()
  gained = row['defaults']['delta_points'] - row['former']['delta_points']
  assert f'| clustered 16 + int8 | {row["former"]["delta_points"]:+.1f} | ' in report
  assert f'| {gained:+.1f} |' in report and results['host']['cpu_model'] in report
  # The longer run: the defaults over 3 epochs, in its own column.
  assert row['longer']['fine_tuning']['epochs_run'] == 3 > row['defaults']['fine_tuning'][
      'epochs_run'] - 1
  assert '| 3 epochs Δ (kept epoch) |' in report
  # PCQAT: QATTrainer chose the prune-preserving scheme from the history the Pruner left.
  pcqat = record['variants']['pcqat']
  assert pcqat['defaults']['qat_scheme'] == 'prune_preserve'
  assert f'| pruned 50% + PCQAT int8 | {pcqat["former"]["delta_points"]:+.1f} | ' in report
  # Pruned variants are also converted with one scale per weight tensor: no per-channel scales
  # of the conv kernels to ship, so a smaller payload.
  pruned = record['variants']['pruned50']
  for setting in ('defaults', 'longer'):
    assert pruned[setting]['per_tensor']['gzip_ratio'] > pruned[setting]['gzip_ratio']
  assert 'per_tensor' not in pruned['former'] and 'per_tensor' not in row['defaults']
  assert (f'pruned 50% + int8 (defaults): Δ {pruned["defaults"]["per_tensor"]["delta_points"]:+.1f}'
          in report)


def test_a_failing_variant_is_recorded_and_the_others_still_run(monkeypatch):
  # In-process, so the benchmark can be given a variant that fails for real: a Pruner told to
  # skip every layer refuses to run (ConfigError), as a user's bad option would.
  from benchmarks import fine_tuning
  from components.common import lineage
  from components.pruner import executor as pruner_executor
  from components.pruner import pruning
  monkeypatch.setitem(fine_tuning.VARIANTS, 'unprunable', ('pruned, every layer skipped', ((
      pruner_executor.Executor, pruning.PruningConfig(target_sparsity=0.5, skip_layers='.*'),
      lineage.PRUNE),)))
  record = fine_tuning.benchmark_model(
      'digits_cnn', fine_tuning.MODELS['digits_cnn'], ['unprunable', 'clustered16'], True,
      lambda: 0.0)

  failed = record['variants']['unprunable']
  for setting in ('former', 'defaults'):
    assert failed[setting]['error'].startswith('ConfigError: pruning: no layer')
    assert 'accuracy' not in failed[setting]
  assert record['variants']['clustered16']['defaults']['accuracy'] > 0.3
  report = fine_tuning.markdown({'host': {'cpu_model': 'x', 'cpu_count': 2}, 'quick': True,
                                 'started': 'now', 'duration_s': 60,
                                 'models': {'digits_cnn': record}})
  assert '| pruned, every layer skipped | failed: former: ConfigError: pruning: no layer' in report
  assert '| clustered 16 + int8 | ' in report
