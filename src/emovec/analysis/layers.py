"""Layer sweep: every validation metric at every layer, and a recommended layer with its evidence.

The recommendation maximises the mean of the per-layer metrics below, each min–max scaled across layers
(higher is better for all): PC1–valence r and best-of-top-3 arousal r against human norms (the judge
ratings when no human norms are available), k-means agreement with the paper's clusters (adjusted Rand),
the implicit-scenario top-3 rate, the number-probe expected-direction rate and the logit-lens own-word
top-100 rate. Layer 0 (token identity) is never recommended. The analysis still runs at the artifact's
default layer (≈ 2/3 depth, as in the paper) unless the user asks for the recommended one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from emovec.analysis.geometry import kmeans_clusters, pca, rsa
from emovec.analysis.logit_lens import logit_lens, own_token_ids
from emovec.ratings import Rating, norms_alignment
from emovec.analysis.probes import ProbeResiduals, ProbeSet, number_curves, probe_summary, scenario_matrix
from emovec.models import LoadedModel
from emovec.vectors import EmotionVectors

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


def recommend(rows: Sequence[Mapping[str, object]], default_layer: int) -> dict[str, object]:
    """The layer with the best mean of min–max-scaled criteria (layer 0 excluded; ties → nearest the
    default), with each criterion's value there, at the default layer, and its own best layer."""
    candidates = [r for r in rows if r["layer"] != 0] or list(rows)
    layers = [int(r["layer"]) for r in candidates]  # type: ignore[call-overload]
    scaled, used = [], []
    for key in CRITERIA:
        vals = np.array([np.nan if r.get(key) is None else float(r[key]) for r in candidates])  # type: ignore[arg-type]
        if np.all(np.isnan(vals)):
            continue
        lo, hi = np.nanmin(vals), np.nanmax(vals)
        scaled.append(np.nan_to_num((vals - lo) / (hi - lo) if hi > lo else np.ones_like(vals), nan=0.0))
        used.append(key)
    score = np.mean(scaled, axis=0) if scaled else np.zeros(len(candidates))
    best = max(range(len(candidates)), key=lambda i: (round(float(score[i]), 9), -abs(layers[i] - default_layer)))
    by_layer = {int(r["layer"]): r for r in rows}  # type: ignore[call-overload]
    evidence = []
    for key in used:
        vals = [(int(r["layer"]), r.get(key)) for r in candidates if r.get(key) is not None]  # type: ignore[call-overload]
        top = max(vals, key=lambda t: float(t[1]))  # type: ignore[arg-type]
        evidence.append({"metric": key, "label": CRITERIA[key], "at_recommended": by_layer[layers[best]].get(key),
                         "at_default": by_layer.get(default_layer, {}).get(key), "best_layer": top[0],
                         "best_value": top[1]})
    return {"layer": layers[best], "score": float(score[best]),
            "scores": {str(layer): round(float(s), 4) for layer, s in zip(layers, score)},
            "criteria": used, "evidence": evidence}


def layer_sweep(vecs: EmotionVectors, reference: Mapping[str, Sequence[str]], *, layers: Sequence[int] | None = None,
                human: tuple[dict[str, Rating], dict[str, str]] | None = None, probe_res: ProbeResiduals | None = None,
                probes: ProbeSet | None = None, focal: Sequence[str] = (), lm: LoadedModel | None = None,
                lens_mode: str = "norm", denoised: bool = True, k: int = 10, seed: int = 0,
                progress: Callable[[int], None] | None = None) -> dict[str, object]:
    """Metrics at each of `layers` (default: all the artifact's), RSA across them, and the recommendation."""
    layers = list(layers or vecs.layers)
    unembedding = lm.unembedding.detach().float().cpu() if lm is not None else None
    own_ids = [own_token_ids(lm, e) for e in vecs.emotions] if lm is not None else None
    rows = []
    for layer in layers:
        rows.append(layer_metrics(vecs, layer, reference, human=human, probe_res=probe_res, probes=probes,
                                  focal=focal, lm=lm, unembedding=unembedding, own_ids=own_ids, lens_mode=lens_mode,
                                  denoised=denoised, k=k, seed=seed))
        if progress:
            progress(layer)
    sim = rsa([vecs.matrix(layer, denoised=denoised) for layer in layers])
    return {"layers": layers, "rows": rows, "rsa": np.round(sim, 4).tolist(),
            "recommended": recommend(rows, vecs.default_layer), "criteria": CRITERIA}
