"""The selection report: HTML with PNG plots (matplotlib), plus the JSON; no TFX."""
import dataclasses
import html
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from components import spec_keys
from components.common import html_report
from components.selector import selection as selection_lib

ACCURACY_VS_LATENCY_PNG = 'accuracy_vs_latency.png'
ACCURACY_VS_SIZE_PNG = 'accuracy_vs_gzip_size.png'


@dataclasses.dataclass(frozen=True)
class Released:
  """The model devices run now, as the RegressionGate measured it: a row beside the candidates.

  Attributes:
    label: the row's name, for example `released v3`.
    accuracy: the gate metric on the same eval examples as the candidates' (None: not measured).
    size_bytes: the .tflite file.
    gzip_bytes: its over-the-air payload.
    note: the regression gate's verdict on the selected candidate against it.
  """
  label: str
  accuracy: Optional[float]
  size_bytes: int
  gzip_bytes: int
  note: str


def _plot(candidates: Sequence[selection_lib.Candidate], result: selection_lib.Selection,
          x_of, x_label: str, path: str, released: Optional[Tuple[float, Released]] = None
          ) -> None:
  plt = html_report.pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
  if released is not None and released[1].accuracy is not None:
    x, row = released
    ax.scatter([x], [row.accuracy], marker='D', s=70, color='#0969da', label=row.label)
    ax.annotate(row.label, (x, row.accuracy), textcoords='offset points', xytext=(6, -12),
                fontsize=9, color='#0969da')
  for c in candidates:
    if c.failed:
      continue  # Nothing measured to plot; the table gives the reason.
    y = c.accuracy if c.accuracy is not None else 0.0
    style = dict(marker='o', s=60, color='#1a7f37' if c.eligible else '#cf222e',
                 edgecolors='black' if c.name in result.front else 'none')
    if c.name == result.winner:
      style.update(marker='*', s=260)
    ax.scatter([x_of(c)], [y], **style)
    ax.annotate(c.name, (x_of(c), y), textcoords='offset points', xytext=(6, 6), fontsize=9)
  front = sorted((c for c in candidates if c.name in result.front), key=x_of)
  ax.plot([x_of(c) for c in front], [c.accuracy or 0.0 for c in front], '--', color='gray',
          linewidth=1, label='Pareto front (accuracy, latency, size)')
  ax.set_xlabel(x_label)
  ax.set_ylabel('accuracy')
  ax.set_title('green: blessed and within budgets; red: not; star: selected', fontsize=9)
  ax.legend(loc='lower right', fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def write(output_dir: str, candidates: Sequence[selection_lib.Candidate],
          result: selection_lib.Selection, doc: Dict[str, Any],
          released: Optional[Released] = None, released_note: str = '') -> List[str]:
  """Writes index.html and the PNGs into a local directory; returns the files written.

  Args:
    output_dir: a local directory.
    candidates: every variant.
    result: the selection among them.
    doc: the selection.json content.
    released: the model devices run now, for a row beside the candidates (the RegressionGate
      writes the report again with it); its latency is not measured in the run.
    released_note: what to say about the released model when there is no row (nothing
      released yet).
  """
  _plot(candidates, result, lambda c: c.p50_ms, 'p50 latency (ms, first thread setting)',
        os.path.join(output_dir, ACCURACY_VS_LATENCY_PNG))
  _plot(candidates, result, lambda c: c.gzip_bytes / 1024, 'gzip size (KiB, OTA payload)',
        os.path.join(output_dir, ACCURACY_VS_SIZE_PNG),
        (released.gzip_bytes / 1024, released) if released else None)
  headline = (f'Selected: {result.winner}' if result.winner else
              'Nothing selected: no variant is both blessed and within budgets')
  rows = [(c.name, 'yes' if c.name == result.winner else '',
           'n/a' if c.accuracy is None else f'{c.accuracy:.4f}',
           'FAILED' if c.failed else 'yes' if c.accuracy_blessed else 'no',
           '-' if c.failed else 'yes' if c.within_budget else 'no',
           '-' if c.failed else f'{c.p50_ms:.4f}', '-' if c.failed else f'{c.size_bytes:,}',
           '-' if c.failed else f'{c.gzip_bytes:,}',
           'yes' if c.name in result.front else '', result.reasons[c.name])
          for c in candidates]
  if released is not None:
    rows.append((released.label, '', 'n/a' if released.accuracy is None else
                 f'{released.accuracy:.4f}', 'released', '-', 'not measured',
                 f'{released.size_bytes:,}', f'{released.gzip_bytes:,}', '', released.note))
    released_note = (f'<p>{html.escape(released.label)}: the model devices run now, fetched '
                     'and verified as a device does and evaluated by the regression gate on the '
                     'same eval examples as the candidates (its latency is not measured in this '
                     'run; blue diamond on the size plot).</p>')
  elif released_note:
    released_note = f'<p>{html.escape(released_note)}</p>'
  failed = [c for c in candidates if c.failed]
  failed_note = (f'<p>{len(failed)} variant(s) failed before the gate and were left out: '
                 + '; '.join(html.escape(f'{c.name}: {c.failed}') for c in failed) + '</p>'
                 if failed else '')
  body = ''.join([
      html_report.verdict(result.winner is not None, headline),
      f'<p>Preference among eligible variants: {doc["prefer"]}.</p>',
      failed_note,
      html_report.table(['variant', 'selected', 'accuracy', 'blessed', 'within budgets',
                         'p50 ms', 'size B', 'gzip B', 'Pareto', 'why'], rows),
      released_note,
      f'<img src="{ACCURACY_VS_LATENCY_PNG}" alt="accuracy vs latency">',
      f'<img src="{ACCURACY_VS_SIZE_PNG}" alt="accuracy vs gzip size">',
  ])
  with open(os.path.join(output_dir, spec_keys.REPORT_HTML_FILE_NAME), 'w') as f:
    f.write(html_report.page('tfx-edge variant selection', body))
  return [spec_keys.REPORT_HTML_FILE_NAME, ACCURACY_VS_LATENCY_PNG, ACCURACY_VS_SIZE_PNG]
