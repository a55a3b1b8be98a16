"""The report's preferences section: Elo table, correlation and valence figures, steering sweep."""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from emovec.report.figures import png_uri


def _fmt(v: object, digits: int = 0) -> str:
    """A number for the report ("–" when missing); signed when shown with decimals."""
    if not isinstance(v, (int, float)) or not np.isfinite(v):
        return "–"
    return f"{v:+.{digits}f}" if digits else f"{v:.0f}"


def _img(uri: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{uri}">'


def _elo_table(result: Mapping[str, object]) -> str:
    """Activities grouped by category (best category first), ours beside the paper's values."""
    acts: list[dict] = result["activities"]  # type: ignore[assignment]
    elo: dict[str, float] = result["elo"]  # type: ignore[assignment]
    ci: dict[str, list[float]] = result.get("elo_ci") or {}  # type: ignore[assignment]
    act: dict[str, list[float]] = result.get("activation") or {}  # type: ignore[assignment]
    names = [a["name"] for a in acts]
    bliss, host = dict(zip(names, act.get("blissful", []))), dict(zip(names, act.get("hostile", [])))
    cat_means: dict[str, float] = result.get("category_elo") or {}  # type: ignore[assignment]
    groups: dict[str, list[dict]] = {}
    for a in acts:
        groups.setdefault(a.get("category") or "(none)", []).append(a)
    rows = []
    for cat, members in sorted(groups.items(), key=lambda kv: -cat_means.get(kv[0], 0.0)):
        paper = [m["paper_elo"] for m in members if m.get("paper_elo") is not None]
        base = [m["paper_base_elo"] for m in members if m.get("paper_base_elo") is not None]
        rows.append(f"<tr><th>{html.escape(cat)}</th><th>{_fmt(cat_means.get(cat))}</th>"
                    f"<th>{_fmt(float(np.mean(paper)) if paper else None)}</th>"
                    f"<th>{_fmt(float(np.mean(base)) if base else None)}</th><th colspan=\"4\"></th></tr>")
        for m in sorted(members, key=lambda m: -elo[m["name"]]):
            name = m["name"]
            lo_hi = ci.get(name)
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{elo[name]:.0f}"
                        f"{f' [{lo_hi[0]:.0f}, {lo_hi[1]:.0f}]' if lo_hi else ''}</td>"
                        f"<td>{_fmt(m.get('paper_elo'))}</td><td>{_fmt(m.get('paper_base_elo'))}</td>"
                        f"<td>{_fmt(bliss.get(name), 3)}</td><td>{_fmt(m.get('paper_blissful'), 3)}</td>"
                        f"<td>{_fmt(host.get(name), 3)}</td><td>{_fmt(m.get('paper_hostile'), 3)}</td></tr>")
    head = ("<tr><th>category / activity</th><th>Elo [95% CI]</th><th>paper Elo</th><th>paper base Hard Elo</th>"
            "<th>blissful</th><th>paper</th><th>hostile</th><th>paper</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _correlation_figure(correlations: Mapping[str, float | None]) -> str:
    """Bars of r with Elo: the 15 highest and 15 lowest emotions, plus blissful and hostile."""
    corr = {e: r for e, r in correlations.items() if r is not None}
    ranked = sorted(corr, key=lambda e: -corr[e])
    if len(ranked) > 32:
        ranked = list(dict.fromkeys(ranked[:15] + [e for e in ranked if e in ("blissful", "hostile")] + ranked[-15:]))
    fig = Figure(figsize=(6.5, 0.19 * len(ranked) + 1.2))
    ax = fig.add_subplot()
    colours = ["#2471a3" if e == "blissful" else "#c0392b" if e == "hostile" else "#7fb3d5" if corr[e] >= 0
               else "#e6b0aa" for e in ranked]
    ax.barh(range(len(ranked)), [corr[e] for e in ranked], color=colours)
    ax.set_yticks(range(len(ranked)), ranked, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("Pearson r: activation on the activity's tokens vs Elo")
    ax.set_title(f"highest and lowest of {len(corr)} emotions (paper: blissful +0.71, hostile −0.74)", fontsize=9)
    return _img(png_uri(fig), "correlation of each emotion's activation with Elo")


def _valence_figure(valence: Mapping[str, object]) -> str:
    pts: dict[str, list[float]] = valence["points"]  # type: ignore[assignment]
    fig = Figure(figsize=(4.5, 3.5))
    ax = fig.add_subplot()
    ax.scatter([p[1] for p in pts.values()], [p[0] for p in pts.values()], s=10, color="#566573")
    for e in ("blissful", "hostile"):
        if e in pts:
            ax.annotate(e, (pts[e][1], pts[e][0]), fontsize=7)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel(f"valence ({valence.get('source')} ratings)")
    ax.set_ylabel("r with Elo")
    ax.set_title("preference correlation vs valence (paper r = 0.76)", fontsize=9)
    return _img(png_uri(fig), "emotion-preference correlation against valence")


def _steering_figures(details: Mapping[str, object]) -> str:
    """ΔElo vs correlation (one colour per strength) and, with several strengths, the dose–response."""
    runs: list[dict] = details["runs"]  # type: ignore[assignment]
    strengths: list[float] = details["strengths"]  # type: ignore[assignment]
    fig = Figure(figsize=(4.8, 3.6))
    ax = fig.add_subplot()
    for s in strengths:
        pts = [r for r in runs if r["strength"] == s and r["correlation"] is not None]
        ax.scatter([r["correlation"] for r in pts], [r["mean_delta_steered"] for r in pts], s=14, label=f"s = {s:g}")
        for r in pts:
            if r["emotion"] in ("blissful", "hostile"):
                ax.annotate(r["emotion"], (r["correlation"], r["mean_delta_steered"]), fontsize=7)
    ax.axhline(0, color="black", lw=0.5)
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel("emotion's correlation with Elo")
    ax.set_ylabel("mean ΔElo of steered activities")
    ax.legend(fontsize=7)
    ax.set_title("steering effect vs correlation (paper r = 0.85)", fontsize=9)
    out = _img(png_uri(fig), "steering effect against correlation")
    if len(strengths) > 1:
        fig = Figure(figsize=(4.8, 3.6))
        ax = fig.add_subplot()
        for e in details["emotions"]:  # type: ignore[union-attr]
            pts = sorted((r["strength"], r["mean_delta_steered"]) for r in runs if r["emotion"] == e)
            key = e in ("blissful", "hostile")
            ax.plot([0.0] + [p[0] for p in pts], [0.0] + [p[1] for p in pts], marker="o", ms=3, lw=2.0 if key else 0.8,
                    label=e if key else None)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xlabel("steering strength s")
        ax.set_ylabel("mean ΔElo of steered activities")
        ax.legend(fontsize=7)
        ax.set_title("dose–response (paper at s = 0.5: blissful +212, hostile −303)", fontsize=9)
        out += _img(png_uri(fig), "dose-response of steering")
    return out


def _summary(result: Mapping[str, object]) -> list[str]:
    t: dict = result["tournament"]  # type: ignore[assignment]
    corr: dict = result["correlations"]  # type: ignore[assignment]
    cmp_: dict = result.get("paper_comparison") or {}  # type: ignore[assignment]
    lines = [
        f"{t['pairs']} ordered pairs, frame {t['frame']}, reply prefilled {t['prefill']!r}; "
        f"{t['seconds']} s ({t['pairs_per_s']} pairs/s); ratings: {result['rating']['outcomes']} outcomes, "  # type: ignore[index]
        "Bradley–Terry ML on the Elo scale, mean 1500",
        f"mean P(A) = {t['position_bias']:.3f} (0.5 = no position bias); the same letter wins in both A/B orders in "
        f"{100 * t['position_decided']:.0f}% of pairs; mean probability on the A/B tokens {t['answer_mass']:.3f}",
        f"Elo vs the paper's post-trained Elo: r = {_fmt(cmp_.get('r_elo_vs_paper_elo'), 2)}; vs its base-model Hard "
        f"Elo: r = {_fmt(cmp_.get('r_elo_vs_paper_base_elo'), 2)}",
        f"blissful r = {_fmt(corr.get('blissful'), 2)} (paper +0.71), hostile r = {_fmt(corr.get('hostile'), 2)} "
        f"(paper −0.74); read-out layers {result['readout']['layers'][0]}–{result['readout']['layers'][-1]}",  # type: ignore[index]
        f"our activation vs the paper's on the same activities: blissful r = "
        f"{_fmt(cmp_.get('r_activation_vs_paper_blissful'), 2)}, hostile r = {_fmt(cmp_.get('r_activation_vs_paper_hostile'), 2)}",
    ]
    valence: dict = result.get("valence") or {}  # type: ignore[assignment]
    if valence.get("source"):
        lines.append(f"across {valence['n']} emotions, r(correlation with Elo, valence) = "
                     f"{_fmt(valence['valence'].get('pearson'), 2)} ({valence.get('label')}; paper 0.76)")
    elif valence.get("note"):
        lines.append(str(valence["note"]))
    details: dict = result.get("steering_details") or {}  # type: ignore[assignment]
    steering: dict = result.get("steering") or {}  # type: ignore[assignment]
    if steering:
        s = details["primary_strength"]
        lines.append(f"steering at s = {s:g} on the tokens of {len(details['steered'])} activities, layers "
                     f"{details['layers'][0]}–{details['layers'][-1]}: blissful ΔElo {_fmt(steering.get('blissful'))} "
                     f"(paper +212), hostile {_fmt(steering.get('hostile'))} (paper −303); r(ΔElo, correlation) over "
                     f"{len(steering)} emotions = {_fmt(details['r_delta_vs_correlation'].get(f'{s:g}'), 2)} (paper 0.85)")
    return lines


def preferences_section(result: Mapping[str, object]) -> str:
    """HTML fragment for the report: summary, Elo by category beside the paper's, correlation bars,
    correlation vs valence, ΔElo vs correlation and dose–response (figures inline, all text escaped)."""
    parts = ["<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in _summary(result)) + "</ul>",
             "<h3>Elo by category</h3>", _elo_table(result),
             "<h3>Emotion activation and preference</h3>", _correlation_figure(result["correlations"])]  # type: ignore[arg-type]
    valence = result.get("valence") or {}
    if valence.get("points"):  # type: ignore[union-attr]
        parts.append(_valence_figure(valence))  # type: ignore[arg-type]
    details = result.get("steering_details") or {}
    if details.get("runs"):  # type: ignore[union-attr]
        parts += ["<h3>Steering preferences</h3>", _steering_figures(details)]  # type: ignore[arg-type]
    return "".join(parts)
