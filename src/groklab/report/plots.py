"""Figures, described once and drawn twice: as Plotly JSON for the page and as a matplotlib PNG for papers.

A `Figure` is a small neutral description (lines, bands, bars, scatter, a heat map, vertical markers); the
two renderers below turn it into Plotly's {data, layout} and into a PNG, so the page and the PNG always agree.
Builders at the bottom make the figures of run, sweep and compare reports.
"""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from groklab.report.data import (
    SPLITS,
    STANDARD_KEYS,
    RunData,
    as_float,
    downsample_indices,
    group_columns,
    is_numeric_column,
)
from groklab.stats import mean_ci

SPLIT_COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}
"""The same colour for a split on every figure of every report."""
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
PHASE_COLORS = {"comprehension": "#2ca02c", "grokking": "#1f77b4", "memorization": "#ff7f0e", "confusion": "#d62728"}
STEP_LABEL = "step (optimizer updates, log scale)"
CYCLIC_SCALE = [[0.0, "#e2d9e2"], [0.25, "#5e8fc1"], [0.5, "#2f1436"], [0.75, "#b6553f"], [1.0, "#e2d9e2"]]
"""Matplotlib's cyclic 'twilight' map at five stops: token 0 and token p-1 are neighbours on a circle."""


@dataclass
class Series:
    """One trace. kind: line | markers | bar | band (y is the lower edge, upper the upper edge)."""

    kind: str
    x: list[Any]
    y: list[float]
    name: str = ""
    color: str | None = None
    dash: bool = False
    upper: list[float] | None = None
    error: list[float] | None = None
    text: list[str] | None = None
    values: list[float] | None = None
    symbol: str = "circle"
    legend: bool = True


@dataclass
class Heatmap:
    """A categorical heat map: z[i][j] indexes `categories` (or None for an empty cell)."""

    x: list[str]
    y: list[str]
    z: list[list[int | None]]
    categories: list[str]
    colors: list[str]
    text: list[list[str]]


@dataclass
class Figure:
    key: str
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    vlines: list[tuple[float, str, str]] = field(default_factory=list)
    heatmap: Heatmap | None = None
    xlog: bool = False
    ylog: bool = False
    caption: str = ""


def figure_from_dict(d: dict[str, Any]) -> Figure:
    """Inverse of dataclasses.asdict(figure): recipes store their figures as JSON so reports can redraw them."""
    d = dict(d)
    d["series"] = [Series(**s) for s in d.get("series", [])]
    d["vlines"] = [tuple(v) for v in d.get("vlines", [])]
    d["heatmap"] = Heatmap(**d["heatmap"]) if d.get("heatmap") else None
    return Figure(**d)


# ---------------------------------------------------------------------------------------------
# Renderers.


def _clean(values: Any) -> list[Any]:
    """JSON-safe values: NaN and inf become null (Plotly leaves a gap); labels pass through."""
    values = list(values)
    if any(isinstance(v, str) or v is None for v in values):
        return [v if isinstance(v, str) or v is None or math.isfinite(v) else None for v in values]
    return [v if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]


def to_plotly(fig: Figure) -> dict[str, Any]:
    """Plotly's {data, layout} for `fig` (plain JSON: no plotly Python objects, so it is fast to build)."""
    data: list[dict[str, Any]] = []
    for s in fig.series:
        base: dict[str, Any] = {"name": s.name, "showlegend": s.legend and bool(s.name), "x": _clean(s.x)}
        if s.text is not None:
            base["text"] = s.text
            base["hovertemplate"] = "%{text}<extra></extra>"
        if s.kind == "band":
            data.append(
                {
                    **base,
                    "y": _clean(s.upper or []),
                    "type": "scatter",
                    "mode": "lines",
                    "line": {"width": 0},
                    "showlegend": False,
                    "hoverinfo": "skip",
                }
            )
            data.append(
                {
                    **base,
                    "y": _clean(s.y),
                    "type": "scatter",
                    "mode": "lines",
                    "line": {"width": 0},
                    "fill": "tonexty",
                    "fillcolor": _alpha(s.color, 0.2),
                    "hoverinfo": "skip",
                }
            )
        elif s.kind == "bar":
            bar = {**base, "y": _clean(s.y), "type": "bar", "marker": {"color": s.color}}
            if s.error is not None:
                bar["error_y"] = {"type": "data", "array": _clean(s.error), "visible": True}
            data.append(bar)
        else:
            marker: dict[str, Any] = {"color": s.color, "symbol": s.symbol, "size": 8 if s.kind == "markers" else 5}
            if s.values is not None:
                marker.update(color=_clean(s.values), colorscale=CYCLIC_SCALE, showscale=True, colorbar={"title": {"text": "token"}})
            mode = "markers" if s.kind == "markers" else "lines"
            line = {"color": s.color, "dash": "dash" if s.dash else "solid"}
            data.append({**base, "y": _clean(s.y), "type": "scatter", "mode": mode, "marker": marker, "line": line})
    if fig.heatmap is not None:
        h = fig.heatmap
        n = max(len(h.categories), 1)
        scale = []
        for i, color in enumerate(h.colors):
            scale += [[i / n, color], [(i + 1) / n, color]]
        data.append({
            "type": "heatmap", "x": h.x, "y": h.y, "z": h.z, "text": h.text, "hovertemplate": "%{text}<extra></extra>",
            "zmin": -0.5, "zmax": n - 0.5, "colorscale": scale,
            "colorbar": {"tickvals": list(range(n)), "ticktext": h.categories, "title": {"text": "phase"}},
        })  # fmt: skip
    shapes, annotations = [], []
    for x, label, color in fig.vlines:
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": x,
                "x1": x,
                "y0": 0,
                "y1": 1,
                "line": {"color": color, "dash": "dot", "width": 1.5},
            }
        )
        annotations.append(
            {
                "x": math.log10(x) if fig.xlog and x > 0 else x,
                "xref": "x",
                "yref": "paper",
                "y": 1.0,
                "yanchor": "bottom",
                "text": label,
                "showarrow": False,
                "font": {"size": 10, "color": color},
            }
        )
    layout = {
        "title": {"text": fig.title},
        "xaxis": {"title": {"text": fig.xlabel}, "type": "log" if fig.xlog else "category" if fig.heatmap else "-", "automargin": True},
        "yaxis": {"title": {"text": fig.ylabel}, "type": "log" if fig.ylog else "category" if fig.heatmap else "-", "automargin": True},
        "shapes": shapes,
        "annotations": annotations,
        "margin": {"t": 70, "r": 20, "b": 50, "l": 60},
        "height": 420,
        "legend": {"orientation": "h", "y": -0.2},
        "template": None,
        "plot_bgcolor": "#ffffff",
        "barmode": "group",
    }
    return {"data": data, "layout": layout}


def _alpha(color: str | None, alpha: float) -> str:
    color = color or PALETTE[0]
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def category_ticks(names: list[str]) -> tuple[list[str], int, float]:
    """(tick labels, rotation, extra figure height in inches) for bar categories under a 7-inch-wide axis.

    A slot holds about 100 / n characters at the ticks' size. Names that fit stay as they are; longer ones (a
    sweep's group names can run to a hundred characters) lose their fields' dotted section (`optim.lr=` -> `lr=`;
    the interactive page keeps them whole) and, up to 12 bars, wrap to the slot's width, the figure growing by
    their lines so the axes keep their size; with more bars they stand vertical, cut to 40 characters.
    """
    width = 100 // max(len(names), 1)
    if max(map(len, names), default=0) < width:  # one character to spare between neighbours
        return names, 0, 0.0
    names = [re.sub(r"\b\w+\.(\w+)=", r"\1=", n) for n in names]
    if len(names) > 12:
        cut = [n if len(n) <= 40 else n[:39] + "…" for n in names]
        return cut, 90, 0.055 * max(map(len, cut))
    wrapped = [textwrap.wrap(n, max(8, width)) or [""] for n in names]
    return ["\n".join(w) for w in wrapped], 0, 0.13 * max(len(w) - 1 for w in wrapped)


def save_png(fig: Figure, path: Path) -> None:
    """The same figure as a PNG (matplotlib's Agg canvas directly: no pyplot, no global backend state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    categorical = any(s.kind == "bar" for s in fig.series)
    names = next((s.x for s in fig.series if s.kind == "bar"), [])
    ticks, rotation, extra = category_ticks([str(v) for v in names])
    mfig = MplFigure(figsize=(7, 4.2 + extra), dpi=110, layout="constrained")
    FigureCanvasAgg(mfig)
    ax = mfig.add_subplot()
    for s in fig.series:
        x = np.arange(len(s.x)) if categorical else np.asarray(_clean(s.x), dtype=np.float64)
        y = np.asarray(_clean(s.y), dtype=np.float64)
        if s.kind == "band":
            ax.fill_between(x, y, np.asarray(_clean(s.upper or []), dtype=np.float64), color=s.color, alpha=0.2, linewidth=0)
        elif s.kind == "bar":
            err = np.asarray(_clean(s.error), dtype=np.float64) if s.error is not None else None
            ax.bar(x, y, yerr=err, color=s.color, label=s.name or None, capsize=3)
            ax.set_xticks(x, ticks, rotation=rotation, ha="center", fontsize=7)
        elif s.kind == "markers":
            marker = {"circle": "o", "x": "x", "triangle-up": "^"}.get(s.symbol, "o")
            colors = {"c": s.values, "cmap": "twilight"} if s.values is not None else {"color": s.color}
            ax.scatter(x, y, marker=marker, label=(s.name or None) if s.legend else None, s=22, **colors)
        else:
            ax.plot(x, y, color=s.color, linestyle="--" if s.dash else "-", label=(s.name or None) if s.legend else None, linewidth=1.4)
    if fig.heatmap is not None:
        from matplotlib.colors import ListedColormap

        h = fig.heatmap
        z = np.array([[math.nan if v is None else v for v in row] for row in h.z], dtype=np.float64)
        image = ax.imshow(z, cmap=ListedColormap(h.colors), vmin=-0.5, vmax=len(h.categories) - 0.5, origin="lower", aspect="auto")
        ax.set_xticks(range(len(h.x)), h.x)
        ax.set_yticks(range(len(h.y)), h.y)
        bar = mfig.colorbar(image, ax=ax, ticks=range(len(h.categories)))
        bar.ax.set_yticklabels(h.categories)
    for x, label, color in fig.vlines:
        ax.axvline(x, color=color, linestyle=":", linewidth=1.3)
        ax.annotate(label, (x, 1.0), xycoords=("data", "axes fraction"), fontsize=7, color=color, rotation=90, va="top", ha="right")
    if fig.xlog:
        ax.set_xscale("log")
    if fig.ylog:
        ax.set_yscale("log")
    ax.set_title(fig.title, fontsize=11)
    ax.set_xlabel(fig.xlabel)
    ax.set_ylabel(fig.ylabel)
    ax.grid(alpha=0.3)
    if any(s.name and s.legend for s in fig.series):
        # below the axes, never over the curves it names
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    mfig.savefig(path, bbox_inches="tight")


# ---------------------------------------------------------------------------------------------
# Run figures.


def _curve(run: RunData, key: str, idx: np.ndarray, log_x: bool = True) -> tuple[list[float], list[float]]:
    """(steps, values) of metric `key` at rows `idx`, without step 0 on a log axis and without gaps."""
    steps, values = run.steps[idx], run.columns[key][idx]
    ok = ~np.isnan(values) & ((steps > 0) if log_x else True)
    return steps[ok].tolist(), values[ok].tolist()


def grok_markers(run: RunData) -> list[tuple[float, str, str]]:
    """Vertical markers: where train and val accuracy first reach 0.99 (val's is the grokking point)."""
    out = []
    t99, v99 = run.first_step("train/acc"), run.first_step("val/acc")
    if t99:
        out.append((t99, f"train 99% @ {t99}", SPLIT_COLORS["train"]))
    if v99:
        out.append((v99, f"val 99% (grokked) @ {v99}", SPLIT_COLORS["val"]))
    return out


def run_figures(run: RunData, analysis: dict[str, Any] | None, label: str = "") -> list[Figure]:
    """Every figure of a run page: curves from metrics, then analysis figures when analysis ran."""
    idx = downsample_indices(run.steps, run.columns)
    title = f" — {label}" if label else ""
    figs = []
    boundaries = [
        (s, name.replace("_", " "), "#7f7f7f")
        for name, s in ((analysis or {}).get("phase_boundaries") or {}).items()
        if isinstance(s, (int, float)) and s > 0
    ]
    for metric, ylabel, ylog in (("acc", "accuracy (fraction correct)", False), ("loss", "cross-entropy loss (nats, log scale)", True)):
        series = [
            Series("line", *_curve(run, f"{s}/{metric}", idx), name=s, color=SPLIT_COLORS[s])
            for s in SPLITS
            if f"{s}/{metric}" in run.columns
        ]
        if series:
            fig = Figure(
                f"run_{metric}",
                f"{'Accuracy' if metric == 'acc' else 'Loss'} vs step{title}",
                STEP_LABEL,
                ylabel,
                series,
                grok_markers(run),
                xlog=True,
                ylog=ylog,
            )
            if metric == "acc":
                fig.vlines += boundaries
            figs.append(fig)
    norm_keys = [k for k in run.columns if k.startswith("norm/")]
    if norm_keys:
        series = [Series("line", *_curve(run, k, idx), name=k, color=PALETTE[i % len(PALETTE)]) for i, k in enumerate(norm_keys)]
        figs.append(
            Figure("run_norm", f"Weight norm vs step{title}", STEP_LABEL, "L2 norm of the parameters", series, grok_markers(run), xlog=True)
        )
    extra = sorted({k.split("/")[0] for k in run.columns if "/" in k and k not in STANDARD_KEYS and not k.startswith("norm/")})
    for namespace in extra:
        keys = [k for k in run.columns if k.startswith(namespace + "/")]
        series = [Series("line", *_curve(run, k, idx), name=k, color=PALETTE[i % len(PALETTE)]) for i, k in enumerate(keys)]
        figs.append(
            Figure(
                f"run_{namespace}",
                f"{namespace} (logged during training){title}",
                STEP_LABEL,
                f"{namespace} (as logged)",
                series,
                grok_markers(run),
                xlog=True,
            )
        )
    if analysis:
        figs += analysis_figures(analysis, title)
    return figs


def _spectrum_series(power: list[float], keys: set[int]) -> list[Series]:
    """Bars of power per frequency, the key frequencies as their own trace so that the legend says what the highlight means."""
    freqs = list(range(len(power)))
    return [
        Series("bar", freqs, [math.nan if k in keys else p for k, p in zip(freqs, power, strict=True)], name="other", color="#9aa5b1"),
        Series(
            "bar",
            freqs,
            [p if k in keys else math.nan for k, p in zip(freqs, power, strict=True)],
            name="key frequency",
            color=SPLIT_COLORS["val"],
        ),
    ]


def _key_words(spectrum: dict[str, Any]) -> str:
    """The key frequencies with the share of the power they hold and what that means, e.g. "... (not yet sparse ...)"."""
    keys = sorted(spectrum.get("key_frequencies") or [])
    if not keys:
        return "no peaks: no key frequencies"
    share = spectrum.get("key_share")
    held = f", holding {as_float(share):.0%} of the power" if share is not None else ""
    state = f": {spectrum['state']}" if spectrum.get("state") else ""
    return f"{len(keys)} key frequencies {keys}{held}{state}"


def _token_scatter(points: list[list[float]]) -> list[Series]:
    """2-D points, one per operand token, coloured by the token's value (neighbours on a circle share a hue)."""
    pts = np.asarray(points, dtype=np.float64)
    tokens = list(range(len(pts)))
    return [
        Series("markers", pts[:, 0].tolist(), pts[:, 1].tolist(), values=[float(t) for t in tokens], text=[f"token {t}" for t in tokens])
    ]


def analysis_figures(analysis: dict[str, Any], title: str = "") -> list[Figure]:
    """Fourier spectra (embeddings, neurons), per-layer norms and the embedding projections from `analyze_run`'s dict."""
    figs = []
    fourier = analysis.get("fourier")
    if fourier and fourier.get("spectrum"):
        caption = (
            f"{_key_words(fourier)}; Gini {as_float(fourier.get('gini')):.3f}; "
            f"restricted loss {as_float(fourier.get('restricted_loss')):.3g}, "
            f"excluded loss {as_float(fourier.get('excluded_loss')):.3g}, full loss {as_float(fourier.get('full_loss')):.3g}"
        )
        series = _spectrum_series([as_float(v) for v in fourier["spectrum"]], set(fourier.get("key_frequencies") or []))
        figs.append(
            Figure("fourier_spectrum", f"Fourier spectrum of the embeddings{title}", "frequency k", "power", series, caption=caption)
        )
    neurons = analysis.get("neuron_fourier")
    if neurons and neurons.get("spectrum"):
        keys = set(neurons.get("key_frequencies") or [])
        caption = (
            f"{_key_words(neurons)}; Gini {as_float(neurons.get('gini')):.3f}; the neurons feeding the output, "
            "2-D transform over (a, b), a term counted at the larger of its two frequencies; log scale (k = 0 is the mean activation)"
        )
        series = _spectrum_series([as_float(v) for v in neurons["spectrum"]], keys)
        title_n = f"Fourier spectrum of the MLP neurons over all (a, b){title}"
        figs.append(Figure("neuron_spectrum", title_n, "frequency k", "power (log scale)", series, ylog=True, caption=caption))
    norms = analysis.get("norms")
    if norms and isinstance(norms.get("per_layer"), dict) and norms["per_layer"]:
        names = list(norms["per_layer"])
        figs.append(Figure("layer_norms", f"Weight norm per layer (final){title}", "parameter", "L2 norm",
                           [Series("bar", names, [as_float(norms["per_layer"][n]) for n in names], color=PALETTE[0])],
                           caption=f"total norm {as_float(norms.get('total')):.3g}"))  # fmt: skip
    emb = analysis.get("embeddings")
    if emb and emb.get("pca"):
        figs.append(Figure("embedding_pca", f"Embedding projection (first two principal components){title}", "PC 1", "PC 2", _token_scatter(emb["pca"]),
                           caption=f"circularity {as_float(emb.get('circularity')):.3f} (1 = the tokens lie on a circle)"))  # fmt: skip
    if emb and emb.get("tsne"):
        figs.append(Figure("embedding_tsne", f"Embedding t-SNE map{title}", "t-SNE 1", "t-SNE 2", _token_scatter(emb["tsne"]),
                           caption="t-SNE keeps neighbourhoods, not distances: tokens that sit together are embedded alike"))  # fmt: skip
    return figs


def compare_figures(runs: list[RunData]) -> list[Figure]:
    """Overlaid val/train accuracy and loss of several runs (one colour per run; dashed = train)."""
    figs = []
    for metric, ylabel, ylog in (("acc", "accuracy (fraction correct)", False), ("loss", "cross-entropy loss (nats, log scale)", True)):
        series = []
        for i, run in enumerate(runs):
            idx = downsample_indices(run.steps, run.columns)
            color = PALETTE[i % len(PALETTE)]
            for split, dash in (("val", False), ("train", True)):
                if f"{split}/{metric}" in run.columns:
                    series.append(
                        Series("line", *_curve(run, f"{split}/{metric}", idx), name=f"{run.name} {split}", color=color, dash=dash)
                    )
        figs.append(
            Figure(
                f"compare_{metric}",
                f"{'Accuracy' if metric == 'acc' else 'Loss'} vs step: {len(runs)} runs (solid val, dashed train)",
                STEP_LABEL,
                ylabel,
                series,
                xlog=True,
                ylog=ylog,
            )
        )
    return figs


# ---------------------------------------------------------------------------------------------
# Sweep figures.


def _label(row: dict[str, Any], cols: list[str]) -> str:
    return ", ".join(f"{c}={row.get(c)}" for c in cols) or "all runs"


def steps_to_grok_figure(rows: list[dict[str, Any]]) -> Figure | None:
    """Steps to 99% val accuracy vs train fraction (or the first numeric axis), one line per other setting.

    Mean and 95% t-interval over the seeds that grokked; runs that never grokked are censored: they are
    counted in the hover text (k/n grokked) and drawn as an x at the step budget, never averaged in."""
    groups = group_columns(rows)
    numeric = [c for c in groups if is_numeric_column(rows, c)]
    if not numeric:
        return None
    xcol = "task.train_frac" if "task.train_frac" in numeric else numeric[0]
    others = [c for c in groups if c != xcol]
    series_rows: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        series_rows.setdefault(_label(row, others), []).append(row)
    series = []
    for i, (name, members) in enumerate(sorted(series_rows.items())):
        color = PALETTE[i % len(PALETTE)]
        xs, means, lows, highs, texts, never_x, never_y, never_t = [], [], [], [], [], [], [], []
        for x in sorted({as_float(r.get(xcol)) for r in members}):
            at = [r for r in members if as_float(r.get(xcol)) == x]
            grokked = [as_float(r.get("steps_to_val_acc_99")) for r in at if r.get("grokked") and r.get("steps_to_val_acc_99") is not None]
            if grokked:
                mean, lo, hi = mean_ci(grokked).bounds()
                xs.append(x), means.append(mean), lows.append(lo), highs.append(hi)
                texts.append(f"{xcol}={x:g}<br>steps to grok {mean:.0f} [{lo:.0f}, {hi:.0f}]<br>{len(grokked)}/{len(at)} grokked")
            else:
                never_x.append(x)
                never_y.append(max(as_float(r.get("steps")) for r in at))
                never_t.append(f"{xcol}={x:g}<br>never grokked (0/{len(at)}) within the step budget")
        if xs:
            series.append(Series("band", xs, lows, upper=highs, color=color, name=f"{name} 95% CI", legend=False))
            series.append(Series("line", xs, means, name=name, color=color, text=texts))
            series.append(Series("markers", xs, means, color=color, text=texts, legend=False))
        if never_x:
            series.append(Series("markers", never_x, never_y, name=f"{name}: never grokked", color=color, symbol="x", text=never_t))
    return Figure("steps_to_grok", f"Steps to 99% validation accuracy vs {xcol}", xcol, "steps to grok (optimizer updates, log scale)", series, ylog=True,
                  caption="Mean over the seeds that grokked, band = 95% t-interval; x = no seed grokked within the budget (censored, not averaged).")  # fmt: skip


def test_acc_figure(rows: list[dict[str, Any]], max_groups: int = 60) -> Figure:
    """Final test accuracy per group (mean over seeds, 95% t-interval error bars)."""
    groups = group_columns(rows)
    by: dict[str, list[float]] = {}
    for row in rows:
        by.setdefault(_label(row, groups), []).append(as_float(row.get("test/acc")))
    names = sorted(by)[:max_groups]
    stats = [mean_ci(by[n]).bounds() for n in names]
    caption = f"first {max_groups} of {len(by)} groups shown" if len(by) > max_groups else ""
    bar = Series("bar", names, [m for m, _, _ in stats], name="test", color=SPLIT_COLORS["test"], error=[(hi - m) for m, _, hi in stats])
    return Figure(
        "final_test_acc",
        "Final test accuracy per setting (locked test split)",
        "setting",
        "test accuracy (fraction correct)",
        [bar],
        caption=caption,
    )


def phase_heatmap(rows: list[dict[str, Any]], phases: list[str | None], categories: tuple[str, ...]) -> Figure | None:
    """The majority phase per cell of the first two varying numeric axes (other axes pooled), Liu et al. style."""
    groups = group_columns(rows)
    numeric = [c for c in groups if is_numeric_column(rows, c)]
    if len(numeric) < 2:
        return None
    xcol, ycol = numeric[0], numeric[1]
    xs = sorted({as_float(r.get(xcol)) for r in rows})
    ys = sorted({as_float(r.get(ycol)) for r in rows})
    z: list[list[int | None]] = [[None] * len(xs) for _ in ys]
    text = [[""] * len(xs) for _ in ys]
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            cell = [p for r, p in zip(rows, phases, strict=True) if p and as_float(r.get(xcol)) == x and as_float(r.get(ycol)) == y]
            if cell:
                counts = {name: cell.count(name) for name in categories if name in cell}
                z[j][i] = categories.index(max(counts, key=lambda k: counts[k]))
                text[j][i] = f"{xcol}={x:g}, {ycol}={y:g}<br>" + "<br>".join(f"{k}: {v}" for k, v in counts.items())
    pooled = [c for c in numeric[2:]] + [c for c in groups if c not in numeric]
    caption = f"Majority phase per cell over seeds{' and ' + ', '.join(pooled) if pooled else ''}."
    heat = Heatmap(
        [f"{x:g}" for x in xs],
        [f"{y:g}" for y in ys],
        z,
        list(categories),
        [PHASE_COLORS.get(p, PALETTE[i % len(PALETTE)]) for i, p in enumerate(categories)],
        text,
    )
    return Figure("phase_map", f"Phase diagram: {ycol} vs {xcol}", xcol, ycol, heatmap=heat, caption=caption)
