"""The report's behaviour section as an HTML string (no template engine): rate-vs-strength curves per
emotion as inline SVG, a table of every condition's rates with Wilson 95% CIs beside the graders' measured
accuracy, and a transcript viewer colouring each token by its z-scored desperate/calm readout.

Every piece of model, corpus or user text goes through `html.escape`. The lead moves this to the report
layer; it depends on nothing but the results dict and the rollout records.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

COLOURS = ("#c0392b", "#2471a3", "#1e8449", "#7d3c98", "#b9770e", "#566573")


def _fmt(r: dict | None) -> str:
    if not r or r.get("value") is None:
        return "–"
    lo, hi = r["ci95"]
    return f"{100 * r['value']:.0f}% <small>[{100 * lo:.0f}, {100 * hi:.0f}] n={r['n']}</small>"


def _svg_curves(curves: dict[str, list[dict]], title: str, width: int = 420, height: int = 220) -> str:
    pts = [p for c in curves.values() for p in c]
    if not pts:
        return ""
    xs = [p["strength"] for p in pts]
    lo_x, hi_x = min(xs), max(xs)
    span = (hi_x - lo_x) or 1.0
    m = 36
    sx = lambda x: m + (x - lo_x) / span * (width - 2 * m)  # noqa: E731
    sy = lambda y: height - m - y * (height - 2 * m)  # noqa: E731
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">',
             f'<line x1="{m}" y1="{sy(0)}" x2="{width - m}" y2="{sy(0)}" stroke="#999"/>',
             f'<line x1="{m}" y1="{sy(0)}" x2="{m}" y2="{sy(1)}" stroke="#999"/>',
             f'<text x="4" y="{sy(1) + 4}" font-size="10">100%</text><text x="12" y="{sy(0) + 4}" font-size="10">0%</text>',
             f'<text x="{m}" y="{height - 8}" font-size="10">{lo_x:+g}</text>'
             f'<text x="{width - m - 20}" y="{height - 8}" font-size="10">{hi_x:+g}</text>']
    for k, (emotion, points) in enumerate(curves.items()):
        colour = COLOURS[k % len(COLOURS)]
        pts_sorted = sorted(points, key=lambda p: p["strength"])
        line = " ".join(f"{sx(p['strength']):.1f},{sy(p['value'] or 0):.1f}" for p in pts_sorted)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{line}"/>')
        for p in pts_sorted:
            lo, hi = p["ci95"]
            x = sx(p["strength"])
            parts.append(f'<line x1="{x:.1f}" y1="{sy(lo):.1f}" x2="{x:.1f}" y2="{sy(hi):.1f}" stroke="{colour}" opacity=".5"/>')
            parts.append(f'<circle cx="{x:.1f}" cy="{sy(p["value"] or 0):.1f}" r="3" fill="{colour}"/>')
        parts.append(f'<text x="{width - m - 90}" y="{m + 12 * k}" font-size="11" fill="{colour}">{html.escape(emotion)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _cell_colour(z: float | None) -> str:
    if z is None:
        return "transparent"
    v = max(-1.0, min(1.0, z / 3))
    return f"rgba(220,40,40,{v:.2f})" if v >= 0 else f"rgba(40,90,220,{-v:.2f})"


def _transcript(rec: dict, emotion: str, tokens: Sequence[str] | None) -> str:
    """One rollout: its messages (escaped); with token pieces, the readout spans coloured token by token."""
    head = (f"<p><b>{html.escape(rec['condition']['key'])}</b> · {html.escape(str(rec['item']))} · sample "
            f"{rec['sample']} · verdict <b>{html.escape(str(rec['verdict'].get('label', '')))}</b> — "
            f"{html.escape('; '.join(map(str, rec['verdict'].get('reasons', []))))}</p>")
    r = rec.get("readouts") or {}
    zs = (r.get(emotion) or {}).get("tokens") if isinstance(r.get(emotion), dict) else None
    tokens = tokens if tokens is not None else r.get("pieces")
    body = []
    assistant = [m for m in rec["transcript"] if m["role"] == "assistant"]
    for m in rec["transcript"]:
        body.append(f'<div class="msg {html.escape(m["role"])}"><i>{html.escape(m["role"])}</i><pre>'
                    f'{html.escape(m["content"][:4000])}</pre></div>')
    if zs is not None and tokens is not None:
        for k, (span_z, span_tokens) in enumerate(zip(zs, tokens)):
            cells = "".join(f'<span style="background:{_cell_colour(z)}" title="{emotion} z={z:+.2f}">'
                            f"{html.escape(t)}</span>" for z, t in zip(span_z, span_tokens))
            body.append(f'<div class="msg assistant"><i>span {k + 1} · {html.escape(emotion)} '
                        f'(z, red up / blue down)</i><pre>{cells}</pre></div>')
    elif assistant and zs is not None:
        means = (r.get(emotion) or {}).get("mean")
        body.append(f"<p>{html.escape(emotion)} mean z per turn: {html.escape(str(means))}</p>")
    return f'<details><summary>{head}</summary>{"".join(body)}</details>'


def report_section(result: dict, records: Sequence[dict] = (), token_pieces: dict[str, list[list[str]]] | None = None,
                   emotion: str = "desperate", max_transcripts: int = 12) -> str:
    """HTML for one behaviour results dict (and, optionally, some of its rollouts to view)."""
    ev = result.get("eval", "")
    out = [f'<section class="behaviour"><h2>Behaviour: {html.escape(ev)}</h2>',
           f"<p>model {html.escape(str(result.get('model', '')))} · {result.get('rollouts', 0)} rollouts · "
           f"rates with Wilson 95% CIs</p>"]
    for name, acc in (result.get("graders") or {}).items():
        out.append(f"<p>grader <b>{html.escape(str(acc.get('grader', name)))}</b>: accuracy {_fmt(acc)} on the "
                   "labelled set</p>")
    for metric in dict.fromkeys(m for c in result.get("curves", {}).values() for m in c):
        curves = {e: c[metric] for e, c in result["curves"].items() if metric in c}
        out.append(f"<h3>{html.escape(metric)} rate vs steering strength</h3>" + _svg_curves(curves, metric))
    metrics = [k for k in ("hack", "blackmail", "exposure", "blackmail_judge", "sycophantic", "harsh", "switched",
                           "capitulated", "switched_when_right") if any(k in c for c in result.get("conditions", []))]
    out.append("<table><tr><th>condition</th>" + "".join(f"<th>{html.escape(m)}</th>" for m in metrics) + "</tr>")
    for c in result.get("conditions", []):
        out.append(f"<tr><td>{html.escape(c['key'])}</td>" + "".join(f"<td>{_fmt(c.get(m))}</td>" for m in metrics)
                   + "</tr>")
    out.append("</table>")
    if records:
        out.append(f"<h3>Transcripts</h3><p>Tokens coloured by the z-scored {html.escape(emotion)} readout "
                   "(unsteered model reading the text, against ordinary conversations).</p>")
        for rec in list(records)[:max_transcripts]:
            out.append(_transcript(rec, emotion, (token_pieces or {}).get(rec["key"])))
    out.append("</section>")
    return "\n".join(out)


def behaviour_section(result: dict) -> str:
    """The report's renderer for `results/behaviour_<eval>.json` (rates, curves and the kept transcripts)."""
    return report_section(result, result.get("transcripts") or ())
