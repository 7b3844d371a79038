"""The data-scale benchmark's data, goals, extrapolation and report, without measuring."""
import numpy as np
import tensorflow as tf

from benchmarks import data_scale
from pipelines import data


def test_scaled_digits_are_seeded_labelled_digits_within_range():
  first = list(data_scale.scaled_digits(50, seed=3, chunk=20))
  again = list(data_scale.scaled_digits(50, seed=3, chunk=20))

  assert first == again and len(first) == 50
  assert first != list(data_scale.scaled_digits(50, seed=4, chunk=20))
  for record in first:
    feature = tf.train.Example.FromString(record).features.feature
    pixels = np.array(feature[data.PIXELS_KEY].float_list.value)
    assert pixels.shape == (data.NUM_PIXELS,) and 0 <= pixels.min() <= pixels.max() <= 1
    assert 0 <= feature[data.LABEL_KEY].int64_list.value[0] < data.NUM_CLASSES


def _results(seconds_by_size):
  runs = [dict(stage=stage, mode='in_process', size=size, seconds=seconds,
               us_per_example=seconds / size * 1e6, peak_rss_mb=rss)
          for stage in data_scale.STAGES for size, (seconds, rss) in seconds_by_size.items()]
  results = {'started': 'now', 'duration_s': 60.0, 'calibration_samples': 300, 'runs': runs,
             'beam_modes': {'in_process': data_scale.BEAM_MODES['in_process']},
             'host': {'cpu_model': 'cpu', 'cpu_count': 2, 'machine': 'x86_64', 'system': 'Linux',
                      'python': '3.10', 'cpu_flags': ['avx2']}}
  results['goals'] = data_scale.goals(results)
  return results


def test_a_fixed_cost_plus_a_cost_per_example_is_extrapolated_from_the_slope():
  # 10 s fixed + 100 us per example; memory flat.
  results = _results({10**4: (11.0, 800.0), 10**5: (20.0, 820.0)})

  [e, *_] = data_scale.extrapolations(results)

  assert e['marginal_us'] == 100.0 and abs(e['fixed_s'] - 10.0) < 1e-9
  assert abs(e['at_1m_s'] - 110.0) < 1e-9 and abs(e['at_10m_s'] - 1010.0) < 1e-9
  assert all(g['time_ok'] and g['memory_ok'] for g in results['goals'])
  text = data_scale.report(results)
  assert '**extrapolated**' in text and '16.8 min' in text and 'avx2' in text


def test_memory_that_grows_with_the_data_misses_the_goal():
  results = _results({10**4: (1.0, 800.0), 10**5: (10.0, 1600.0)})

  assert not any(g['memory_ok'] for g in results['goals'])
  assert 'MISSED' in data_scale.report(results)


def test_both_gates_side_by_side_and_a_merge_that_keeps_what_was_not_measured_again():
  old = _results({10**4: (11.0, 800.0), 10**5: (20.0, 820.0)})
  old['started'] = 'yesterday'
  old['runs'] = [r for r in old['runs'] if r['stage'] != 'evaluator_tfma']  # A pre-split JSON.
  for run in old['runs']:
    if run['stage'] == 'evaluator':
      run['accuracy'] = {'candidate': 0.9, 'baseline': 0.91}
  new = _results({10**5: (5.0, 800.0), 10**6: (40.0, 820.0)})
  new['runs'] = [dict(r, accuracy={'candidate': 0.9, 'baseline': 0.91}) for r in new['runs']
                 if r['stage'] == 'evaluator']

  merged = data_scale.merge(old, new)

  by_key = {(r['stage'], r['size']): r for r in merged['runs']}
  # The old `evaluator` runs measured TFMA's extractor: read as evaluator_tfma, kept.
  assert by_key[('evaluator_tfma', 10**5)]['seconds'] == 20.0
  assert by_key[('evaluator', 10**5)]['seconds'] == 5.0  # Measured again: the new run wins.
  assert ('evaluator', 10**4) not in by_key and ('calibration', 10**4) in by_key
  assert merged['started'] == 'now and yesterday'
  [row] = [r for r in data_scale.gate_comparison(merged) if r['step'] == 'evaluator']
  assert row['size'] == 10**5 and row['speedup'] == 4.0
  assert row['tfma_accuracy'] == row['fast_accuracy'] == {'candidate': 0.9, 'baseline': 0.91}
  text = data_scale.report(merged)
  assert ('| evaluator | in_process | 100,000 | 20.00 | 5.00 | 4.00x | - | 0.9000, 0.9100 / '
          '0.9000, 0.9100 |'
          in text)
