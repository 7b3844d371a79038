"""The HTML page of a DeviceBenchmarker result; plain logic, no TFX."""
import html
from typing import Any, Dict

from components.common.html_report import page
from components.common.html_report import table
from components.common.html_report import verdict


def benchmark_html(doc: Dict[str, Any]) -> str:
  """The page for one benchmark.json document."""
  host = doc['host']
  parts = [
      '<h2>Target</h2>',
      table(['', ''], [('target', doc['target']), ('CPU', host.get('cpu_model')),
                       ('CPU flags', ' '.join(host.get('cpu_flags', []))),
                       ('cores', host.get('cpu_count')), ('system', host.get('system')),
                       ('runtime', host.get('runtime'))], left=2),
      '<h2>Budgets</h2>',
      table(['budget', 'limit'], [(k, v) for k, v in sorted(doc['budgets'].items())
                                  if v is not None] or [('(none)', '')]),
  ]
  for model in doc['models']:
    parts.append(f'<h2>{html.escape(model["uri"])}</h2>')
    parts.append(verdict(model['within_budget'], 'within budgets' if model['within_budget'] else
                         'over budget: ' + '; '.join(model['budget_violations'])))
    acc = model.get('accuracy') or {}
    if 'blessed' in acc or acc.get('value') is not None:
      value = acc.get('value')
      parts.append(verdict(bool(acc.get('blessed', True)),
                           f'{acc["metric"]} {value if value is None else f"{value:.4f}"}: '
                           f'{acc.get("reason", "")}'))
    parts.append(table(['mode', 'size (B)', 'gzip (B)'],
                       [(model['mode'], f'{model["size_bytes"]:,}', f'{model["gzip_bytes"]:,}')]))
    parts.append(table(
        ['threads', 'init ms', 'first ms', 'warm-up ms', 'runs', 'mean ms', 'std ms', 'cv',
         'p50 ms', 'p90 ms', 'p99 ms', 'peak MB', 'XNNPACK'],
        [(m['threads'], f'{m["init_ms"]:.2f}', f'{m["first_inference_ms"]:.3f}',
          f'{m["warmup_mean_ms"]:.3f}', m['runs'], f'{m["mean_ms"]:.4f}', f'{m["std_ms"]:.4f}',
          f'{m["cv"]:.2f}', f'{m["p50_ms"]:.4f}', f'{m["p90_ms"]:.4f}', f'{m["p99_ms"]:.4f}',
          f'{m["peak_memory_mb"]:.2f}', 'yes' if m.get('xnnpack') else 'no')
         for m in model['measurements']]))
  title = f'DeviceBenchmarker: {doc.get("variant") or "models"}'
  return page(title, ''.join(parts))
