"""HTML pages and PNG plots for the reports components write (benchmark, selection).

Plain logic, no TFX. Pages are self-contained (inline style); PNGs are drawn with matplotlib's
Agg backend, since pipeline steps have no display.
"""
import html
from typing import Any, Iterable, Sequence

_STYLE = ('body{font-family:sans-serif;margin:2em;color:#222}'
          'table{border-collapse:collapse;margin:1em 0}'
          'th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}'
          'th{background:#f2f2f2}td.l,th.l{text-align:left}'
          '.ok{color:#1a7f37;font-weight:bold}.bad{color:#cf222e;font-weight:bold}')


def page(title: str, body: str) -> str:
  """A complete HTML document."""
  return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
          f'<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>')


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1) -> str:
  """An HTML table; the first `left` columns are left-aligned text. Cells are escaped."""
  def cell(tag, i, value):
    cls = ' class="l"' if i < left else ''
    return f'<{tag}{cls}>{html.escape(str(value))}</{tag}>'
  head = ''.join(cell('th', i, h) for i, h in enumerate(header))
  body = ''.join('<tr>' + ''.join(cell('td', i, v) for i, v in enumerate(r)) + '</tr>'
                 for r in rows)
  return f'<table><tr>{head}</tr>{body}</table>'


def verdict(ok: bool, text: str) -> str:
  """A paragraph in green (ok) or red, for a pass/fail line."""
  return f'<p class="{"ok" if ok else "bad"}">{html.escape(text)}</p>'


def pyplot():
  """matplotlib's pyplot on the Agg backend (no display in pipeline steps)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt
