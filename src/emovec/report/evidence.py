"""The report's opening sections: the verdict table (ours [CI] · null · lexical baseline · paper · verdict),
norm-source ceilings, reliability, outlier dimensions and the layer choice (`evidence.json`); and the
held-out evaluation (`evaluation.json`). Every field goes through `html.escape`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape


def _n(x: object, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "—"


def _ci(ci: object) -> str:
    return f" [{_n(ci[0])}, {_n(ci[1])}]" if isinstance(ci, Sequence) and len(ci) == 2 else ""  # type: ignore[index]


def _table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = "".join(f"<th>{escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def verdict_rows(ev: Mapping) -> list[list[str]]:
    """(criterion, ours [CI], null mean / q95, p, lexical baselines, paper, verdict) per criterion."""
    out = []
    for r in ev["criteria"]:
        lex = " · ".join(f"{name} {_n(v)}" for name, v in r.get("lexical", {}).items()) or "—"
        out.append([r["label"], _n(r["ours"]) + _ci(r.get("ci")), f"{_n(r.get('null_mean'))} / {_n(r.get('null_q95'))}",
                    _n(r.get("p"), 3), lex, r["paper"], r["verdict"]])
    return out


def evidence_section(ev: Mapping[str, object]) -> str:
    """HTML for `evidence.json`: the verdict table first, then the evidence behind it."""
    parts = [f"<p>Layer {escape(str(ev['layer']))} · {escape(str(ev['vectors']))} vectors · {escape(str(ev['stories']))} "
             f"stories. CI: {escape(str(ev['ci_method']))}. Null: {escape(str(ev['null_method']))}.</p>",
             _table(["criterion", "ours [95% CI]", "null mean / 95th pct", "p", "lexical baselines", "paper",
                     "verdict"], verdict_rows(ev)),
             f"<p><b>Verdict rule</b> (fixed before any result): {escape(str(ev['verdict_rule']))}. Lexical baselines: "
             f"the emotion word's input embedding; word templates ({escape('; '.join(ev['lexical_templates']))}) "  # type: ignore[arg-type]
             "at the same layer, last token and mean.</p>"]
    ns = ev["norm_sources"]
    wd, jw = ns["warriner_vs_dal"], ns["judge_vs_warriner"]  # type: ignore[index]
    parts.append("<h3>Ceiling: agreement between rating sources</h3>" + _table(
        ["sources", "n", "valence r", "arousal r"],
        [["Warriner vs DAL (two human norm sets)", wd["n"], _n(wd["valence"]), _n(wd["arousal"])],
         ["model judge vs Warriner", jw["n"], _n(jw["valence"]), _n(jw["arousal"])]]))
    rel = ev["reliability"]
    if "error" not in rel:  # type: ignore[operator]
        curve = ", ".join(f"{c['stories']}: {_n(c['median'])}" for c in rel["curve"])  # type: ignore[index]
        parts.append(f"<h3>Reliability</h3><p>Median split-half cosine ({rel['stories_per_half']} stories per half, "
                     f"{rel['n_splits']} splits): {_n(rel['median_split_half'])}; projected to all stories "
                     f"(Spearman–Brown): {_n(rel['median_projected_full'])}; stories per emotion needed for 0.9: "
                     f"{_n(rel['median_stories_for_0_9'], 0)}. Curve (stories per half: median cosine): "
                     f"{escape(curve)}.</p><p>Unreliable (projected &lt; {rel['unreliable_below']}): "  # type: ignore[index]
                     f"{escape(', '.join(rel['unreliable']) or 'none')}</p>")  # type: ignore[index,arg-type]
    out = ev["outliers"]
    if "error" not in out:  # type: ignore[operator]
        dims = ", ".join(f"{d['dim']} (layers {d['layers'][0]}–{d['layers'][-1]}, {len(d['layers'])})"
                         for d in out["dimensions"][:8]) or "none"  # type: ignore[index]
        on, off = out["standardisation"]["on"], out["standardisation"]["off"]  # type: ignore[index]
        parts.append(f"<h3>Outlier dimensions</h3><p>{escape(str(out['rule']))}: {escape(dims)}.</p>" + _table(
            ["number", "standardisation off", "on"], [[k, _n(off[k]), _n(on.get(k))] for k in off]))
    parts.append(f"<p class='small'>Controls took {escape(str(ev.get('timing_s')))} s.</p>")
    return "\n".join(parts)


def evaluation_section(ev: Mapping[str, object]) -> str:
    """HTML for `evaluation.json`: per layer with CIs, the lexical baseline beside it (and the same among the
    focal emotions alone when `emovec run` added it)."""
    focal = ev.get("focal")
    return _evaluation(ev) + ("" if not isinstance(focal, Mapping) else
                              "<h3>Among the focal emotions only</h3>" + _evaluation(focal))


def _evaluation(ev: Mapping[str, object]) -> str:
    lex = ev["lexical"]
    head = f"<p>{escape(str(ev['records']))} {escape(str(ev['kind']))} records from {escape(str(ev['source']))}; " \
           f"pooling {escape(str(ev['position']))}; headline layer {escape(str(ev['headline_layer']))}. " \
           f"{escape(str(ev['note']))}.</p>"
    if ev["kind"] == "label":
        rows = [[r["layer"], _n(r["top1"]) + _ci(r.get("top1_ci")), _n(r["top3"]) + _ci(r.get("top3_ci")),
                 f"{_n(r['median_rank_all'], 0)} of {r['of_all']}", _n(r["centred"]["top1"])]
                for r in ev["layers"]]  # type: ignore[union-attr]
        rows.append(["lexical baseline", _n(lex["top1"]) + _ci(lex.get("top1_ci")), _n(lex["top3"]),  # type: ignore[index]
                     f"{_n(lex['median_rank_all'], 0)} of {lex['of_all']}", "—"])  # type: ignore[index]
        return head + f"<p>Chance top-1: {_n(lex['chance_top1'])}.</p>" + _table(  # type: ignore[index]
            ["layer", "top-1 [95% CI]", "top-3 [95% CI]", "median rank among all", "top-1, centred over texts"], rows)
    rows = [[r["layer"], _n(r["value"]) + _ci(r.get("ci"))] for r in ev["layers"]]  # type: ignore[union-attr]
    rows.append(["lexical baseline", _n(lex["value"]) + _ci(lex.get("ci"))])  # type: ignore[index]
    return head + _table(["layer", f"{ev['layers'][0]['metric']} [95% CI]"], rows)  # type: ignore[index]
