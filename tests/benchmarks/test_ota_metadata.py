"""The OTA metadata benchmark at small sizes: real repositories, real HTTP, the report."""
import json

from benchmarks import ota_metadata


def _row(runs, layout, names, pushes):
  return next(r for r in runs if (r['layout'], r['names'], r['pushes']) == (layout, names, pushes))


def test_a_small_run_measures_both_layouts_side_by_side(tmp_path):
  results = ota_metadata.run(pushes=(1, 3, 14), names=(1, 2), model_bytes=16,
                             work_dir=str(tmp_path))
  runs = results['runs']

  assert len(runs) == 3 * 2 * 2
  flat_3, flat_14 = (_row(runs, 'flat', 1, p) for p in (3, 14))
  new_3, new_14 = (_row(runs, 'delegated', 1, p) for p in (3, 14))
  # The flat targets.json grows with every version; the delegated update carries the model's
  # role, which retention caps at keep_versions (10) versions.
  assert flat_14['update_bytes'] > flat_3['update_bytes'] + 10 * 400
  assert new_14['update_bytes'] < flat_14['update_bytes']
  assert flat_14['update_files'] == ['snapshot.json', 'targets.json', 'timestamp.json']
  assert new_14['update_files'] == ['model00.json', 'snapshot.json', 'timestamp.json']
  # Two names: the device of model00 never downloads model01's role.
  assert all('model01' not in f for r in runs if r['layout'] == 'delegated'
             for f in r['update_files'])
  # At one push the update is the device's first fetch.
  assert all(r['first_fetch_bytes'] >= r['update_bytes'] > 0 and r['publish_ms'] > 0
             for r in runs)
  # A device in sync skips the delegated layout's unchanged targets.json; flat has no such file.
  assert all(r['first_fetch_bytes'] > r['update_bytes'] for r in runs
             if r['pushes'] > 1 and r['layout'] == 'delegated')
  assert all(r['first_fetch_bytes'] == r['update_bytes'] for r in runs if r['layout'] == 'flat')
  assert [g['names'] for g in results['goals']] == [1, 2]
  text = ota_metadata.report(results)
  assert '| 1 | 14 |' in text and '## Goals (delegated layout)' in text
  json.dumps(results)  # What main() writes.


def test_goals_compare_the_largest_count_with_the_reference():
  def rows(names, by_pushes):
    return [dict(layout='delegated', names=names, pushes=p, update_bytes=b, publish_cpu_ms=t)
            for p, (b, t) in by_pushes.items()]

  runs = (rows(1, {10: (1000, 10.0), 1000: (1050, 12.0)}) +
          rows(20, {10: (500, 10.0), 200: (2000, 10.0), 1000: (2500, 30.0)}))

  one, twenty = ota_metadata.goals(runs)

  assert (one['bytes_from'], one['bytes_ok'], one['time_ok']) == (10, True, True)
  # For 20 names the reference is the first count where every role is full: 200.
  assert (twenty['bytes_from'], twenty['bytes_ratio'], twenty['bytes_ok']) == (200, 1.25, False)
  assert (twenty['time_ratio'], twenty['time_ok']) == (3.0, False)
