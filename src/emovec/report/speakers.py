"""Report sections for `speakers.json`, `deflection.json` and `shift.json` (paper §7.2-7.4): our numbers
beside the paper's, every field escaped."""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from emovec.report.figures import png_uri

esc = html.escape


def _f(value: object, fmt: str = ".3f") -> str:
    return "—" if value is None else esc(format(float(value), fmt))  # type: ignore[arg-type]


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def speakers_section(result: Mapping[str, object]) -> str:
    """Family cosines with the shuffled-label null, story similarity, structure match and the controls."""
    fam, null, paper = result["families"], result["null_shuffled"], result["paper"]  # type: ignore[index]
    rows = [[esc(k), _f(fam[k]), _f(null[k]["mean"]), _f(null[k]["p95"]), esc(p)] for k, p in (
        ("within_present", "0.9-1.0"), ("within_other", "0.9-1.0"), ("present_vs_other", "0.15-0.25 (nearly orthogonal)"))]
    rows += [[esc("story_vs_present"), _f(result["story_vs_present"]), "", "", _f(paper["story_vs_present"], ".2f")],
             [esc("story_vs_other"), _f(result["story_vs_other"]), "", "", _f(paper["story_vs_other"], ".2f")]]
    structure = [[esc(k), _f(v)] for k, v in result["structure_match"].items()]  # type: ignore[union-attr]
    controls = [[esc(name), esc(f"H = {c['sides']['H']}, A = {c['sides']['A']}"), _f(c["families"]["within_present"]),
                 _f(c["families"]["within_other"]), _f(c["families"]["present_vs_other"]), _f(c["story_vs_present"]),
                 _f(c["story_vs_other"])] for name, c in (result.get("controls") or {}).items()]  # type: ignore[union-attr]
    reactions = [[esc(e), esc(", ".join(f"{n} {c:.2f}" for n, c in near))]
                 for e, near in result["other_nearest_story"].items()]  # type: ignore[union-attr]
    return (
        f"<p>Layer {esc(str(result['layer']))}; {esc(str(result['dialogues']))} two-speaker dialogues over "
        f"{len(result['emotions'])} emotions (AI-written for emovec). Mean per-emotion cosine between the 2×2 grid's "
        "cells (present speaker: A-tok/A-emo, H-tok/H-emo; other speaker: A-tok/H-emo, H-tok/A-emo), beside a "
        "shuffled-label null and the paper's values (Claude Sonnet 4.5).</p>"
        + _table(["quantity", "ours", "null mean", "null p95", "paper"], rows)
        + "<p>Structure match: Pearson r between emotion×emotion cosine matrices (paper: the landscapes match).</p>"
        + _table(["pair", "r"], structure)
        + "<p>Story vectors nearest each other-speaker (A-tok/H-emo) vector (paper Table 14: a reaction, e.g. "
          "angry → sorry, guilty).</p>" + _table(["other-speaker emotion", "nearest story vectors"], reactions)
        + _regulation(result.get("regulation") or {})  # type: ignore[arg-type]
        + "<p>Controls (paper §7.2: the same result with “Person 1/Person 2” names, as a raw transcript and "
          "framed as an Assistant story): the same dialogues re-read with both speakers named as people.</p>"
        + _table(["framing", "sides", "within present", "within other", "present vs other", "story vs present",
                  "story vs other"], controls)
        + _story_ha(result.get("story_ha")))  # type: ignore[arg-type]


def _story_ha(ha: Mapping[str, object] | None) -> str:
    if not ha:
        return ""
    null = ha["null_shuffled"]
    rows = [[esc("raw vs framed, per-emotion cosine"), _f(ha["raw_vs_framed"]), _f(null["mean"]), _f(null["p95"])],  # type: ignore[index]
            [esc("raw vs framed, structure r"), _f(ha["raw_vs_framed_structure"]), "", ""],
            [esc("raw vs the artifact's vectors"), _f(ha["raw_vs_artifact"]), "", ""],
            [esc("framed vs the artifact's vectors"), _f(ha["framed_vs_artifact"]), "", ""]]
    return (f"<p>Story (H/A) control (paper §7.2: the stories framed as the Assistant's story give probes "
            f"“highly similar” to the original ones): {esc(str(ha['stories']))} built-in stories over "
            f"{esc(str(ha['emotions']))} emotions, read raw and after {esc(repr(ha['frame']))}, averaged from each "
            f"story's token {esc(str(ha['offset']))}; null: framed labels shuffled.</p>"
            + _table(["comparison", "ours", "null mean", "null p95"], rows))


def _regulation(reg: Mapping[str, Mapping[str, object]]) -> str:
    rows = []
    for pool, got in reg.items():
        cells = [esc(pool), esc(str(got.get("n")))]
        for dim in ("arousal", "valence"):
            d = got.get(dim)
            cells.append("—" if not d else f"{_f(d['r'], '+.3f')} (p {_f(d['p_two_sided'])})")  # type: ignore[index]
        rows.append(cells)
    if not rows:
        return ""
    return ("<p>Arousal regulation (paper Fig 59): judged ratings of present-speaker vectors weighted by their "
            "similarity to each emotion's other-speaker vector, correlated with the emotion's own rating; p from "
            "shuffled ratings. Paper: arousal r = −0.47, valence r = 0.07.</p>"
            + _table(["present-speaker pool", "emotions", "arousal r", "valence r"], rows))


def deflection_section(result: Mapping[str, object]) -> str:
    """Deflection vs story cosine, orthogonalisation, the mixed probe, logit lens and antagonistic prompts."""
    vs, orth, probe = result["vs_story"], result["orthogonalised"], result["mixed_probe"]  # type: ignore[index]
    summary = _table(["quantity", "ours", "baseline", "paper"], [
        ["deflection vs story, mean diagonal cosine", _f(vs["diagonal_mean"]), f"off-diagonal {_f(vs['off_diagonal_mean'])}", "0.046"],
        ["displayed-emotion probe vs story, diagonal", _f(result["displayed_vs_story"]), "", "higher (closer to the displayed)"],
        ["expressed-condition vectors vs story, diagonal", _f(result["expressed_vs_story"]), "", ""],
        [f"norm remaining after removing {esc(str(orth['components']))} story PCs (99%)", _f(orth["remaining_mean"]),
         f"random direction {_f(orth['random_remaining_mean'])}", "≈ 0.80"]])
    acc = probe["accuracy"]
    prows = [[esc(c), f"{_f(a['accuracy'])} [{_f(a['ci95'][0])}, {_f(a['ci95'][1])}]",
              _f(probe["null_shuffled"][c]["accuracy"]), _f(probe["lexical_speaker_turns"][c]["accuracy"]),
              _f(probe["lexical_full_text"][c]["accuracy"]), _f(probe["paper"].get(c))] for c, a in acc.items()]
    lens = result["logit_lens"]
    lrows = [[esc(t), esc(" ".join(lens["deflection_orthogonalised"]["top"][t][:6])),
              esc(str(lens["deflection"]["own_rank"].get(t))), esc(str(lens["deflection_orthogonalised"]["own_rank"].get(t))),
              esc(str(lens["story"]["own_rank"].get(t)))] for t in result["targets"]]  # type: ignore[union-attr]
    anta = result["antagonistic"]
    names = list(anta["directions"])
    arows = []
    for cat, turns in anta["mean"].items():
        for turn, values in turns.items():
            top = np.argsort(values)[::-1][:3]
            arows.append([esc(cat), esc(turn), esc(", ".join(f"{names[i]} {values[i]:+.3f}" for i in top))])
    return (
        f"<p>Layer {esc(str(result['layer']))}; {esc(str(result['records']))} deflection records (AI-written for emovec), "
        f"{len(result['targets'])} targets.</p>" + summary
        + f"<p>Mixed {len(probe['classes'])}-way logistic probe, {esc(str(probe['folds']))}-fold (10% held out), "
          f"held-out accuracy per condition (chance {_f(probe['chance'])}), with a shuffled-label null and TF-IDF "
          "lexical baselines (speaker turns only; whole record including the preamble).</p>"
        + _table(["condition", "accuracy [95% CI]", "null", "lexical (speaker)", "lexical (full)", "paper"], prows)
        + "<p>Logit lens (own word's rank; top tokens of the orthogonalised deflection vector).</p>"
        + _table(["target", "top tokens (orth.)", "rank: deflection", "rank: orth.", "rank: story"], lrows)
        + "<p>Antagonistic prompts (paper Table 15): the three directions with the highest mean cosine per category "
          "and turn (U: user, A: the model's greedy reply). Paper: anger deflection fires at A for attack-AI prompts, "
          "not for witness-injustice ones.</p>" + _table(["category", "turn", "top directions"], arows))


def layer_figure(result: Mapping[str, object]) -> str:
    """PNG data URI: mean |Δ| per layer."""
    prof = result["layer_profile"]
    fig = Figure(figsize=(6, 2.6))
    ax = fig.subplots()
    ax.plot(prof["layers"], prof["mean_abs_delta"], marker="o", ms=3)  # type: ignore[index]
    ax.set_xlabel("layer")
    ax.set_ylabel("mean |Δ cosine|")
    fig.tight_layout()
    return png_uri(fig)


def shift_section(result: Mapping[str, object]) -> str:
    """Per-set structure r and |Δ|, the top shifts each way with the paper's Table 16, direction, layer profile."""
    paper = result["paper"]
    srows = [[esc(n), esc(str(s["prompts"])), _f(s["structure_r"]["pearson"]), _f(paper["structure_r"].get(n), ".2f"),
              _f(s["mean_abs_delta"], ".4f")] for n, s in result["sets"].items()]  # type: ignore[union-attr]
    def ranked(rows: list[dict]) -> str:
        return _table(["emotion", "Δ", "95% CI", "paper Δ"], [
            [esc(r["emotion"]), _f(r["delta"], "+.4f"), f"[{_f(r['ci95'][0], '+.4f')}, {_f(r['ci95'][1], '+.4f')}]",
             _f(r["paper"], "+.4f")] for r in rows])
    d = result["direction"]
    direction = "—" if not d.get("valence") else (
        f"r(Δ, valence) {_f(d['valence']['pearson'], '+.3f')}, r(Δ, arousal) {_f(d['arousal']['pearson'], '+.3f')} "
        f"over {esc(str(d['n']))} emotions ({esc(str(d['ratings']))})")
    cons = result.get("consistency")
    return (
        f"<p>Base {esc(str(result['base_model']))} vs post-trained {esc(str(result['post_model']))}, layer "
        f"{esc(str(result['layer']))}, frame {esc(str(result['frame']))}: the same vectors read at the assistant-turn start.</p>"
        + _table(["prompt set", "prompts", "structure r", "paper r", "mean |Δ|"], srows)
        + f"<p>Consistency of Δ across sets: r = {_f(cons['pearson']) if cons else '—'} (paper 0.90). Direction: "
          f"{direction} (paper: toward lower valence and arousal).</p>"
        + "<p>Increased after post-training</p>" + ranked(result["increased"])  # type: ignore[arg-type]
        + "<p>Decreased after post-training</p>" + ranked(result["decreased"])  # type: ignore[arg-type]
        + f"<img alt=\"per-layer shift\" src=\"{layer_figure(result)}\">")
