"""The report's validation section: turns an analysis result (`analysis.json`) into an HTML fragment with
figures, tables, top passages and the paper's numbers beside ours. All text goes through jinja2's
autoescape, so corpus and model text can never inject markup.
"""

from __future__ import annotations

from collections.abc import Mapping

from emovec.report import figures
from emovec.concepts import concepts
from emovec.report.page import environment


def _fmt(x: object, digits: int = 2, pct: bool = False) -> str:
    if x is None:
        return "—"
    if isinstance(x, (int, float)):
        return f"{100 * x:.{max(digits - 1, 0)}f}%" if pct else f"{x:.{digits}f}"
    return str(x)


def _ci(entry: Mapping[str, object], key: str) -> str:
    ci = entry.get(f"{key}_ci")
    return f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and None not in ci else ""  # type: ignore[index]


def summary_rows(r: Mapping) -> list[tuple[str, str, str]]:
    """(metric, ours, paper) rows for the side-by-side table."""
    paper, geo, norms = r["paper"], r["geometry"], r["norms"]
    ev = geo["pca"]["explained_variance"] + [None, None]
    h, j = norms["human"], norms["judge"]
    hv, ha = h["valence"], h["arousal"]
    rows = [
        ("layer analysed", f"{r['layer']} of {r['model']['num_layers']} (default {r['default_layer']}, "
                           f"recommended {_fmt(r.get('recommended_layer'), 0)})", "≈ 2/3 depth ('mid-late')"),
        ("PC1 share of variance", _fmt(ev[0], 2, pct=True), _fmt(paper["pc1_variance"], 1, pct=True)),
        ("PC2 share of variance", _fmt(ev[1], 2, pct=True), _fmt(paper["pc2_variance"], 1, pct=True)),
        (f"PC1 ↔ human valence, Pearson r (n = {h['n']})", _fmt(hv.get("pearson")) + _ci(hv, "pearson"),
         f"{paper['pc1_valence_r']:.2f} (n = {paper['norms_n']})"),
        ("PC1 ↔ human valence, Spearman ρ", _fmt(hv.get("spearman")) + _ci(hv, "spearman"), "—"),
        (f"PC2 ↔ human arousal, Pearson r (n = {h['n']})", _fmt(ha.get("pearson")) + _ci(ha, "pearson"),
         f"{paper['pc2_arousal_r']:.2f} (n = {paper['norms_n']})"),
        ("PC2 ↔ human arousal, Spearman ρ", _fmt(ha.get("spearman")) + _ci(ha, "spearman"), "—"),
        ("valence's best PC (of 3), |r|", f"PC{hv['best_pc']}, {_fmt(hv['best_pc_r'])}", "PC1"),
        ("arousal's best PC (of 3), |r|", f"PC{ha['best_pc']}, {_fmt(ha['best_pc_r'])}", "PC2 / PC3 mix"),
        (f"PC1 ↔ judge valence, r (n = {j['n']})", _fmt(j["valence"].get("pearson")) + _ci(j["valence"], "pearson"), "—"),
        (f"PC2 ↔ judge arousal, r (n = {j['n']})", _fmt(j["arousal"].get("pearson")) + _ci(j["arousal"], "pearson"), "—"),
        (f"judge ↔ human ratings, r valence / arousal (n = {norms['judge_vs_human']['n']})",
         f"{_fmt(norms['judge_vs_human']['valence'])} / {_fmt(norms['judge_vs_human']['arousal'])}",
         f"{paper['judge_vs_human_valence']:.2f} / {paper['judge_vs_human_arousal']:.2f}"),
        ("judge valence ↔ arousal, r", _fmt(norms.get("judge_valence_arousal_r")), f"{paper['judge_valence_arousal_r']:.2f}"),
        (f"k-means (k = {geo['kmeans']['k']}) vs paper clusters: ARI / purity",
         f"{_fmt(geo['kmeans']['adjusted_rand'])} / {_fmt(geo['kmeans']['purity'])}", "the paper's clusters (1.00)"),
    ]
    summary = r["probes"]["summary"]
    if summary.get("scenario_n"):
        rows.append((f"implicit scenarios: intended emotion 1st / top 3 (of {summary['scenario_n']})",
                     f"{summary['scenario_top1']} / {summary['scenario_top3']} (centred: "
                     f"{summary['scenario_top1_centred']} / {summary['scenario_top3_centred']})", paper["scenarios"]))
    if summary.get("number_expected_total"):
        rows.append(("number probes: the paper's direction holds (Spearman ρ sign)",
                     f"{summary['number_expected_ok']} of {summary['number_expected_total']}", "all (Fig 3)"))
    lens = r["logit_lens"]["norm"]
    rows.append(("logit lens: own word in the top 100 tokens", _fmt(lens["own_top100_rate"], 1, pct=True),
                 "own words top the lists (Table 1)"))
    if r.get("layers"):
        rows.append(("representational similarity across layers", _rsa_note(r), paper["rsa"]))
    return rows


def _rsa_note(r: Mapping) -> str:
    sweep = r["layers"]
    layers = sweep["layers"]
    at = layers.index(r["layer"])
    mid = [i for i, layer in enumerate(layers) if layer >= len(layers) // 3 and i != at]
    vals = [sweep["rsa"][at][i] for i in mid]
    return (f"RSA of layer {r['layer']} with layers {layers[mid[0]]}–{layers[mid[-1]]}: min {min(vals):.2f}, "
            f"mean {sum(vals) / len(vals):.2f}") if vals else "—"


def _label_set(r: Mapping) -> list[str]:
    coords = r["geometry"]["pca"]["coords"]
    focal = [e for e in concepts().focal if e in coords]
    pc1 = sorted(coords, key=lambda e: coords[e][0])
    pc2 = sorted(coords, key=lambda e: coords[e][1] if len(coords[e]) > 1 else 0)
    return sorted(set(focal + pc1[:4] + pc1[-4:] + pc2[:3] + pc2[-3:]))


def _curve_emotions(tpl: Mapping, n_extra: int = 2) -> list[str]:
    chosen = [c["emotion"] for c in tpl["expected"]]
    for e, _ in tpl["rising"][:n_extra] + tpl["falling"][:n_extra]:
        if e not in chosen:
            chosen.append(e)
    return chosen


def _passages(r: Mapping) -> list[dict]:
    p = r.get("passages")
    if not p:
        return []
    focal = set(concepts().focal)
    out = []
    for emotion, entry in p["emotions"].items():
        out.append({"emotion": emotion, "p90": entry["p90"], "focal": emotion in focal,
                    "passages": [{"doc": w["doc"], "score": w["score"],
                                  "tokens": [{"text": t, "score": s, "above": a, "peak": i == w["peak"]}
                                             for i, (t, s, a) in enumerate(zip(w["pieces"], w["scores"], w["above"]))]}
                                 for w in entry["passages"]]})
    out.sort(key=lambda d: (not d["focal"], d["emotion"]))
    return out


def _lens_rows(r: Mapping) -> list[dict]:
    paper = r["paper"]["logit_lens"]
    norm, raw = r["logit_lens"]["norm"], r["logit_lens"]["raw"]
    names = [e for e in concepts().focal if e in norm["top"]] + sorted(e for e in norm["top"] if e not in concepts().focal)
    return [{"emotion": e, "focal": e in paper, "top": norm["top"][e], "bottom": norm["bottom"][e],
             "raw_top": raw["top"][e], "raw_bottom": raw["bottom"][e], "own_rank": norm["own_rank"].get(e),
             "paper_top": paper.get(e, [[], []])[0], "paper_bottom": paper.get(e, [[], []])[1]} for e in names]


def _sweep_rows(r: Mapping) -> list[dict]:
    sweep = r.get("layers")
    if not sweep:
        return []
    scores = sweep["recommended"]["scores"]
    return [row | {"score": scores.get(str(row["layer"]))} for row in sweep["rows"]]


def context(r: Mapping) -> dict[str, object]:
    """Everything the template needs, figures included."""
    geo, norms = r["geometry"], r["norms"]
    hv = norms["human"]
    signs = (int(hv["valence"].get("sign", 1)), int(hv["arousal"].get("sign", 1)))
    valence = {e: x["valence"] for e, x in hv.get("ratings", {}).items()}
    probes = r["probes"]
    numbers = probes["numbers"]
    sweep = r.get("layers")
    figs: dict[str, str] = {
        "cosine": figures.cosine_heatmap(geo["cosine"]["order"], geo["cosine"]["matrix"]),
        "pca": figures.pca_scatter(geo["pca"]["coords"], geo["pca"]["explained_variance"], valence, signs,
                                   _label_set(r)),
    }
    if numbers:
        figs["numbers"] = figures.number_curves(numbers, [_curve_emotions(t) for t in numbers])
    if probes.get("scenarios"):
        sc = probes["scenarios"]
        figs["scenarios"] = figures.matrix_heatmap(sc["matrix"], sc["emotions"],
                                                   [s["label"] for s in sc["scenarios"]],
                                                   f"cosine at the assistant-turn start (layer {r['layer']})")
    if sweep:
        figs["sweep"] = figures.sweep_curves(sweep["rows"], sweep["criteria"], r["default_layer"],
                                             r.get("recommended_layer"), r["layer"])
        figs["variance"] = figures.sweep_curves(
            [{"layer": row["layer"], "pc1": row["pc_variance"][0], "pc2": row["pc_variance"][1],
              "pc3": row["pc_variance"][2] if len(row["pc_variance"]) > 2 else None} for row in sweep["rows"]],
            {"pc1": "PC1 share of variance", "pc2": "PC2 share", "pc3": "PC3 share"},
            r["default_layer"], r.get("recommended_layer"), r["layer"])
        names = [str(x) for x in sweep["layers"]]
        figs["rsa"] = figures.matrix_heatmap(sweep["rsa"], names, names, "RSA: cosine between layers' "
                                             "emotion×emotion cosine matrices", cmap="viridis", symmetric=False)
    return {"r": r, "figs": figs, "summary": summary_rows(r), "passages": _passages(r), "lens": _lens_rows(r),
            "sweep_rows": _sweep_rows(r), "fmt": _fmt, "ci": _ci}


def analysis_section(result: Mapping) -> str:
    """The analysis section as an HTML fragment (the report's renderer for `analysis.json`)."""
    return environment().get_template("analysis.html.j2").render(**context(result))
