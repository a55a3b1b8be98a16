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


def _at(r: Mapping, *keys: str) -> object:
    d: object = r
    for k in keys:
        d = d.get(k) if isinstance(d, Mapping) else None
    return d


def _h(r: Mapping, key: str) -> str:
    """A headline entry: value [CI] · null · baseline, as far as the results carry them."""
    e = _at(r, "headline", key)
    if not isinstance(e, Mapping) or e.get("value") is None:
        return "—"
    ci, null, base = e.get("ci"), e.get("null"), e.get("baseline")
    text = _fmt(e["value"]) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if isinstance(ci, list) and len(ci) == 2 else "")
    if e.get("pc") is not None:
        text += f" (PC{e['pc']})"
    if isinstance(null, Mapping):
        text += "; " + ", ".join(f"null {k} {_fmt(v)}" for k, v in null.items() if v is not None)
    if isinstance(base, Mapping) and base.get("value") is not None:
        text += f"; {base.get('name')} {_fmt(base['value'])}"
    if e.get("verdict"):
        text += f"; {e['verdict']}"
    return text + (f"; paper {e['paper']}" if e.get("paper") is not None else "")


def _stage_times(r: Mapping) -> str:
    stages = _at(r, "timings", "stages")
    if not isinstance(stages, Mapping):
        return "—"
    return ", ".join(f"{k} {_fmt(v.get('last_run_s'), 0)}" + (" (skipped last run)" if v.get("skipped") else "")
                     for k, v in stages.items()) or "—"


ROWS = [
    ("PC1 / PC2 share of variance", lambda r: " / ".join(_fmt(v) for v in (_at(r, "analysis", "pc_variance") or [])[:2]) or "—"),
    ("PC1 ↔ human valence r", lambda r: _h(r, "pc1_valence_r")),
    ("valence, best of the top PCs |r|", lambda r: _h(r, "best_pc_valence_r")),
    ("PC2 ↔ human arousal r", lambda r: _h(r, "pc2_arousal_r")),
    ("arousal, best of the top PCs |r|", lambda r: _h(r, "best_pc_arousal_r")),
    ("valence decodability (nested-CV ridge r)", lambda r: _h(r, "decode_valence_r")),
    ("arousal decodability (nested-CV ridge r)", lambda r: _h(r, "decode_arousal_r")),
    ("k-means ARI vs the paper's clusters", lambda r: _fmt(_at(r, "analysis", "kmeans", "adjusted_rand"))),
    ("logit lens: own word in top 100", lambda r: _fmt(_at(r, "analysis", "logit_lens_own_top100"))),
    ("held-out top-1 among all emotions", lambda r: _h(r, "heldout_top1")),
    ("held-out top-1 among the focal emotions", lambda r: _h(r, "heldout_top1_focal")),
    ("steering diagonal: row max share", lambda r: _h(r, "steering_diagonal")),
    ("steering diagonal mean vs off-diagonal", lambda r: f"{_fmt(_at(r, 'steering_validation', 'dominance', 'diagonal_mean'))} vs "
                                                        f"{_fmt(_at(r, 'steering_validation', 'dominance', 'off_diagonal_mean'))}"),
    ("blissful ↔ Elo r", lambda r: _h(r, "preference_blissful_r")),
    ("hostile ↔ Elo r", lambda r: _h(r, "preference_hostile_r")),
    ("timings: seconds per stage (last full run)", _stage_times),
    ("timings: model load s", lambda r: _fmt(_at(r, "timings", "model_load_s"), 1)),
]


def render_compare(data: Mapping[str, object], out: str | Path) -> Path:
    """Write the comparison page for `data` (from `emovec.compare.compare`)."""
    html = environment().from_string(TEMPLATE).render(runs=data["runs"], rsa=data["rsa"], rows=ROWS, fmt=_fmt,
                                                     raw=json.dumps(data, indent=1, ensure_ascii=False))
    return write_page(out, html)
