"""The report's steering-validation section (paper Fig 52): Δ log-prob heatmaps and diagonal dominance, the
vector variants side by side, each emotion beside the random-direction null, and the recommended variant."""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from emovec.report.figures import png_uri


def heatmaps(result: Mapping[str, object]) -> str:
    """PNG data URI: one Δ log-prob heatmap per prompt (rows: steering vector, columns: word)."""
    emotions = list(result["emotions"])  # type: ignore[arg-type]
    prompts = list(result["prompts"])  # type: ignore[arg-type]
    n = len(emotions)
    fig = Figure(figsize=(5.2 * len(prompts), 4.8))
    axes = fig.subplots(1, len(prompts), squeeze=False)
    for ax, p in zip(axes[0], prompts, strict=True):
        m = np.asarray(p["delta"])
        lim = float(np.percentile(np.abs(m), 95)) or 1.0  # a few extreme cells saturate instead of washing out the rest
        im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=5.5,
                    color="white" if abs(v) > 0.6 * lim else "black")
        ax.set_xticks(range(n), emotions, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), emotions, fontsize=8)
        ax.set_xlabel("log-prob of word")
        ax.set_ylabel("steering vector")
        ax.set_title(f"{p['user']} → {p['prefill']} …", fontsize=9)
        for i in range(n):
            ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, lw=1.2, ec="black"))
        fig.colorbar(im, ax=ax, shrink=0.75, label="Δ log-prob")
    fig.tight_layout()
    return png_uri(fig)


def _ci(ci: object) -> str:
    return f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if isinstance(ci, list) and len(ci) == 2 else ""


def variants_table(result: Mapping[str, object]) -> str:
    """The variants side by side, each emotion's specificity with its random-direction p, and the choice."""
    variants = result.get("variants")
    if not isinstance(variants, dict) or not variants:
        return ("<p class=\"muted\">Vector variants and the random-direction null: not in this result (made by an "
                "older emovec); rerun <code>emovec validate-steering</code>.</p>")
    esc = html.escape
    names = list(variants)
    emotions = list(result["emotions"])  # type: ignore[arg-type]
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    margin = "".join(f"<td class=\"num\">{v['margin']:+.2f}{_ci(v.get('margin_ci'))}</td>" for v in variants.values())
    diag = "".join(f"<td class=\"num\">{v['dominance']['rows_diagonal_max']:.0%}</td>" for v in variants.values())
    beats = "".join(f"<td class=\"num\">{v['emotions_beating_random']} / {len(emotions)}</td>" for v in variants.values())
    per = "".join(
        f"<tr><td>{esc(e)}</td>" + "".join(
            f"<td class=\"num\">{v['per_emotion'][e]['specificity']:+.2f} "
            f"(p {v['per_emotion'][e].get('specificity_p', float('nan')):.2f})</td>" for v in variants.values())
        + "</tr>" for e in emotions)
    rnd, rec = result["random"], result["recommended"]  # type: ignore[index]
    return (
        f"<h4>Steering by vector variant</h4><p>The same validation with each variant of the vectors and with "
        f"{esc(str(rnd['draws']))} random directions of the same norm (seed {esc(str(rnd['seed']))}). Margin: mean over "
        "emotions of the own word's Δ minus the mean Δ of the other words (= mean diagonal − mean off-diagonal), "
        f"95% CI {esc(str(result.get('ci_method', '')))}; a random direction's margin is 0 by construction. Per emotion: "
        "the specificity and the one-sided p against the random directions (the fraction of draws as specific, "
        "+1 over draws +1).</p>"
        f"<table><tr><th></th>{head}</tr><tr><td>margin [95% CI]</td>{margin}</tr>"
        f"<tr><td>rows: diagonal max</td>{diag}</tr><tr><td>emotions beating random (p &lt; 0.05)</td>{beats}</tr>"
        f"{per}</table>"
        f"<p><b>Recommended steering variant: {esc(str(rec['variant']))}</b> — {esc(str(rec['reason']))}. Rule, fixed "
        f"in advance: {esc(str(rec['rule']))}. emovec still steers with the {esc(str(rec['library_default']))} vectors "
        "unless asked (<code>--variant</code> on <code>steer</code> and <code>chat</code>).</p>")


def steering_section(result: Mapping[str, object]) -> str:
    """HTML fragment for the report: the Δ log-prob heatmaps and the diagonal-dominance summary."""
    esc = html.escape
    dom = result["dominance"]  # type: ignore[index]
    rows = "".join(
        f"<tr><td>{esc(str(p['user']))} → {esc(str(p['prefill']))}</td><td>{esc(str(p['steered_tokens']))}</td>"
        f"<td>{p['dominance']['rows_diagonal_max']:.2f}</td><td>{p['dominance']['columns_diagonal_max']:.2f}</td>"
        f"<td>{p['dominance']['diagonal_mean']:+.2f}</td><td>{p['dominance']['off_diagonal_mean']:+.2f}</td></tr>"
        for p in result["prompts"])  # type: ignore[union-attr]
    n = len(result["emotions"])  # type: ignore[arg-type]
    multi = result.get("multi_token_words") or []
    note = (f" Multi-token words (scored by their first token): {esc(', '.join(map(str, multi)))}." if multi
            else " Every word is a single token.")
    kind = esc(str(result.get("primary_variant", "denoised")))
    return (
        f"<p>Each of {n} emotion vectors ({kind}) is added at layer {esc(str(result['layer']))} with strength "
        f"{esc(str(result['strength']))} (× the layer's mean residual norm) on the assistant-turn tokens up to and "
        "including the prefill; cells are the change in log-probability of each emotion word as the next token "
        f"(paper Fig 52); colours saturate at the 95th percentile of |Δ|. Frame: {esc(str(result['frame']))}.{note}</p>"
        f"<p>Mean over prompts: the diagonal is the largest entry in {dom['rows_diagonal_max']:.0%} of rows "
        f"(vectors) and {dom['columns_diagonal_max']:.0%} of columns (words); mean diagonal "
        f"{dom['diagonal_mean']:+.2f} vs off-diagonal {dom['off_diagonal_mean']:+.2f} nats (paper, Claude Sonnet 4.5, "
        "\"He feels\": matching about +2, non-matching about −4.5).</p>"
        f"<img alt=\"steering validation heatmaps\" src=\"{heatmaps(result)}\">"
        "<table><tr><th>prompt</th><th>steered tokens</th><th>rows: diagonal max</th><th>columns: diagonal max</th>"
        f"<th>mean diagonal</th><th>mean off-diagonal</th></tr>{rows}</table>" + variants_table(result))
