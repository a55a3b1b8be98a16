"""Split-half reliability of each emotion's vector, from the stored per-story means (no model pass).

For an emotion with n stories: split them at random into two halves, build the emotion's vector from each
half (half mean minus the all-story centre, then the neutral projection) and take the cosine between the two;
repeat over many random splits (bootstrapped over splits). The Spearman–Brown formula projects the
half-length reliability r to the full n: 2r / (1 + r). The curve repeats this with k stories per half
(k = 1 .. n/2), and the stories needed for 0.9 follow from Spearman–Brown: m = k · 0.9(1 − r_k) / (0.1 r_k).
An emotion is listed as unreliable when its projected full-length reliability is below 0.7 (fixed).
"""

from __future__ import annotations

import numpy as np

from emovec.analysis.controls import StoryRows
from emovec.vectors import project_out

UNRELIABLE_BELOW = 0.7
TARGET = 0.9


def spearman_brown(r: np.ndarray | float, factor: np.ndarray | float) -> np.ndarray:
    """Reliability of a measure `factor` times as long as one with reliability `r`."""
    r = np.clip(np.asarray(r, dtype=np.float64), -0.999, 0.999)
    return factor * r / (1 + (factor - 1) * r)


def stories_needed(r_k: np.ndarray | float, k: int, target: float = TARGET) -> np.ndarray:
    """Stories per emotion for reliability `target`, projected from reliability `r_k` at k stories (inf if ≤ 0)."""
    r = np.asarray(r_k, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r > 0, k * target * (1 - r) / ((1 - target) * np.clip(r, 1e-9, None)), np.inf)


def _half_cosines(rows: StoryRows, centre: np.ndarray, components: np.ndarray, k: int, n_splits: int,
                  rng: np.random.Generator) -> np.ndarray:
    """[E, n_splits] cosines between vectors from two disjoint random sets of k stories per emotion."""
    out = np.full((len(rows.emotions), n_splits), np.nan)
    for e in range(len(rows.emotions)):
        members = np.flatnonzero(rows.label == e)
        if len(members) < 2 * k:
            continue
        picks = np.stack([rng.permutation(members)[: 2 * k] for _ in range(n_splits)])  # [S, 2k]
        a = rows.x[picks[:, :k]].mean(1) - centre
        b = rows.x[picks[:, k:]].mean(1) - centre
        a, b = project_out(a, components), project_out(b, components)
        den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        out[e] = (a * b).sum(1) / np.clip(den, 1e-12, None)
    return out


def reliability(rows: StoryRows, components: np.ndarray, n_splits: int = 100, seed: int = 0) -> dict[str, object]:
    """Per-emotion split-half cosine with a CI over splits, Spearman–Brown projection, the curve over stories
    per half, stories needed for 0.9, and the unreliable emotions — as a JSON-ready dict."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(rows.label, minlength=len(rows.emotions))
    centre = np.stack([rows.x[rows.label == e].mean(0) for e in range(len(rows.emotions))]).mean(0)
    half = int(counts.min() // 2)
    if half < 1:
        return {"error": "an emotion has fewer than two stories; split-half reliability needs two"}
    cos = _half_cosines(rows, centre, components, half, n_splits, rng)
    r_half = np.nanmean(cos, axis=1)
    full = spearman_brown(r_half, counts / half)
    need = stories_needed(r_half, half)
    per = {e: {"split_half": float(r_half[i]), "ci": [float(v) for v in np.nanpercentile(cos[i], [2.5, 97.5])],
               "stories": int(counts[i]), "projected_full": float(full[i]),
               "stories_for_0_9": None if not np.isfinite(need[i]) else float(need[i])}
           for i, e in enumerate(rows.emotions)}
    curve = []
    for k in range(1, half + 1):
        ck = np.nanmean(_half_cosines(rows, centre, components, k, max(10, n_splits // 5), rng), axis=1)
        curve.append({"stories": k, "median": float(np.nanmedian(ck)), "q25": float(np.nanpercentile(ck, 25)),
                      "q75": float(np.nanpercentile(ck, 75))})
    median_half = float(np.nanmedian(r_half))
    unreliable = sorted((e for e in rows.emotions if per[e]["projected_full"] < UNRELIABLE_BELOW),
                        key=lambda e: per[e]["projected_full"])
    need_median = stories_needed(median_half, half)
    return {
        "stories_per_half": half, "n_splits": n_splits, "median_split_half": median_half,
        "median_projected_full": float(np.nanmedian(full)),
        "median_stories_for_0_9": None if not np.isfinite(need_median) else float(need_median),
        "curve": curve, "per_emotion": per, "unreliable": unreliable, "unreliable_below": UNRELIABLE_BELOW,
        "method": "cosine between vectors from two disjoint random halves of an emotion's stories (centre: the "
                  "mean over all emotions' story means; the artifact's neutral projection), mean over splits; "
                  "Spearman-Brown projection to all stories",
    }
