"""Layer sweep: every validation metric at every layer, and a recommended layer chosen from held-out,
control-adjusted evidence, with the numbers that decided it.

The rule (`LAYER_RULE`, fixed before any result) scores each layer (layer 0, token identity, excluded) by
the mean of the criteria available:
- held-out top-1: the built-in corpus's `split: heldout` stories of the 12 focal emotions (never used to
  build vectors; 24 stories, chance 1/12), each pooled from token 50 as in extraction and scored by cosine
  against those emotions, minus the 95th percentile of the same accuracy with the stories' labels shuffled
  (needs the model);
- valence decodability: nested cross-validated ridge r from the vectors to Warriner valence, minus the 95th
  percentile of the same with the ratings shuffled over emotions (needs the human norms).
Scores equal to two decimals tie; ties go to the layer nearest ⌊2/3 · depth⌋, the paper's "mid-late" layer.
The descriptive per-layer metrics (PC1–valence r, clusters, probes, logit lens) are shown, not scored. The
analysis still runs at the artifact's default layer unless the user asks for the recommended one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from emovec.analysis.decode import nested_ridge, unit_rows
from emovec.analysis.geometry import kmeans_clusters, pca, rsa
from emovec.analysis.logit_lens import logit_lens, own_token_ids
from emovec.analysis.probes import ProbeResiduals, ProbeSet, number_curves, probe_summary, scenario_matrix
from emovec.concepts import concepts
from emovec.corpus import load_corpus
from emovec.models import LoadedModel
from emovec.ratings import Rating, norms_alignment
from emovec.readout import pooled_residuals
from emovec.vectors import EmotionVectors, default_layer_for

HELDOUT_POSITION = "from:50"  # pooled as in extraction and `emovec evaluate`
HELDOUT_SHUFFLES = 200
DECODE_SHUFFLES = 20
LAYER_RULE = ("score = mean of (held-out top-1 on the built-in heldout stories of the focal emotions − its "
              "shuffled-label null's 95th percentile) and (nested-CV valence decodability − its shuffled-rating "
              "null's 95th percentile), "
              "over the criteria available; layer 0 excluded; scores equal to two decimals tie, and ties go to "
              "the layer nearest floor(2/3 · depth) (the paper's)")
# the scored, null-adjusted criteria, and the numbers shown beside them
SCORED: dict[str, str] = {
    "heldout_top1_adjusted": "held-out top-1 − shuffled-label null (95th pct)",
    "decode_valence_adjusted": "valence decodability − shuffled-rating null (95th pct)",
}
SHOWN: dict[str, str] = {
    "heldout_top1": "held-out top-1 (among the emotions present)",
    "heldout_top1_null_q95": "held-out top-1, shuffled labels (95th pct)",
    "decode_valence_r": "valence decodability (nested-CV ridge r, Warriner)",
    "decode_valence_null_q95": "valence decodability, shuffled ratings (95th pct)",
}

# metric key → (label, where in a layer row)
CRITERIA: dict[str, str] = {
    "pc1_valence_r": "PC1 ↔ valence r (sign-aligned)",
    "arousal_best_r": "arousal r, best of PC1–3",
    "kmeans_ari": "k-means vs paper clusters (ARI)",
    "scenario_top3_rate": "implicit scenarios: intended emotion in top 3",
    "number_expected_rate": "number probes: paper's direction holds",
    "lens_own_top100_rate": "logit lens: own word in top 100",
}


def layer_metrics(vecs: EmotionVectors, layer: int, reference: Mapping[str, Sequence[str]], *,
                  human: tuple[dict[str, Rating], dict[str, str]] | None, probe_res: ProbeResiduals | None,
                  probes: ProbeSet | None, focal: Sequence[str], lm: LoadedModel | None,
                  unembedding: torch.Tensor | None, own_ids: Sequence[Sequence[int]] | None, lens_mode: str,
                  denoised: bool, k: int, seed: int) -> dict[str, object]:
    """The sweep's row for one layer (no bootstrap, no per-token lists: the cheap numbers)."""
    units = vecs.matrix(layer, denoised=denoised)
    emotions = vecs.emotions
    p = pca(units)
    clusters = kmeans_clusters(units, emotions, reference, k, seed, n_init=10)
    row: dict[str, object] = {"layer": layer, "pc_variance": [float(x) for x in p.explained[:3]],
                              "kmeans_ari": clusters.adjusted_rand, "kmeans_purity": clusters.purity}
    norms = norms_alignment(p.coords, emotions, n_boot=0, seed=seed, human=human or ({}, {}))
    source = "human" if human and norms["human"]["n"] >= 3 else "judge"  # type: ignore[index]
    for name in ("human", "judge"):
        n = norms[name]
        row[f"{name}_pc1_valence_r"] = n["valence"].get("pearson")  # type: ignore[index,union-attr]
        row[f"{name}_pc2_arousal_r"] = n["arousal"].get("pearson")  # type: ignore[index,union-attr]
        row[f"{name}_arousal_best_pc"] = n["arousal"]["best_pc"]  # type: ignore[index]
        row[f"{name}_arousal_best_r"] = n["arousal"]["best_pc_r"]  # type: ignore[index]
    if human:
        row |= decode_evidence(units, emotions, human[0], seed)
    row["pc1_valence_r"] = row[f"{source}_pc1_valence_r"]
    row["arousal_best_r"] = row[f"{source}_arousal_best_r"]
    row["norms_source"] = source
    if probe_res is not None and probes is not None:
        at = probe_res.layers.index(layer)
        numbers = [number_curves(acts[:, at], units, emotions, t) for acts, t in zip(probe_res.numbers, probes.numbers)]
        scen = None
        if probes.scenarios and focal:
            scen = scenario_matrix(probe_res.scenarios[:, at], units, emotions, probes.scenarios, focal)
        summary = probe_summary(numbers, scen)
        row |= summary
        row["scenario_top3_rate"] = (summary["scenario_top3"] / summary["scenario_n"]  # type: ignore[operator]
                                     if scen and summary["scenario_n"] else None)
    if lm is not None:
        lens = logit_lens(lm, units, emotions, mode=lens_mode, unembedding=unembedding, with_tokens=False,
                          own_ids=own_ids)
        row["lens_own_rank_median"] = lens["own_rank_median"]
        row["lens_own_top100_rate"] = lens["own_top100_rate"]
    return row


def decode_evidence(units: np.ndarray, emotions: Sequence[str], norms: Mapping[str, Rating],
                    seed: int) -> dict[str, float]:
    """Nested-CV valence decodability r and the 95th percentile of its shuffled-rating null (empty without
    enough rated emotions)."""
    rows = np.array([i for i, e in enumerate(emotions) if e in norms], dtype=int)
    if len(rows) < 10:
        return {}
    y = np.array([norms[emotions[i]].valence for i in rows])
    rng = np.random.default_rng(seed)
    sets = np.repeat(units[None], DECODE_SHUFFLES + 1, axis=0)
    for b in range(1, DECODE_SHUFFLES + 1):
        sets[b, rows] = units[rows[rng.permutation(len(rows))]]
    r, _, _ = nested_ridge(sets, rows, y, seed=seed)
    q95 = float(np.percentile(r[1:], 95))
    return {"decode_valence_r": float(r[0]), "decode_valence_null_q95": q95,
            "decode_valence_adjusted": float(r[0]) - q95}


def heldout_evidence(lm: LoadedModel, vecs: EmotionVectors, layers: Sequence[int], denoised: bool,
                     seed: int) -> dict[int, dict[str, float]]:
    """Per layer: top-1 of the built-in held-out stories of the paper's 12 focal emotions (all the artifact's
    emotions if it has fewer than two of them) among the emotions present, the 95th percentile of the same
    with the labels shuffled, and their difference (empty when fewer than two emotions are present)."""
    focal = [e for e in concepts().focal if e in vecs.emotions]
    known = set(focal) if len(focal) >= 2 else set(vecs.emotions)
    stories = [s for s in load_corpus(split="heldout").stories if s.emotion in known]
    present = sorted({s.emotion for s in stories}, key=vecs.emotions.index)
    if len(present) < 2:
        return {}
    chosen = sorted(set(layers))
    acts, _ = pooled_residuals(lm, [s.text for s in stories], chosen, HELDOUT_POSITION)
    cols = [vecs.emotions.index(e) for e in present]
    true = np.array([present.index(s.emotion) for s in stories])
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(true) for _ in range(HELDOUT_SHUFFLES)])
    out = {}
    for k, layer in enumerate(chosen):
        top = (unit_rows(acts[:, k]) @ vecs.matrix(layer, denoised=denoised)[cols].T).argmax(1)
        real = float((top == true).mean())
        q95 = float(np.percentile((top[None, :] == shuffled).mean(1), 95))
        out[layer] = {"heldout_top1": real, "heldout_top1_null_q95": q95, "heldout_top1_adjusted": real - q95,
                      "heldout_stories": len(stories), "heldout_emotions": len(present)}
    return out


def recommend(rows: Sequence[Mapping[str, object]], num_layers: int, default_layer: int) -> dict[str, object]:
    """The layer by `LAYER_RULE`, its score, every layer's score, and why (the numbers that decided it)."""
    candidates = [r for r in rows if r["layer"] != 0] or list(rows)
    layers = [int(r["layer"]) for r in candidates]  # type: ignore[call-overload]
    target = default_layer_for(num_layers)
    used = [k for k in SCORED if any(r.get(k) is not None for r in candidates)]
    scores = [float(np.mean(vals)) if (vals := [float(r[k]) for k in used if r.get(k) is not None]) else float("nan")  # type: ignore[arg-type]
              for r in candidates]
    best = max(range(len(candidates)),
               key=lambda i: (round(np.nan_to_num(scores[i], nan=-9.0), 2), -abs(layers[i] - target), -layers[i]))
    by_layer = {int(r["layer"]): r for r in rows}  # type: ignore[call-overload]
    chosen = by_layer[layers[best]]
    evidence = []
    for key, label in (SCORED | SHOWN).items():
        vals = [(int(r["layer"]), r.get(key)) for r in candidates if r.get(key) is not None]  # type: ignore[call-overload]
        if vals:
            top = max(vals, key=lambda t: float(t[1]))  # type: ignore[arg-type]
            evidence.append({"metric": key, "label": label, "at_recommended": chosen.get(key),
                             "at_default": by_layer.get(default_layer, {}).get(key), "best_layer": top[0],
                             "best_value": top[1]})
    if not used:
        why = (f"layer {layers[best]}: no held-out or norm evidence (no model, no human norms), so the layer nearest "
               f"floor(2/3 · depth) = {target}")
    else:
        parts = [f"{SCORED[k]} = {float(chosen[k]):+.2f}" for k in used if chosen.get(k) is not None]  # type: ignore[arg-type]
        ties = [layers[i] for i in range(len(candidates)) if round(np.nan_to_num(scores[i], nan=-9.0), 2)
                == round(np.nan_to_num(scores[best], nan=-9.0), 2)]
        why = f"layer {layers[best]}: score {scores[best]:+.2f} ({'; '.join(parts)})"
        if len(ties) > 1:
            why += f"; tied with layers {', '.join(str(x) for x in ties if x != layers[best])}, nearest {target}"
        d = next((i for i in range(len(candidates)) if layers[i] == default_layer), None)
        if d is not None and d != best:
            why += f"; the default layer {default_layer} scores {scores[d]:+.2f}"
    return {"layer": layers[best], "score": scores[best], "rule": LAYER_RULE, "why": why, "criteria": used,
            "scores": {str(layer): round(s, 4) for layer, s in zip(layers, scores)}, "evidence": evidence}


def layer_sweep(vecs: EmotionVectors, reference: Mapping[str, Sequence[str]], *, layers: Sequence[int] | None = None,
                human: tuple[dict[str, Rating], dict[str, str]] | None = None, probe_res: ProbeResiduals | None = None,
                probes: ProbeSet | None = None, focal: Sequence[str] = (), lm: LoadedModel | None = None,
                lens_mode: str = "norm", denoised: bool = True, k: int = 10, seed: int = 0,
                progress: Callable[[int], None] | None = None) -> dict[str, object]:
    """Metrics at each of `layers` (default: all the artifact's), RSA across them, and the recommendation
    (held-out evidence needs `lm`; decodability needs `human` norms)."""
    layers = list(layers or vecs.layers)
    unembedding = lm.unembedding.detach().float().cpu() if lm is not None else None
    own_ids = [own_token_ids(lm, e) for e in vecs.emotions] if lm is not None else None
    heldout = heldout_evidence(lm, vecs, layers, denoised, seed) if lm is not None else {}
    rows = []
    for layer in layers:
        rows.append(layer_metrics(vecs, layer, reference, human=human, probe_res=probe_res, probes=probes,
                                  focal=focal, lm=lm, unembedding=unembedding, own_ids=own_ids, lens_mode=lens_mode,
                                  denoised=denoised, k=k, seed=seed) | heldout.get(layer, {}))
        if progress:
            progress(layer)
    sim = rsa([vecs.matrix(layer, denoised=denoised) for layer in layers])
    return {"layers": layers, "rows": rows, "rsa": np.round(sim, 4).tolist(),
            "recommended": recommend(rows, vecs.model.num_layers, vecs.default_layer),
            "criteria": CRITERIA | SCORED}
