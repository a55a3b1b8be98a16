"""Put runs side by side: each run directory's headline numbers (with their CIs and nulls where the results
carry them), geometry by relative depth, steering-validation diagonal, preference correlations, timings, and
the similarity of the models' emotion geometries (RSA: Pearson r between the upper triangles of the
emotion×emotion cosine matrices on the emotions both runs share, so models of different widths compare).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from emovec.artifact import MANIFEST, load_result
from emovec.errors import ConfigError
from emovec.vectors import EmotionVectors

FOCAL_PREFERENCE = ("blissful", "hostile")


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


def summarize(run_dir: Path) -> dict[str, object]:
    """One run's numbers for the comparison (absent results are None, never guessed)."""
    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST).exists():
        raise ConfigError(f"{run_dir}: not a run directory (no artifact manifest)", param="run_dirs")
    vecs = EmotionVectors.load(run_dir)
    analysis, steering = _data(run_dir, "analysis"), _data(run_dir, "steering_validation")
    prefs, run, evaluation = _data(run_dir, "preferences"), _data(run_dir, "run"), _data(run_dir, "evaluation")
    human = _get(analysis, "norms", "human") or {}
    correlations = _get(prefs, "correlations") or {}
    steer = _get(prefs, "steering")
    return {
        "run": str(run_dir), "model": vecs.model.id, "architecture": vecs.model.architecture,
        "num_layers": vecs.model.num_layers, "hidden_size": vecs.model.hidden_size,
        "emotions": len(vecs.emotions), "default_layer": vecs.default_layer,
        "headline": None if analysis is None else {
            "layer": analysis.get("layer"), "stale": analysis["stale"],
            "pc_variance": _get(analysis, "geometry", "pca", "explained_variance"),
            "valence": _get(human, "valence"), "arousal": _get(human, "arousal"),
            "kmeans": _get(analysis, "geometry", "kmeans"),
            "probes": _get(analysis, "probes", "summary"),
            "logit_lens_own_top100": _get(analysis, "logit_lens", "norm", "own_top100_rate")},
        "geometry_by_depth": None if analysis is None else _geometry_by_depth(analysis),
        "evaluation": evaluation,
        "steering_validation": None if steering is None else {
            "layer": steering.get("layer"), "strength": steering.get("strength"),
            "dominance": steering.get("dominance"), "stale": steering["stale"]},
        "preferences": None if prefs is None else {
            "correlations": {e: correlations.get(e) for e in FOCAL_PREFERENCE},
            "valence": prefs.get("valence"), "paper_comparison": prefs.get("paper_comparison"),
            "steering": ({e: steer.get(e) for e in FOCAL_PREFERENCE if e in steer}
                         if isinstance(steer, Mapping) else steer), "stale": prefs["stale"]},
        "timings": None if run is None else {"stages": run.get("stages"),
                                             "model_load_seconds": run.get("model_load_seconds")},
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
