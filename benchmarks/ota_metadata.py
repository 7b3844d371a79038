"""Metadata bytes a device downloads per update, and publish time, as OTA history grows.

```
.venv/bin/python -m benchmarks.ota_metadata [--pushes 1 10 100 200 1000] [--names 1 20]
    [--model-bytes 256] [--output-dir benchmarks/results] [--work-dir DIR] [--no-write]
```

For each spread (pushes over 1 and over 20 model names) it builds two repositories side by side,
pushing the same models into both:

* `flat`, the layout before delegations: every release of every model in one targets.json, and
  every version kept (`OTARepository(delegations=False, keep_versions=None)`);
* `delegated`, today's: one delegated targets role per model name, retention at the default
  `keep_versions` (repository.DEFAULT_KEEP_VERSIONS).

At each push count the count's last push is a new version of the first model, and a device of
that model, in sync just before it, fetches it over HTTP on loopback: the metadata bytes it
downloads for that one update (timestamp, snapshot, the targets roles whose version changed) are
counted at the server, and so are those of a new device's first fetch. Publish time is the median
of the count's last pushes (up to 10), each a whole publish(): target files, metadata, commit.
Models are `--model-bytes` random bytes with minimal custom info (the default DeltaPolicy finds no
patch worth publishing between random files), so that the figures are the metadata's.

Goals (delegated layout): bytes per update at the largest count within 10% of those at 10 pushes
(for 20 names, of those at the first count where every name has keep_versions versions, since
below it each model's role is still filling up), and publish time (CPU time of the process: the
machine may be shared) at the largest count within 1.5x of that at 10 pushes.
"""
import argparse
import contextlib
import datetime
import http.server
import json
import os
import platform
import posixpath
import random
import re
import statistics
import tempfile
import threading
import time
import urllib.parse
from typing import Any, Dict, Iterator, List, Sequence, Tuple

from components.ota import client
from components.ota import repository

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUTS = {
    'flat': {'delegations': False, 'keep_versions': None},
    'delegated': {'keep_versions': repository.DEFAULT_KEEP_VERSIONS},
}
PUSHES = (1, 10, 100, 200, 1000)
NAMES = (1, 20)
MODEL_BYTES = 256
BYTES_GOAL = 1.10  # Bytes per update at the largest count / at the reference count.
TIME_GOAL = 1.5  # Publish time at the largest count / at 10 pushes (timing noise allowed).
TIMED_PUSHES = 10  # Publish time: the median of this many pushes before each count.


@contextlib.contextmanager
def counting_server(repo: repository.OTARepository) -> Iterator[Tuple[str, List]]:
  """An HTTP server on loopback over the repository; yields (url, [(path, bytes sent)])."""
  sent: List[Tuple[str, int]] = []

  class Handler(http.server.BaseHTTPRequestHandler):

    def do_GET(self):  # pylint: disable=invalid-name
      path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip('/')
      try:
        body = repo.storage.read(path)
      except (FileNotFoundError, IsADirectoryError):
        sent.append((path, 0))
        self.send_error(404)
        return
      sent.append((path, len(body)))
      self.send_response(200)
      self.send_header('Content-Length', str(len(body)))
      self.end_headers()
      self.wfile.write(body)

    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f'http://127.0.0.1:{server.server_address[1]}', sent
  finally:
    server.shutdown()
    server.server_close()


def _metadata(sent: List[Tuple[str, int]]) -> Tuple[int, int, List[str]]:
  """(bytes, requests, files) of the metadata among what the server sent."""
  files = [(p, n) for p, n in sent if p.startswith('metadata/')]
  return sum(n for _, n in files), len(files), sorted(p for p, n in files if n)


def measure(layout: str, names: int, pushes: Sequence[int], model_bytes: int,
            work_dir: str) -> List[Dict[str, Any]]:
  """One repository of `layout`, pushed into up to max(pushes) times round-robin over `names`
  model names; one row per push count."""
  root = os.path.join(work_dir, f'{layout}-{names}')
  repo = repository.OTARepository(os.path.join(root, 'repo'), os.path.join(root, 'keys'),
                                  **LAYOUTS[layout])
  repo.init()
  trusted_root = os.path.join(repo.metadata_dir, '1.root.json')
  model_names = [f'model{i:02d}' for i in range(names)]
  rng = random.Random(f'{names}')  # Both layouts get the same models.
  durations: List[float] = []
  cpu: List[float] = []

  def push(name: str) -> None:
    model = rng.randbytes(model_bytes)
    start, start_cpu = time.perf_counter(), time.process_time()
    repo.publish(name, model, info={'mode': 'int8'})
    durations.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)

  rows = []
  done = 0
  device = os.path.join(root, 'device')
  with counting_server(repo) as (url, sent):
    for count in sorted(pushes):
      while done < count - 1:
        push(model_names[done % names])
        done += 1
      if done:  # The device is in sync before the update.
        client.fetch(url, trusted_root, model_names[0], device)
      push(model_names[0])  # The update.
      done += 1
      sent.clear()
      result = client.fetch(url, trusted_root, model_names[0], device)
      update_bytes, update_requests, update_files = _metadata(sent)
      sent.clear()
      client.fetch(url, trusted_root, model_names[0],
                   os.path.join(root, f'new-device-{count}'))
      first_bytes, _, _ = _metadata(sent)
      assert result.updated, f'{layout}: the device did not take the update at {count} pushes'
      rows.append({
          'layout': layout, 'names': names, 'pushes': count,
          'update_bytes': update_bytes, 'update_requests': update_requests,
          'update_files': sorted(re.sub(r'^[0-9]+\.', '', posixpath.basename(f))
                                 for f in update_files),
          'first_fetch_bytes': first_bytes,
          'publish_ms': statistics.median(durations[-TIMED_PUSHES:]) * 1000,
          'publish_cpu_ms': statistics.median(cpu[-TIMED_PUSHES:]) * 1000,
      })
  return rows


def goals(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """Per spread, the delegated layout's figures at the largest count against the reference."""
  out = []
  for names in sorted({r['names'] for r in runs}):
    rows = {r['pushes']: r for r in runs if r['names'] == names and r['layout'] == 'delegated'}
    largest = max(rows)
    # Below this count some model's role holds fewer than keep_versions versions.
    full = repository.DEFAULT_KEEP_VERSIONS * names
    reference = min([p for p in rows if p >= max(10, full)] or [largest])
    timed = min([p for p in rows if p >= 10] or [largest])
    bytes_ratio = rows[largest]['update_bytes'] / rows[reference]['update_bytes']
    # CPU time: on a shared machine wall time measures the other processes as much as publish.
    time_ratio = rows[largest]['publish_cpu_ms'] / rows[timed]['publish_cpu_ms']
    out.append({'names': names, 'bytes_from': reference, 'bytes_to': largest,
                'bytes_ratio': bytes_ratio, 'bytes_ok': bytes_ratio <= BYTES_GOAL,
                'time_from': timed, 'time_to': largest, 'time_ratio': time_ratio,
                'time_ok': time_ratio <= TIME_GOAL})
  return out


def run(pushes: Sequence[int] = PUSHES, names: Sequence[int] = NAMES,
        model_bytes: int = MODEL_BYTES, work_dir: str = '') -> Dict[str, Any]:
  """Measures every layout and spread; returns the results (see report())."""
  started = time.time()
  runs = []
  with tempfile.TemporaryDirectory(dir=work_dir or None) as tmp:
    for n in names:
      for layout in LAYOUTS:
        runs += measure(layout, n, pushes, model_bytes, tmp)
  return {
      'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'duration_s': time.time() - started, 'model_bytes': model_bytes,
      'keep_versions': repository.DEFAULT_KEEP_VERSIONS, 'runs': runs, 'goals': goals(runs),
      'host': {'cpu_count': os.cpu_count(), 'machine': platform.machine(),
               'system': platform.system(), 'python': platform.python_version()},
  }


def report(results: Dict[str, Any]) -> str:
  """The Markdown report: flat and delegated side by side, then the goals."""
  host = results['host']
  lines = [
      '# OTA metadata: bytes a device downloads per update, and publish time',
      '',
      f'Generated by `python -m benchmarks.ota_metadata` on {results["started"]}, in '
      f'{results["duration_s"]:.0f} s. See [docs/ota.md](../../docs/ota.md#metadata-that-stays-'
      'small).',
      '',
      f'- Host: {host["cpu_count"]} cores, {host["machine"]}, {host["system"]}, Python '
      f'{host["python"]}.',
      f'- Models: {results["model_bytes"]} random bytes, custom info `{{"mode": "int8"}}`. '
      f'`flat`: one targets.json, every version kept (the layout before delegations); '
      f'`delegated`: one targets role per model, keep_versions={results["keep_versions"]}.',
      '- update: a device in sync fetches the count\'s last push (a new version of its model); '
      'first fetch: a new device. Bytes: metadata only, counted at the HTTP server. Publish: the '
      f'median of the last {TIMED_PUSHES} publish() calls, wall time and CPU time of the process '
      '(the goal uses CPU time: the machine is shared, and wall time measures the other '
      'processes too).',
      '',
      '| names | pushes | update B flat | update B delegated | first fetch B flat | '
      'first fetch B delegated | publish ms flat | publish ms delegated | publish CPU ms flat | '
      'publish CPU ms delegated | delegated update downloads |',
      '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ]
  runs = results['runs']
  for names in sorted({r['names'] for r in runs}):
    for pushes in sorted({r['pushes'] for r in runs if r['names'] == names}):
      flat, new = (next(r for r in runs if (r['layout'], r['names'], r['pushes']) == (
          layout, names, pushes)) for layout in ('flat', 'delegated'))
      lines.append(
          f'| {names} | {pushes:,} | {flat["update_bytes"]:,} | {new["update_bytes"]:,} | '
          f'{flat["first_fetch_bytes"]:,} | {new["first_fetch_bytes"]:,} | '
          f'{flat["publish_ms"]:.1f} | {new["publish_ms"]:.1f} | '
          f'{flat["publish_cpu_ms"]:.1f} | {new["publish_cpu_ms"]:.1f} | '
          f'{", ".join(new["update_files"])} |')
  lines += ['', '## Goals (delegated layout)', '',
            f'Bytes per update within {BYTES_GOAL:.2f}x from the reference count (10 pushes, or '
            'for several names the first count where every model has keep_versions versions) to '
            f'the largest; publish CPU time within {TIME_GOAL}x from 10 pushes to the largest.', '',
            '| names | bytes: pushes | bytes ratio | flat | publish: pushes | CPU time ratio '
            '| flat |',
            '|---:|---|---:|---|---|---:|---|']
  for g in results['goals']:
    lines.append(f'| {g["names"]} | {g["bytes_from"]:,} -> {g["bytes_to"]:,} | '
                 f'{g["bytes_ratio"]:.2f}x | {"met" if g["bytes_ok"] else "MISSED"} | '
                 f'{g["time_from"]:,} -> {g["time_to"]:,} | {g["time_ratio"]:.2f}x | '
                 f'{"met" if g["time_ok"] else "MISSED"} |')
  return '\n'.join(lines) + '\n'


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--pushes', type=int, nargs='+', default=list(PUSHES))
  parser.add_argument('--names', type=int, nargs='+', default=list(NAMES))
  parser.add_argument('--model-bytes', type=int, default=MODEL_BYTES)
  parser.add_argument('--output-dir', default=os.path.join(REPO_ROOT, 'benchmarks', 'results'))
  parser.add_argument('--work-dir', default='', help='where the repositories are built '
                      '(default: a temporary directory)')
  parser.add_argument('--no-write', action='store_true', help='print only')
  args = parser.parse_args(argv)
  if min(args.pushes) < 1 or min(args.names) < 1 or args.model_bytes < 1:
    parser.error('--pushes, --names and --model-bytes take whole numbers >= 1')
  results = run(args.pushes, args.names, args.model_bytes, args.work_dir)
  text = report(results)
  print(text)
  if not args.no_write:
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, 'ota_metadata.json'), 'w') as f:
      json.dump(results, f, indent=1)
    with open(os.path.join(args.output_dir, 'ota_metadata.md'), 'w') as f:
      f.write(text)


if __name__ == '__main__':
  main()
