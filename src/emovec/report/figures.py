"""Figures for the analysis section, drawn from the result dict with matplotlib's object API (Agg, no
pyplot state) and returned as `data:image/png;base64,…` URIs, so the report needs no external file.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

FOCAL_COLOURS = {"happy": "#e6a100", "inspired": "#b8860b", "loving": "#d6336c", "proud": "#7048e8",
                 "calm": "#2b8a3e", "desperate": "#862e9c", "angry": "#c92a2a", "guilty": "#5c940d",
                 "sad": "#1864ab", "afraid": "#495057", "nervous": "#e8590c", "surprised": "#0b7285"}


def png_uri(fig: Figure, dpi: int = 110) -> str:
    """Render a figure to a base64 PNG data URI."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def cosine_heatmap(order: Sequence[str], matrix: Sequence[Sequence[float]]) -> str:
    """The emotion × emotion cosine matrix in clustering order, every emotion labelled."""
    n = len(order)
    size = max(4.0, min(14.0, 0.075 * n + 2))
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    im = ax.imshow(np.array(matrix), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    font = max(3.0, min(9.0, 700 / max(n, 1) / 2.2))
    ax.set_xticks(range(n), order, rotation=90, fontsize=font)
    ax.set_yticks(range(n), order, fontsize=font)
    fig.colorbar(im, ax=ax, shrink=0.6, label="cosine")
    return png_uri(fig, dpi=120 if n > 60 else 110)


def pca_scatter(coords: Mapping[str, Sequence[float]], explained: Sequence[float], valence: Mapping[str, float],
                signs: tuple[int, int], label: Sequence[str]) -> str:
    """PC1 × PC2 of the emotions (signs aligned with valence/arousal), coloured by human valence; emotions
    without a rating in grey; `label` names the points to annotate."""
    names = list(coords)
    xy = np.array([[signs[0] * coords[e][0], signs[1] * coords[e][1] if len(coords[e]) > 1 else 0.0] for e in names])
    fig = Figure(figsize=(8.5, 6.5))
    ax = fig.add_subplot()
    rated = [i for i, e in enumerate(names) if e in valence]
    unrated = [i for i, e in enumerate(names) if e not in valence]
    if unrated:
        ax.scatter(xy[unrated, 0], xy[unrated, 1], c="#bbb", s=18, label="no human rating")
    if rated:
        sc = ax.scatter(xy[rated, 0], xy[rated, 1], c=[valence[names[i]] for i in rated], cmap="RdYlGn", s=26,
                        edgecolors="#333", linewidths=0.3)
        fig.colorbar(sc, ax=ax, label="human valence (Warriner 1-9)")
    for i, e in enumerate(names):
        if e in label:
            ax.annotate(e, xy[i], fontsize=7, xytext=(3, 2), textcoords="offset points")
    pct = [100 * x for x in explained] + [0.0, 0.0]
    ax.set_xlabel(f"PC1 ({pct[0]:.1f}% of variance){' (flipped)' if signs[0] < 0 else ''}")
    ax.set_ylabel(f"PC2 ({pct[1]:.1f}%){' (flipped)' if signs[1] < 0 else ''}")
    ax.axhline(0, color="#ddd", lw=0.8, zorder=0)
    ax.axvline(0, color="#ddd", lw=0.8, zorder=0)
    if unrated:
        ax.legend(loc="best", fontsize=8)
    return png_uri(fig)


def number_curves(templates: Sequence[Mapping[str, object]], emotions_per: Sequence[Sequence[str]]) -> str:
    """One panel per number template: change in cosine from the smallest X, for the chosen emotions (the
    paper's expected ones solid, the strongest other trends dashed; log X when it spans > 1 decade)."""
    n = len(templates)
    cols = min(3, max(n, 1))
    rows = math.ceil(n / cols) if n else 1
    fig = Figure(figsize=(5.2 * cols, 3.6 * rows))
    for k, (tpl, chosen) in enumerate(zip(templates, emotions_per)):
        ax = fig.add_subplot(rows, cols, k + 1)
        x = np.array([float(v) for v in tpl["values"]])  # type: ignore[union-attr]
        log = x.min() > 0 and x.max() / x.min() > 10
        curves = tpl["curves"]
        expected = {c["emotion"] for c in tpl["expected"]}  # type: ignore[union-attr]
        for e in chosen:
            rho = tpl["spearman"].get(e)  # type: ignore[union-attr]
            label = f"{e} (ρ={rho:+.2f})" if rho is not None else e
            y = np.array(curves[e])  # type: ignore[index]
            ax.plot(x, y - y[0], marker="o", ms=3, label=label, color=FOCAL_COLOURS.get(e) if e in expected else None,
                    ls="-" if e in expected else "--")
        if log:
            ax.set_xscale("log")
        ax.axhline(0, color="#ccc", lw=0.8, zorder=0)
        ax.set_title(str(tpl["name"]), fontsize=10)
        ax.set_xlabel("X")
        ax.set_ylabel("Δ cosine from first X")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png_uri(fig)


def sweep_curves(rows: Sequence[Mapping[str, object]], series: Mapping[str, str], default_layer: int,
                 recommended: int | None, chosen: int) -> str:
    """Per-layer metrics (one line each) with the default, recommended and analysed layers marked."""
    layers = [int(r["layer"]) for r in rows]  # type: ignore[call-overload]
    fig = Figure(figsize=(10, 4.8))
    ax = fig.add_subplot()
    for key, label in series.items():
        ys = [np.nan if r.get(key) is None else float(r[key]) for r in rows]  # type: ignore[arg-type]
        if not np.all(np.isnan(ys)):
            ax.plot(layers, ys, marker="o", ms=3, label=label)
    ax.axvline(default_layer, color="#888", ls="--", lw=1, label=f"default layer {default_layer}")
    if recommended is not None:
        ax.axvline(recommended, color="#2b8a3e", ls=":", lw=1.5, label=f"recommended {recommended}")
    if chosen not in (default_layer, recommended):
        ax.axvline(chosen, color="#c92a2a", ls="-.", lw=1, label=f"analysed {chosen}")
    ax.set_xlabel("layer")
    ax.set_ylim(-0.25, 1.05)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(alpha=0.3)
    return png_uri(fig)


def matrix_heatmap(matrix: Sequence[Sequence[float]], rows: Sequence[str], cols: Sequence[str], title: str,
                   cmap: str = "RdBu_r", symmetric: bool = True, label: str = "cosine") -> str:
    """A small labelled heatmap (scenario matrix, RSA across layers)."""
    m = np.array(matrix, dtype=float)
    fig = Figure(figsize=(max(4.5, 0.42 * len(cols) + 2.5), max(3.5, 0.36 * len(rows) + 1.8)))
    ax = fig.add_subplot()
    lim = float(np.nanmax(np.abs(m))) if m.size else 1.0
    im = ax.imshow(m, cmap=cmap, vmin=-lim if symmetric else None, vmax=lim if symmetric else None,
                   interpolation="nearest", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8, label=label)
    return png_uri(fig)
