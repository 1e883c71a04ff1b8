"""The static HTML page: Plotly's JavaScript inlined once, the figures as JSON, no request to any network.

A page opens from disk (file://) with no server and no internet. Figures are drawn by one small loader
from a JSON block, so the page stays a data file plus a renderer, and a sortable table needs a dozen lines
of plain JavaScript rather than a framework.
"""

from __future__ import annotations

import html
import json
from functools import cache
from pathlib import Path
from typing import Any

from groklab.report.plots import Figure, to_plotly
from groklab.runio import atomic_write_bytes

PLOTLY_FILE = "plotly.min.js"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1180px; padding: 1em 2em; color: #1d2329; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #dde2e6; }
.badge { display: inline-block; padding: 0.1em 0.6em; border-radius: 0.8em; font-size: 0.85em; color: #fff; background: #5b6770; }
.badge.finished { background: #2ca02c; } .badge.incomplete, .badge.interrupted { background: #d98a00; } .badge.diverged, .badge.failed { background: #d62728; }
.note { background: #fff6e0; border-left: 4px solid #d98a00; padding: 0.5em 0.8em; margin: 0.6em 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 1em; }
.figure { border: 1px solid #e4e8eb; border-radius: 6px; padding: 0.3em; } .plot { min-height: 420px; }
.caption { font-size: 0.85em; color: #4b5560; margin: 0.2em 0.5em 0.4em; } .caption a { color: #4b5560; }
table { border-collapse: collapse; font-size: 0.85em; } td, th { padding: 0.2em 0.6em; border-bottom: 1px solid #eef1f3; text-align: left; }
th.sortable { cursor: pointer; user-select: none; background: #f4f6f8; } th.sortable:hover { background: #e4e8eb; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } .scroll { overflow-x: auto; }
"""

LOADER = """
document.querySelectorAll('script.fig').forEach(function (s) {
  var f = JSON.parse(s.textContent);
  Plotly.newPlot(s.dataset.target, f.data, f.layout, {responsive: true, displaylogo: false});
});
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.classList.add('sortable');
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.from(body.rows), asc = th.dataset.dir !== 'asc';
      var key = function (r) { var c = r.cells[col], v = c.dataset.v; return v === undefined ? c.textContent : parseFloat(v); };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x === 'number' && isNaN(x)) return 1; if (typeof y === 'number' && isNaN(y)) return -1;
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      th.dataset.dir = asc ? 'asc' : 'desc';
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


@cache
def plotly_js() -> str:
    """Plotly's bundled, minified JavaScript (shipped inside the plotly package: nothing is downloaded)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _script_json(obj: Any) -> str:
    """JSON safe inside a <script> element ('</' would end it)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def figure_html(fig: Figure, index: int, png: str | None) -> str:
    """A figure's container, caption and data; the loader draws it."""
    target = f"fig-{index}-{fig.key}"
    caption = esc(fig.caption)
    if png:
        caption += f' <a href="{esc(png)}">PNG</a>'
    return (
        f'<div class="figure"><div id="{target}" class="plot" data-key="{esc(fig.key)}"></div>'
        f'<p class="caption">{caption}</p>'
        f'<script type="application/json" class="fig" data-target="{target}">{_script_json(to_plotly(fig))}</script></div>'
    )


def figures_html(figs: list[Figure], pngs: dict[str, str]) -> str:
    return '<div class="grid">' + "".join(figure_html(f, i, pngs.get(f.key)) for i, f in enumerate(figs)) + "</div>"


def fmt(value: Any) -> str:
    """Numbers short (4 significant digits), None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "—" if value != value else f"{value:.4g}"
    return str(value)


def kv_table(items: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(fmt(v))}</td></tr>" for k, v in items.items())
    return f"<table>{rows}</table>"


def sortable_table(columns: list[str], rows: list[dict[str, Any]], links: dict[int, str]) -> str:
    """A table whose headers sort it on click; numbers sort numerically (data-v), the first column links."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, col in enumerate(columns):
            value = row.get(col)
            text = esc(fmt(value))
            if j == 0 and i in links:
                text = f'<a href="{esc(links[i])}">{text}</a>'
            if value is None:  # sorts last, whatever the column holds
                cells.append(f'<td data-v="NaN">{text}</td>')
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                cells.append(f'<td class="num" data-v="{value if value == value else "NaN"}">{text}</td>')
            else:
                cells.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def badge(status: str) -> str:
    return f'<span class="badge {esc(status)}">{esc(status)}</span>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def write_page(path: Path, title: str, body: list[str], plotly_src: str | None = None) -> None:
    """Write the page. Plotly's JavaScript is inlined unless `plotly_src` names a file beside the page
    (sweep run pages share one copy instead of a few MB each)."""
    script = f'<script src="{esc(plotly_src)}"></script>' if plotly_src else f"<script>{plotly_js()}</script>"
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
        f"<style>{CSS}</style>{script}</head><body>\n{''.join(body)}\n<script>{LOADER}</script></body></html>\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, page.encode())


def write_plotly_file(directory: Path) -> str:
    """Plotly's JavaScript as a file in `directory`, for pages that reference it; returns its name."""
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / PLOTLY_FILE, plotly_js().encode())
    return PLOTLY_FILE
