"""The regression gate's report: the candidate beside the released model, per slice (HTML, PNG)."""
import os
from typing import Optional, Sequence

import tensorflow as tf

from components import spec_keys
from components.common import html_report
from components.regression_gate import regression

SLICES_PNG = 'slices.png'


def _plot(metric: str, results: Sequence[regression.SliceResult], path: str) -> None:
  """Bars of the released model and the candidate per slice; regressed slices in red."""
  plt = html_report.pyplot()
  shown = [r for r in results if r.candidate is not None and r.released is not None]
  fig, ax = plt.subplots(figsize=(max(6.4, 0.6 * len(shown) + 2), 4.2), dpi=100)
  xs = range(len(shown))
  ax.bar([x - 0.2 for x in xs], [r.released for r in shown], width=0.4, color='#8c959f',
         label='released')
  ax.bar([x + 0.2 for x in xs], [r.candidate for r in shown], width=0.4,
         color=['#cf222e' if r.verdict == regression.REGRESSED else '#1a7f37' for r in shown],
         label='candidate (red: regressed)')
  ax.set_xticks(list(xs))
  ax.set_xticklabels([r.slice for r in shown], rotation=45, ha='right', fontsize=8)
  ax.set_ylabel(metric)
  ax.legend(loc='lower right', fontsize=8)
  ax.grid(alpha=0.3, axis='y')
  fig.tight_layout()
  with tf.io.gfile.GFile(path, 'wb') as f:
    fig.savefig(f, format='png')
  plt.close(fig)


def write(output_uri: str, title: str, ok: bool, reason: str, metric: Optional[str] = None,
          results: Sequence[regression.SliceResult] = ()) -> str:
  """Writes index.html (and the slices PNG when there are results); returns the page's path."""
  body = [html_report.verdict(ok, reason)]
  if results:
    _plot(metric, results, os.path.join(output_uri, SLICES_PNG))
    body.append(f'<img src="{SLICES_PNG}" alt="{metric} per slice">')
    body.append(html_report.table(
        ['slice', 'examples', f'released {metric}', f'candidate {metric}', 'change',
         'allowed drop', 'verdict'],
        [(r.slice, r.examples, _fmt(r.released), _fmt(r.candidate),
          _fmt(None if r.candidate is None or r.released is None else r.candidate - r.released,
               signed=True), f'{r.allowed:g}', r.verdict) for r in results]))
  path = os.path.join(output_uri, spec_keys.REPORT_HTML_FILE_NAME)
  tf.io.gfile.makedirs(output_uri)
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(html_report.page(f'tfx-edge regression gate: {title}', ''.join(body)))
  return path


def _fmt(value: Optional[float], signed: bool = False) -> str:
  if value is None:
    return 'n/a'
  return f'{value:+.4f}' if signed else f'{value:.4f}'
