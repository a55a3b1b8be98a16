"""Put runs side by side: each run directory's headline numbers (with their CIs and nulls where the results
carry them), geometry by relative depth, steering-validation diagonal, preference correlations, timings, and
the similarity of the models' emotion geometries (RSA: Pearson r between the upper triangles of the
emotion×emotion cosine matrices on the emotions both runs share, so models of different widths compare).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from emovec.artifact import MANIFEST, load_result, read_json
from emovec.errors import ConfigError
from emovec.preferences.run import correlation_evidence
from emovec.run import timings_path
from emovec.vectors import EmotionVectors

FOCAL_PREFERENCE = ("blissful", "hostile")
# headline key → (evidence criterion, analysis norms dimension, which analysis number)
GEOMETRY = {"pc1_valence_r": ("pc1_valence_r", "valence", "pearson"),
            "best_pc_valence_r": ("best5_valence_r", "valence", "best_pc_r"),
            "pc2_arousal_r": ("pc2_arousal_r", "arousal", "pearson"),
            "best_pc_arousal_r": ("best5_arousal_r", "arousal", "best_pc_r"),
            "decode_valence_r": ("decode_valence_r", None, None),
            "decode_arousal_r": ("decode_arousal_r", None, None)}


def _get(d: object, *keys: str) -> object:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def _data(run_dir: Path, name: str) -> dict | None:
    stored = load_result(run_dir, name)
    return None if stored is None else {**stored.data, "stale": stored.stale}


def _geometry_by_depth(analysis: Mapping) -> list[dict[str, object]]:
    """The layer sweep's numeric metrics at each layer, the layer given as a fraction of the model's depth."""
    rows = _get(analysis, "layers", "rows")
    n = _get(analysis, "model", "num_layers")
    if not isinstance(rows, list) or not isinstance(n, int):
        return []
    return [{"depth": round(r["layer"] / max(n - 1, 1), 3),
             **{k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}}
            for r in rows if isinstance(r, Mapping) and isinstance(r.get("layer"), int)]


def _entry(value: object, ci: object = None, null: object = None, baseline: object = None, paper: object = None,
           source: str = "", **extra: object) -> dict[str, object]:
    return {"value": value, "ci": ci if isinstance(ci, list) else None, "null": null, "baseline": baseline,
            "paper": paper, "source": source, **extra}


def _geometry(key: str, evidence: Mapping | None, human: Mapping) -> dict[str, object] | None:
    """A geometry number from the evidence controls (CI, shuffled-label null, lexical baseline) when they ran,
    else the analysis's value (bootstrap CI for the paper's PC, none for the best PC)."""
    criterion, dim, field = GEOMETRY[key]
    rows = {r.get("key"): r for r in (_get(evidence, "criteria") or []) if isinstance(r, Mapping)}
    if criterion in rows:
        r = rows[criterion]
        return _entry(r.get("ours"), r.get("ci"), {"mean": r.get("null_mean"), "q95": r.get("null_q95"),
                                                    "p": r.get("p"), "n": r.get("null_n")},
                      r.get("lexical_best"), r.get("paper"), "evidence", verdict=r.get("verdict"))
    d = _get(human, dim) if dim else None
    if not isinstance(d, Mapping) or d.get(field) is None:
        return None
    return _entry(d.get(field), d.get(f"{field}_ci"), source="analysis",
                  **({"pc": d.get("best_pc")} if field == "best_pc_r" else {}))


def _heldout(ev: Mapping | None) -> dict[str, object] | None:
    """Top-1 at the evaluation's headline layer, with its CI, chance and the lexical baseline."""
    rows = _get(ev, "layers")
    if not isinstance(ev, Mapping) or ev.get("kind") != "label" or not isinstance(rows, list):
        return None
    row = next((r for r in rows if r.get("layer") == ev.get("headline_layer")), None)
    lex = ev.get("lexical") or {}
    if row is None:
        return None
    return _entry(row.get("top1"), row.get("top1_ci"), {"chance": row.get("chance_top1")},
                  {"name": "lexical (input embeddings)", "value": lex.get("top1"), "ci": lex.get("top1_ci")},
                  source="evaluation", layer=row.get("layer"), n=row.get("n"), labels=row.get("labels_present"),
                  top3=row.get("top3"), top3_ci=row.get("top3_ci"), centred_top1=_get(row, "centred", "top1"),
                  centred_top1_ci=_get(row, "centred", "top1_ci"))


def headline(analysis: Mapping | None, evidence: Mapping | None, evaluation: Mapping | None,
             steering: Mapping | None, prefs: Mapping | None) -> dict[str, object]:
    """The numbers the README's model table shows, each with what the results carry beside it (CI, null,
    baseline, the paper's value); None where the run has no such result."""
    human = _get(analysis, "norms", "human") or {}
    out: dict[str, object] = {key: _geometry(key, evidence, human) for key in GEOMETRY}  # type: ignore[arg-type]
    out["heldout_top1"] = _heldout(evaluation)
    out["heldout_top1_focal"] = _heldout(_get(evaluation, "focal"))  # type: ignore[arg-type]
    dom = _get(steering, "dominance")
    n = len(steering.get("emotions") or []) if isinstance(steering, Mapping) else 0
    out["steering_diagonal"] = None if not isinstance(dom, Mapping) else _entry(
        dom.get("rows_diagonal_max"), null={"chance": 1 / n if n else None}, source="steering_validation",
        emotions=n, diagonal_mean=dom.get("diagonal_mean"), off_diagonal_mean=dom.get("off_diagonal_mean"))
    denoised = _get(steering, "variants", "denoised")
    if isinstance(out["steering_diagonal"], dict) and isinstance(denoised, Mapping):
        out["steering_diagonal"] |= {"margin": denoised.get("margin"), "margin_ci": denoised.get("margin_ci"),
                                     "emotions_beating_random": denoised.get("emotions_beating_random"),
                                     "recommended_variant": _get(steering, "recommended", "variant")}
    corr, paper = _get(prefs, "correlations"), _get(prefs, "paper") or {}
    activation, elo = _get(prefs, "activation") or {}, _get(prefs, "elo") or {}
    names = [a.get("name") for a in _get(prefs, "activities") or [] if isinstance(a, Mapping)]  # type: ignore[union-attr]
    for e in FOCAL_PREFERENCE:
        value = corr.get(e) if isinstance(corr, Mapping) else None
        ev = (correlation_evidence(activation[e], [elo[a] for a in names])  # type: ignore[index]
              if value is not None and e in activation and names and all(a in elo for a in names) else {})
        out[f"preference_{e}_r"] = None if value is None else _entry(
            value, ci=ev.get("ci"), null={"shuffled_elo_q95_abs": ev.get("null_q95_abs"), "p": ev.get("p")},
            paper=paper.get(f"{e}_r"), source="preferences", activities=len(names))  # type: ignore[union-attr]
    return out


def _evaluation_by_layer(ev: Mapping | None) -> dict[str, object] | None:
    """The held-out evaluation per layer (top-1/3 with CIs) without the per-record ranks."""
    if not isinstance(ev, Mapping) or ev.get("kind") != "label":
        return None
    keep = ("layer", "n", "labels_present", "chance_top1", "top1", "top1_ci", "top3", "top3_ci", "median_rank_all")
    focal = ev.get("focal")
    return {"records": ev.get("records"), "headline_layer": ev.get("headline_layer"), "stale": ev.get("stale"),
            "lexical": {k: (ev.get("lexical") or {}).get(k) for k in ("top1", "top1_ci", "top3", "chance_top1")},
            "layers": [{k: r.get(k) for k in keep} for r in ev.get("layers") or []],
            "focal": _evaluation_by_layer(focal) if isinstance(focal, Mapping) else None}


def _timings(run_dir: Path, run: Mapping | None) -> dict[str, object] | None:
    """The last `emovec run`'s wall time per stage (run/timings.json), else the stage seconds of results/run.json."""
    path = timings_path(run_dir)
    if path.exists():
        t = read_json(path, "run timings")
        return t if isinstance(t, dict) else None
    if run is None:
        return None
    return {"stages": {k: {"skipped": v.get("status") == "fresh", "wall_s": None, "last_run_s": v.get("seconds")}
                       for k, v in (run.get("stages") or {}).items()},
            "model_load_s": run.get("model_load_seconds")}


def summarize(run_dir: Path) -> dict[str, object]:
    """One run's numbers for the comparison (absent results are None, never guessed)."""
    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST).exists():
        raise ConfigError(f"{run_dir}: not a run directory (no artifact manifest)", param="run_dirs")
    vecs = EmotionVectors.load(run_dir)
    analysis, steering = _data(run_dir, "analysis"), _data(run_dir, "steering_validation")
    prefs, run, evaluation = _data(run_dir, "preferences"), _data(run_dir, "run"), _data(run_dir, "evaluation")
    evidence = _data(run_dir, "evidence")
    human = _get(analysis, "norms", "human") or {}
    correlations = _get(prefs, "correlations") or {}
    steer = _get(prefs, "steering")
    return {
        "run": str(run_dir), "model": vecs.model.id, "architecture": vecs.model.architecture,
        "num_layers": vecs.model.num_layers, "hidden_size": vecs.model.hidden_size,
        "emotions": len(vecs.emotions), "default_layer": vecs.default_layer,
        "headline": headline(analysis, evidence, evaluation, steering, prefs),
        "stale": sorted(name for name, d in (("analysis", analysis), ("evidence", evidence),
                                             ("evaluation", evaluation), ("steering_validation", steering),
                                             ("preferences", prefs)) if d is not None and d["stale"]),
        "analysis": None if analysis is None else {
            "layer": analysis.get("layer"), "stale": analysis["stale"],
            "pc_variance": _get(analysis, "geometry", "pca", "explained_variance"),
            "valence": _get(human, "valence"), "arousal": _get(human, "arousal"),
            "kmeans": _get(analysis, "geometry", "kmeans"),
            "probes": _get(analysis, "probes", "summary"),
            "logit_lens_own_top100": _get(analysis, "logit_lens", "norm", "own_top100_rate")},
        "geometry_by_depth": None if analysis is None else _geometry_by_depth(analysis),
        "evaluation": _evaluation_by_layer(evaluation),
        "steering_validation": None if steering is None else {
            "layer": steering.get("layer"), "strength": steering.get("strength"),
            "dominance": steering.get("dominance"), "stale": steering["stale"]},
        "preferences": None if prefs is None else {
            "correlations": {e: correlations.get(e) for e in FOCAL_PREFERENCE},
            "valence": prefs.get("valence"), "paper_comparison": prefs.get("paper_comparison"),
            "steering": ({e: steer.get(e) for e in FOCAL_PREFERENCE if e in steer}
                         if isinstance(steer, Mapping) else steer), "stale": prefs["stale"]},
        "timings": _timings(run_dir, run),
    }


def geometry_similarity(a: EmotionVectors, b: EmotionVectors) -> dict[str, object]:
    """RSA between two models at their default layers, on their shared emotions."""
    shared = [e for e in a.emotions if e in set(b.emotions)]
    if len(shared) < 3:
        return {"shared_emotions": len(shared), "r": None}

    def upper(v: EmotionVectors) -> np.ndarray:
        m = v.matrix(v.default_layer)[[v.emotion_pos(e) for e in shared]]
        return (m @ m.T)[np.triu_indices(len(shared), 1)]

    r = float(np.corrcoef(upper(a), upper(b))[0, 1])
    return {"shared_emotions": len(shared), "r": round(r, 4)}


def compare(run_dirs: Sequence[Path]) -> dict[str, object]:
    """The comparison of `run_dirs` as a JSON-ready dict."""
    if len(run_dirs) < 1:
        raise ConfigError("give at least one run directory", param="run_dirs")
    runs = [summarize(Path(d)) for d in run_dirs]
    vecs = [EmotionVectors.load(Path(d)) for d in run_dirs]
    rsa = [[geometry_similarity(vecs[i], vecs[j])["r"] for j in range(len(vecs))] for i in range(len(vecs))]
    return {"format": "emovec.compare/1", "runs": runs, "rsa": {"models": [r["model"] for r in runs], "r": rsa,
            "method": "Pearson r of upper-triangle emotion×emotion cosines at each default layer, shared emotions"}}
