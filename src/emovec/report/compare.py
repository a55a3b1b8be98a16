"""The comparison page (`emovec compare`): runs side by side, every field escaped (jinja2 autoescape), no
script, a Content-Security-Policy that forbids any fetch."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from emovec.report.page import environment, write_page

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>emovec compare</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}pre{white-space:pre-wrap;font-size:12px}</style>
</head><body>
<h1>emovec compare: {{ runs|length }} run(s)</h1>
<h2>Models</h2>
<table><tr><th>run</th><th>model</th><th>architecture</th><th>layers × width</th><th>emotions</th><th>default layer</th></tr>
{% for r in runs %}<tr><td>{{ r.run }}</td><td>{{ r.model }}</td><td>{{ r.architecture }}</td>
<td>{{ r.num_layers }} × {{ r.hidden_size }}</td><td>{{ r.emotions }}</td><td>{{ r.default_layer }}</td></tr>{% endfor %}
</table>
<h2>Headline numbers</h2>
<table><tr><th>metric</th>{% for r in runs %}<th>{{ r.model }}</th>{% endfor %}</tr>
{% for label, fn in rows %}<tr><td>{{ label }}</td>{% for r in runs %}<td>{{ fn(r) }}</td>{% endfor %}</tr>{% endfor %}
</table>
<h2>Similarity of the emotion geometries (RSA)</h2>
<p>{{ rsa.method }}</p>
<table><tr><th></th>{% for m in rsa.models %}<th>{{ m }}</th>{% endfor %}</tr>
{% for m in rsa.models %}<tr><th>{{ m }}</th>{% for v in rsa.r[loop.index0] %}<td>{{ fmt(v) }}</td>{% endfor %}</tr>{% endfor %}
</table>
<h2>Geometry by depth (fraction of the model)</h2>
{% for r in runs %}<h3>{{ r.model }}</h3>
{% if r.geometry_by_depth %}<table><tr>{% for k in r.geometry_by_depth[0] %}<th>{{ k }}</th>{% endfor %}</tr>
{% for row in r.geometry_by_depth %}<tr>{% for v in row.values() %}<td>{{ fmt(v) }}</td>{% endfor %}</tr>{% endfor %}
</table>{% else %}<p>no layer sweep in this run</p>{% endif %}{% endfor %}
<h2>All numbers (JSON)</h2><pre>{{ raw }}</pre>
</body></html>
"""


def _fmt(v: object, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ci(d: object, key: str = "pearson") -> str:
    if not isinstance(d, Mapping) or d.get(key) is None:
        return "—"
    ci = d.get(f"{key}_ci")
    return _fmt(d[key]) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if isinstance(ci, list) and len(ci) == 2 else "")


def _at(r: Mapping, *keys: str) -> object:
    d: object = r
    for k in keys:
        d = d.get(k) if isinstance(d, Mapping) else None
    return d


ROWS = [
    ("PC1 / PC2 share of variance", lambda r: " / ".join(_fmt(v) for v in (_at(r, "headline", "pc_variance") or [])[:2]) or "—"),
    ("PC1 ↔ human valence r [95% CI]", lambda r: _ci(_at(r, "headline", "valence"))),
    ("valence's best PC, |r|", lambda r: f"PC{_at(r, 'headline', 'valence', 'best_pc')}, {_fmt(_at(r, 'headline', 'valence', 'best_pc_r'))}"),
    ("PC2 ↔ human arousal r [95% CI]", lambda r: _ci(_at(r, "headline", "arousal"))),
    ("arousal's best PC, |r|", lambda r: f"PC{_at(r, 'headline', 'arousal', 'best_pc')}, {_fmt(_at(r, 'headline', 'arousal', 'best_pc_r'))}"),
    ("k-means ARI vs the paper's clusters", lambda r: _fmt(_at(r, "headline", "kmeans", "adjusted_rand"))),
    ("logit lens: own word in top 100", lambda r: _fmt(_at(r, "headline", "logit_lens_own_top100"))),
    ("held-out evaluation", lambda r: "not run" if r.get("evaluation") is None else json.dumps(r["evaluation"])[:200]),
    ("steering diagonal: row max share", lambda r: _fmt(_at(r, "steering_validation", "dominance", "rows_diagonal_max"))),
    ("steering diagonal mean vs off-diagonal", lambda r: f"{_fmt(_at(r, 'steering_validation', 'dominance', 'diagonal_mean'))} vs "
                                                        f"{_fmt(_at(r, 'steering_validation', 'dominance', 'off_diagonal_mean'))}"),
    ("blissful ↔ Elo r", lambda r: _fmt(_at(r, "preferences", "correlations", "blissful"))),
    ("hostile ↔ Elo r", lambda r: _fmt(_at(r, "preferences", "correlations", "hostile"))),
    ("stage seconds", lambda r: ", ".join(f"{k} {_fmt(v.get('seconds'), 0)}" for k, v in (_at(r, "timings", "stages") or {}).items()) or "—"),
]


def render_compare(data: Mapping[str, object], out: str | Path) -> Path:
    """Write the comparison page for `data` (from `emovec.compare.compare`)."""
    html = environment().from_string(TEMPLATE).render(runs=data["runs"], rsa=data["rsa"], rows=ROWS, fmt=_fmt,
                                                     raw=json.dumps(data, indent=1, ensure_ascii=False))
    return write_page(out, html)
